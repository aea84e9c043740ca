// RateLimiter: a token bucket for a bandwidth cap. Acquire(n) returns once n
// bytes may be sent at `bytes_per_sec` (bursts up to 50 ms worth). Charge(n)
// counts bytes that went out without waiting (demand pages, which go first
// within the cap): the next Acquire waits for them too. A rate of 0 means
// no cap. Thread-safe.
//
// SetRate() changes the cap while others Acquire(): it takes effect at
// once. The bucket starts afresh at the current time (what was owed or
// saved at the old rate is forgotten), and an Acquire() waiting at the old
// rate (it sleeps in 10 ms slices) pays for its bytes again at the new one.
// Interrupt() ends every wait in progress at once (recovery, cancel and
// shutdown must not wait out a debt: at 1 MB/s a burst of demand pages is
// minutes of it).
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
      : clock_(clock), rate_(bytes_per_sec), next_ns_(clock->NowNanos()) {}

  // False when Interrupt() cut the wait short (the bytes are counted all
  // the same).
  bool Acquire(uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    const uint64_t interrupts = interrupts_;
    while (true) {
      if (rate_ == 0) return true;
      const uint64_t generation = generation_;
      const int64_t now = clock_->NowNanos();
      next_ns_ = std::max(next_ns_, now - kBurstNs);
      next_ns_ += static_cast<int64_t>(1e9 * static_cast<double>(bytes) / rate_);
      const int64_t deadline = next_ns_ - kBurstNs;
      // Sleep in slices, so that a SetRate() or an Interrupt() ends the wait.
      for (int64_t t = now; t < deadline && generation == generation_ && interrupts == interrupts_;
           t = clock_->NowNanos()) {
        mu_.Unlock();
        clock_->SleepNanos(std::min(deadline - t, kSliceNs));
        mu_.Lock();
      }
      if (interrupts != interrupts_) return false;
      if (generation == generation_) return true;
      // The rate changed while this waited: pay for the bytes at the new one.
    }
  }

  // Ends the waits in progress now; later ones wait as usual.
  void Interrupt() {
    absl::MutexLock lock(&mu_);
    ++interrupts_;
  }

  // Bytes already sent (never waits).
  void Charge(uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    if (rate_ == 0) return;
    next_ns_ = std::max(next_ns_, clock_->NowNanos() - kBurstNs);
    next_ns_ += static_cast<int64_t>(1e9 * static_cast<double>(bytes) / rate_);
  }

  // The new cap in bytes per second (0: none), from now on.
  void SetRate(uint64_t bytes_per_sec) {
    absl::MutexLock lock(&mu_);
    next_ns_ = clock_->NowNanos();
    rate_ = bytes_per_sec;
    ++generation_;
  }

  uint64_t rate() const {
    absl::MutexLock lock(&mu_);
    return rate_;
  }

 private:
  static constexpr int64_t kBurstNs = 50'000'000;
  static constexpr int64_t kSliceNs = 10'000'000;
  const Clock* clock_;
  mutable absl::Mutex mu_;
  uint64_t rate_ ABSL_GUARDED_BY(mu_);
  int64_t next_ns_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // SetRate() calls
  uint64_t interrupts_ ABSL_GUARDED_BY(mu_) = 0;  // Interrupt() calls
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_RATE_LIMITER_H_
