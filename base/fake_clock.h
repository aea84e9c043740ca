// FakeClock: a Clock for tests. Time moves only by Advance() or SleepNanos(),
// which advances it instantly. Thread-safe.
#ifndef FERRY_BASE_FAKE_CLOCK_H_
#define FERRY_BASE_FAKE_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "base/clock.h"

namespace ferry {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_nanos = 0) : now_(start_nanos) {}
  int64_t NowNanos() const override { return now_.load(); }
  void SleepNanos(int64_t nanos) const override {
    if (nanos > 0) now_.fetch_add(nanos);
  }
  void Advance(int64_t nanos) { now_.fetch_add(nanos); }

 private:
  mutable std::atomic<int64_t> now_;
};

}  // namespace ferry

#endif  // FERRY_BASE_FAKE_CLOCK_H_
