#include "base/clock.h"

#include <ctime>

namespace ferry {

int64_t MonotonicNowNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

int64_t MonotonicClock::NowNanos() const { return MonotonicNowNanos(); }

void MonotonicClock::SleepNanos(int64_t nanos) const {
  if (nanos <= 0) return;
  timespec ts{static_cast<time_t>(nanos / 1'000'000'000),
              static_cast<long>(nanos % 1'000'000'000)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

const Clock& RealClock() {
  static const MonotonicClock clock;
  return clock;
}

}  // namespace ferry
