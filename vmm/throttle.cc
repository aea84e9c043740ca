#include "vmm/throttle.h"

#include <algorithm>

namespace ferry::vmm {
namespace {

// The longest single sleep: a pause or stop request waits at most this.
constexpr int64_t kMaxThrottleSleepNs = 200'000;

}  // namespace

void Throttle::Set(int percent) {
  percent_.store(std::clamp(percent, 0, kMaxThrottlePercent), std::memory_order_relaxed);
}

int64_t DutyCycle::Due(int percent, int64_t now) {
  if (percent <= 0) {
    run_start_ns_ = -1;
    return 0;
  }
  percent = std::min(percent, kMaxThrottlePercent);
  if (run_start_ns_ < 0) run_start_ns_ = now;
  const int64_t run_ns = kThrottlePeriodNs * (100 - percent) / 100;
  if (now - run_start_ns_ < run_ns) return 0;
  return kThrottlePeriodNs * percent / 100;
}

void DutyCycle::Slept(int64_t end) { run_start_ns_ = end; }

bool DutyCycle::Wait(const std::atomic<bool>& exit_requested) {
  if (throttle_ == nullptr) return true;
  const int percent = throttle_->percent();
  if (percent <= 0 && run_start_ns_ < 0) return true;  // the common case: one load
  int64_t now = clock_->NowNanos();
  const int64_t due = Due(percent, now);
  if (due == 0) return true;
  const int64_t end = now + due;
  const int64_t start = now;
  while (now < end) {
    if (exit_requested.load(std::memory_order_relaxed)) {
      slept_ns_ += now - start;
      Reset();
      return false;
    }
    clock_->SleepNanos(std::min(end - now, kMaxThrottleSleepNs));
    now = clock_->NowNanos();
  }
  slept_ns_ += now - start;
  Slept(now);
  return true;
}

}  // namespace ferry::vmm
