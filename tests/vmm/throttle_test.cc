#include "vmm/throttle.h"

#include <atomic>

#include "base/fake_clock.h"
#include "gtest/gtest.h"

namespace ferry::vmm {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kUs = 1'000;

TEST(Throttle, SetClampsToTheRange) {
  Throttle t;
  EXPECT_EQ(t.percent(), 0);
  t.Set(30);
  EXPECT_EQ(t.percent(), 30);
  t.Set(150);
  EXPECT_EQ(t.percent(), kMaxThrottlePercent);
  t.Set(-5);
  EXPECT_EQ(t.percent(), 0);
}

TEST(DutyCycle, ZeroNeverSleeps) {
  DutyCycle d(nullptr, &RealClock());
  for (int64_t now = 0; now < 100 * kMs; now += kMs) EXPECT_EQ(d.Due(0, now), 0);
}

TEST(DutyCycle, RunsThenSleepsTheRestOfThePeriod) {
  DutyCycle d(nullptr, &RealClock());
  // 30%: 7 ms of every 10 run, 3 ms sleep. The first check starts a run part.
  EXPECT_EQ(d.Due(30, 1 * kMs), 0);
  EXPECT_EQ(d.Due(30, 7 * kMs), 0);        // 6 ms into the run part
  EXPECT_EQ(d.Due(30, 8 * kMs), 3 * kMs);  // 7 ms: the off part is due
  EXPECT_EQ(d.Due(30, 9 * kMs), 3 * kMs);  // still due until it is slept
  d.Slept(11 * kMs);
  EXPECT_EQ(d.Due(30, 17 * kMs), 0);
  EXPECT_EQ(d.Due(30, 18 * kMs), 3 * kMs);
  d.Slept(21 * kMs);
  // A change applies from the next check: 80% runs 2 ms, sleeps 8.
  EXPECT_EQ(d.Due(80, 22 * kMs), 0);
  EXPECT_EQ(d.Due(80, 23 * kMs), 8 * kMs);
}

TEST(DutyCycle, TheCeilingStillRunsTheGuest) {
  DutyCycle d(nullptr, &RealClock());
  EXPECT_EQ(d.Due(kMaxThrottlePercent, 0), 0);
  EXPECT_EQ(d.Due(kMaxThrottlePercent, 99 * kUs), 0);
  EXPECT_EQ(d.Due(kMaxThrottlePercent, 100 * kUs), 9900 * kUs);
  // Above the ceiling is the ceiling.
  DutyCycle e(nullptr, &RealClock());
  EXPECT_EQ(e.Due(100, 0), 0);
  EXPECT_EQ(e.Due(100, 100 * kUs), 9900 * kUs);
}

TEST(DutyCycle, ThrottleOffThenOnStartsANewRunPart) {
  DutyCycle d(nullptr, &RealClock());
  EXPECT_EQ(d.Due(50, 0), 0);
  EXPECT_EQ(d.Due(0, 50 * kMs), 0);   // off: forgets the run part
  EXPECT_EQ(d.Due(50, 60 * kMs), 0);  // a new one starts here
  EXPECT_EQ(d.Due(50, 64 * kMs), 0);
  EXPECT_EQ(d.Due(50, 65 * kMs), 5 * kMs);
}

// A vCPU whose ops take 100 us each, checking before each op: the share of
// time slept is the throttle, to within one op per period.
double SleptShare(int percent, int64_t* slept_out) {
  FakeClock clock;
  Throttle throttle;
  throttle.Set(percent);
  DutyCycle d(&throttle, &clock);
  std::atomic<bool> exit_requested{false};
  const int64_t start = clock.NowNanos();
  while (clock.NowNanos() - start < 1000 * kMs) {
    EXPECT_TRUE(d.Wait(exit_requested));
    clock.Advance(100 * kUs);  // the op
  }
  *slept_out = d.slept_ns();
  return static_cast<double>(d.slept_ns()) / (clock.NowNanos() - start);
}

TEST(DutyCycle, WaitSleepsTheThrottlesShareOfTime) {
  int64_t slept;
  EXPECT_NEAR(SleptShare(20, &slept), 0.20, 0.01);
  EXPECT_NEAR(SleptShare(50, &slept), 0.50, 0.01);
  EXPECT_NEAR(SleptShare(90, &slept), 0.90, 0.01);
  EXPECT_EQ(SleptShare(0, &slept), 0);
  EXPECT_EQ(slept, 0);
}

TEST(DutyCycle, WaitStopsSleepingWhenAnExitIsRequested) {
  FakeClock clock;
  Throttle throttle;
  throttle.Set(50);
  DutyCycle d(&throttle, &clock);
  std::atomic<bool> exit_requested{false};
  EXPECT_TRUE(d.Wait(exit_requested));
  clock.Advance(5 * kMs);  // the run part is over: 5 ms of sleep is due
  exit_requested = true;
  EXPECT_FALSE(d.Wait(exit_requested));
  EXPECT_EQ(d.slept_ns(), 0);
  EXPECT_EQ(clock.NowNanos(), 5 * kMs);  // it did not sleep
  // After the pause the next check starts a new run part.
  exit_requested = false;
  EXPECT_TRUE(d.Wait(exit_requested));
  EXPECT_EQ(clock.NowNanos(), 5 * kMs);
}

TEST(DutyCycle, NoThrottleObjectNeverSleeps) {
  FakeClock clock;
  DutyCycle d(nullptr, &clock);
  std::atomic<bool> exit_requested{false};
  clock.Advance(100 * kMs);
  EXPECT_TRUE(d.Wait(exit_requested));
  EXPECT_EQ(clock.NowNanos(), 100 * kMs);
}

}  // namespace
}  // namespace ferry::vmm
