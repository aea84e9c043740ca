#include "base/clock.h"

#include "base/fake_clock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

TEST(Clock, MonotonicClockMovesForwardAndSleeps) {
  const Clock& clock = RealClock();
  int64_t t0 = clock.NowNanos();
  clock.SleepNanos(2'000'000);
  EXPECT_GE(clock.NowNanos() - t0, 2'000'000);
}

TEST(Clock, FakeClockMovesOnlyWhenTold) {
  FakeClock clock(100);
  EXPECT_EQ(clock.NowNanos(), 100);
  clock.Advance(50);
  EXPECT_EQ(clock.NowNanos(), 150);
  clock.SleepNanos(25);
  EXPECT_EQ(clock.NowNanos(), 175);
  clock.SleepNanos(-5);
  EXPECT_EQ(clock.NowNanos(), 175);
}

}  // namespace
}  // namespace ferry
