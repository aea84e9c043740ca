// RateLimiter: a token bucket for a bandwidth cap. Acquire(n) returns once n
// bytes may be sent at `bytes_per_sec` (bursts up to 50 ms worth). Charge(n)
// counts bytes that went out without waiting (demand pages, which go first
// within the cap): the next Acquire waits for them too. A rate of 0 means
// no cap. Interrupt() ends every wait in progress at once (recovery, cancel
// and shutdown must not wait out a debt: at 1 MB/s a burst of demand pages
// is minutes of it). Thread-safe.
#ifndef FERRY_MIGRATION_RATE_LIMITER_H_
#define FERRY_MIGRATION_RATE_LIMITER_H_

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "base/clock.h"

namespace ferry::migration {

class RateLimiter {
 public:
  RateLimiter(uint64_t bytes_per_sec, const Clock* clock)
      : rate_(bytes_per_sec), clock_(clock), next_ns_(clock->NowNanos()) {}

  // False when Interrupt() cut the wait short (the bytes are counted all
  // the same).
  bool Acquire(uint64_t bytes) {
    if (rate_ == 0) return true;
    int64_t until;
    uint64_t interrupts;
    {
      absl::MutexLock lock(&mu_);
      const int64_t now = clock_->NowNanos();
      next_ns_ = std::max(next_ns_, now - kBurstNs);
      next_ns_ += static_cast<int64_t>(1e9 * static_cast<double>(bytes) / rate_);
      until = next_ns_ - kBurstNs;
      interrupts = interrupts_.load();
    }
    // In slices, so that an interrupt is seen within one.
    for (int64_t now = clock_->NowNanos(); now < until; now = clock_->NowNanos()) {
      if (interrupts_.load() != interrupts) return false;
      clock_->SleepNanos(std::min<int64_t>(until - now, kSliceNs));
    }
    return interrupts_.load() == interrupts;
  }

  // Ends the waits in progress now; later ones wait as usual.
  void Interrupt() { interrupts_.fetch_add(1); }

  // Bytes already sent (never waits).
  void Charge(uint64_t bytes) {
    if (rate_ == 0) return;
    absl::MutexLock lock(&mu_);
    next_ns_ = std::max(next_ns_, clock_->NowNanos() - kBurstNs);
    next_ns_ += static_cast<int64_t>(1e9 * static_cast<double>(bytes) / rate_);
  }

 private:
  static constexpr int64_t kBurstNs = 50'000'000;
  static constexpr int64_t kSliceNs = 5'000'000;
  std::atomic<uint64_t> interrupts_{0};
  const uint64_t rate_;
  const Clock* clock_;
  absl::Mutex mu_;
  int64_t next_ns_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_RATE_LIMITER_H_
