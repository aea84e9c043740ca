#include "vmm/ops_meter.h"

#include <algorithm>

namespace ferry::vmm {

uint64_t OpsTrace::total(size_t row) const {
  uint64_t sum = 0;
  for (int v = 0; v < vcpus; ++v) sum += ops[row * vcpus + v];
  return sum;
}

void OpsTrace::Append(const OpsTrace& other) {
  if (other.vcpus != vcpus) return;
  for (size_t i = 0; i < other.rows(); ++i) {
    if (!t_ns.empty() && other.t_ns[i] <= t_ns.back()) continue;
    t_ns.push_back(other.t_ns[i]);
    ops.insert(ops.end(), other.ops.begin() + i * vcpus,
               other.ops.begin() + (i + 1) * vcpus);
  }
}

void OpsTrace::Thin(size_t max_rows) {
  while (rows() > max_rows && rows() > 2) {
    size_t kept = 0;
    const size_t n = rows();
    for (size_t i = 0; i < n; ++i) {
      if (i % 2 != 0 && i != n - 1) continue;
      t_ns[kept] = t_ns[i];
      std::copy_n(ops.begin() + i * vcpus, vcpus, ops.begin() + kept * vcpus);
      ++kept;
    }
    t_ns.resize(kept);
    ops.resize(kept * vcpus);
  }
}

OpsMeter::OpsMeter(int vcpus, Reader read, absl::Duration interval, size_t capacity,
                   const Clock* clock)
    : vcpus_(vcpus),
      read_(std::move(read)),
      interval_(interval),
      capacity_(std::max<size_t>(capacity, 2)),
      clock_(clock),
      t_ns_(capacity_),
      ops_(capacity_ * vcpus),
      scratch_(vcpus) {}

OpsMeter::~OpsMeter() { Stop(); }

void OpsMeter::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread(&OpsMeter::Loop, this);
}

void OpsMeter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void OpsMeter::SampleLocked() {
  read_(scratch_.data());
  t_ns_[next_] = clock_->NowNanos();
  if (first_ns_ == 0) first_ns_ = t_ns_[next_];
  std::copy(scratch_.begin(), scratch_.end(), ops_.begin() + next_ * vcpus_);
  next_ = (next_ + 1) % capacity_;
  count_ = std::min(count_ + 1, capacity_);
}

void OpsMeter::Loop() {
  absl::MutexLock lock(&mu_);
  auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
  absl::Time next = absl::Now();
  while (!stop_) {
    SampleLocked();
    // Evenly spaced where the scheduler allows; a late wake-up skips ahead
    // rather than sampling in a burst.
    next += interval_;
    const absl::Time now = absl::Now();
    if (next < now) next = now + interval_;
    mu_.AwaitWithDeadline(absl::Condition(&stopped), next);
  }
  SampleLocked();  // the last counts, as the VM stops
}

void OpsMeter::AppendTo(OpsTrace* trace, int64_t first_ns, size_t max_rows) const {
  OpsTrace more = Since(trace->rows() ? trace->t_ns.back() + 1 : first_ns);
  if (trace->vcpus == 0) trace->vcpus = more.vcpus;
  trace->Append(more);
  trace->Thin(max_rows);
}

int64_t OpsMeter::first_sample_ns() const {
  absl::MutexLock lock(&mu_);
  return first_ns_;
}

OpsTrace OpsMeter::Since(int64_t t_ns) const {
  absl::MutexLock lock(&mu_);
  OpsTrace trace;
  trace.vcpus = vcpus_;
  const size_t first = (next_ + capacity_ - count_) % capacity_;
  for (size_t k = 0; k < count_; ++k) {
    const size_t i = (first + k) % capacity_;
    if (t_ns_[i] < t_ns) continue;
    trace.t_ns.push_back(t_ns_[i]);
    trace.ops.insert(trace.ops.end(), ops_.begin() + i * vcpus_,
                     ops_.begin() + (i + 1) * vcpus_);
  }
  return trace;
}

}  // namespace ferry::vmm
