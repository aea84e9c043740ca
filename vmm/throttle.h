// Throttle: the share of each period a VM's vCPUs sleep instead of running
// the guest (auto-converge: a precopy that cannot keep up with the guest's
// writes slows the guest down; docs/operations.md). One Throttle per VM,
// set by the migration (Vm::SetThrottle); each vCPU thread applies it with
// its own DutyCycle.
//
// The duty cycle at p percent: the vCPU runs the guest for
// kThrottlePeriodNs * (100 - p) / 100, then sleeps kThrottlePeriodNs * p /
// 100, and so on. The run part is measured from the vCPU's checks (between
// ops for software vCPUs; at each KVM exit for KVM vCPUs, where a paced
// guest exits before every op and an unpaced one every 4096 ops), so it
// can overrun by one op or one exit interval; the sleep is exact. The
// sleep is taken in slices of at most 200 us, so a pause or stop request
// is honoured as quickly as without a throttle. 0 (the default): no sleep,
// and no clock read beyond one atomic load per check.
//
// Threads: Throttle::Set() and percent() from any thread (an atomic; a
// change applies at each vCPU's next check). A DutyCycle belongs to one
// vCPU thread.
//
//   Throttle throttle;                       // the VM's
//   DutyCycle duty(&throttle, clock);        // a vCPU thread's
//   throttle.Set(30);                        // the migration
//   if (!duty.Wait(exit_requested)) ...      // the vCPU, between ops
#ifndef FERRY_VMM_THROTTLE_H_
#define FERRY_VMM_THROTTLE_H_

#include <atomic>
#include <cstdint>

#include "base/clock.h"

namespace ferry::vmm {

// The duty-cycle period: short enough that a throttled guest still runs
// every 10 ms (its timers and the migration's measurements see a smooth
// rate), long enough that each sleep is far above a sleep's own cost.
inline constexpr int64_t kThrottlePeriodNs = 10'000'000;
// The highest throttle: the guest still runs 1% of the time (100 us in
// every 10 ms), so it makes progress and can always be paused.
inline constexpr int kMaxThrottlePercent = 99;

class Throttle {
 public:
  // Clamped to 0..kMaxThrottlePercent.
  void Set(int percent);
  int percent() const { return percent_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int> percent_{0};
};

class DutyCycle {
 public:
  // `throttle` may be null (never throttled); it and `clock` must outlive
  // this.
  DutyCycle(const Throttle* throttle, const Clock* clock) : throttle_(throttle), clock_(clock) {}

  // The arithmetic, pure of any sleep: the nanoseconds the vCPU must sleep
  // at time `now` under `percent` (0 while the run part of its period
  // lasts). The first check after a Reset() (or after the throttle was 0)
  // starts a run part at `now`. After the caller slept the returned time,
  // it calls Slept(end) to start the next run part.
  int64_t Due(int percent, int64_t now);
  void Slept(int64_t end);

  // The vCPU's check: sleeps what is due now. True if it may run on (it
  // slept, or nothing was due); false if `exit_requested` became true
  // during the sleep (the caller returns to its run loop; the rest of the
  // sleep is dropped and the next check starts a new run part).
  bool Wait(const std::atomic<bool>& exit_requested);
  // The vCPU paused: the next check starts a new run part.
  void Reset() { run_start_ns_ = -1; }

  // Nanoseconds slept for the throttle so far (tests, statistics).
  int64_t slept_ns() const { return slept_ns_; }

 private:
  const Throttle* const throttle_;
  const Clock* const clock_;
  int64_t run_start_ns_ = -1;  // -1: no run part begun
  int64_t slept_ns_ = 0;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_THROTTLE_H_
