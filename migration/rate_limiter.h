// RateLimiter: a token bucket for a bandwidth cap. Acquire(n) returns once n
// bytes may be sent at `bytes_per_sec` (bursts up to 50 ms worth). Charge(n)
// counts bytes that went out without waiting (demand pages, which go first
// within the cap): the next Acquire waits for them too. A rate of 0 means
// no cap. Thread-safe.
//
// SetRate() changes the cap while others Acquire(): each Acquire() and
// Charge() reads the rate under the lock, so a change takes effect from
// the next frame (a sleep already under way finishes at the old rate). The
// bytes owed at the old rate stay owed; going from no cap to a cap starts
// the bucket afresh at the current time.
#ifndef FERRY_MIGRATION_RATE_LIMITER_H_
#define FERRY_MIGRATION_RATE_LIMITER_H_

#include <algorithm>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "base/clock.h"

namespace ferry::migration {

class RateLimiter {
 public:
  RateLimiter(uint64_t bytes_per_sec, const Clock* clock)
      : clock_(clock), rate_(bytes_per_sec), next_ns_(clock->NowNanos()) {}

  void Acquire(uint64_t bytes) {
    int64_t wait;
    {
      absl::MutexLock lock(&mu_);
      if (rate_ == 0) return;
      const int64_t now = clock_->NowNanos();
      next_ns_ = std::max(next_ns_, now - kBurstNs);
      next_ns_ += static_cast<int64_t>(1e9 * static_cast<double>(bytes) / rate_);
      wait = next_ns_ - now - kBurstNs;
    }
    clock_->SleepNanos(wait);
  }

  // Bytes already sent (never waits).
  void Charge(uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    if (rate_ == 0) return;
    next_ns_ = std::max(next_ns_, clock_->NowNanos() - kBurstNs);
    next_ns_ += static_cast<int64_t>(1e9 * static_cast<double>(bytes) / rate_);
  }

  // The new cap in bytes per second (0: none), from the next frame on.
  void SetRate(uint64_t bytes_per_sec) {
    absl::MutexLock lock(&mu_);
    if (rate_ == 0) next_ns_ = clock_->NowNanos();
    rate_ = bytes_per_sec;
  }

  uint64_t rate() const {
    absl::MutexLock lock(&mu_);
    return rate_;
  }

 private:
  static constexpr int64_t kBurstNs = 50'000'000;
  const Clock* clock_;
  mutable absl::Mutex mu_;
  uint64_t rate_ ABSL_GUARDED_BY(mu_);
  int64_t next_ns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_RATE_LIMITER_H_
