#include "vmm/op_pacer.h"

#include <algorithm>

namespace ferry::vmm {
namespace {

constexpr int64_t kMaxPaceSleepNs = 200'000;
constexpr int64_t kMaxPaceBacklogNs = 10'000'000;

}  // namespace

bool OpPacer::Wait(uint64_t index, const std::atomic<bool>& exit_requested) {
  if (interval_ns_ <= 0 || index == paced_index_) return true;
  int64_t now = clock_->NowNanos();
  if (!paced_since_resume_) {  // first op after start or resume: no burst
    next_op_ns_ = now;
    paced_since_resume_ = true;
  }
  while (now < next_op_ns_) {
    if (exit_requested.load(std::memory_order_relaxed)) return false;
    clock_->SleepNanos(std::min(next_op_ns_ - now, kMaxPaceSleepNs));
    now = clock_->NowNanos();
  }
  next_op_ns_ = std::max(next_op_ns_, now - kMaxPaceBacklogNs) + interval_ns_;
  paced_index_ = index;
  return true;
}

}  // namespace ferry::vmm
