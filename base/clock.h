// Clock: the injectable source of monotonic time. Everything that measures or
// paces (workloads, statistics, benchmarks) takes a Clock*, so tests can use
// FakeClock (base/fake_clock.h). Implementations are thread-safe.
//
//   const Clock& clock = RealClock();
//   int64_t t0 = clock.NowNanos();
#ifndef FERRY_BASE_CLOCK_H_
#define FERRY_BASE_CLOCK_H_

#include <cstdint>

namespace ferry {

class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds on a monotonic clock with an arbitrary epoch.
  virtual int64_t NowNanos() const = 0;
  // Blocks the caller for `nanos` of this clock's time (<= 0 returns at once).
  virtual void SleepNanos(int64_t nanos) const = 0;
};

// CLOCK_MONOTONIC, read through the vDSO (also from signal handlers).
class MonotonicClock final : public Clock {
 public:
  int64_t NowNanos() const override;
  void SleepNanos(int64_t nanos) const override;
};

// A process-wide MonotonicClock: it holds no state, so sharing it is safe.
const Clock& RealClock();

// CLOCK_MONOTONIC now, for hot paths that cannot take a virtual call.
int64_t MonotonicNowNanos();

}  // namespace ferry

#endif  // FERRY_BASE_CLOCK_H_
