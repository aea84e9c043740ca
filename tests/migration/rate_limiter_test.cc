// The bandwidth cap on the fake clock: bulk sends wait their turn, and
// demand pages charged without waiting make the bulk wait for them too.
#include "migration/rate_limiter.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "base/clock.h"
#include "base/fake_clock.h"
#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

constexpr uint64_t kRate = 100 << 20;  // 100 MiB/s: 1 MiB takes 10 ms

TEST(RateLimiter, BulkSendsKeepToTheRate) {
  FakeClock clock(1'000'000'000);
  RateLimiter limiter(kRate, &clock);
  for (int i = 0; i < 100; ++i) limiter.Acquire(1 << 20);
  // 100 MiB at 100 MiB/s: a second, less the 50 ms burst allowance.
  const int64_t elapsed = clock.NowNanos() - 1'000'000'000;
  EXPECT_GE(elapsed, 940'000'000);
  EXPECT_LE(elapsed, 1'000'000'000);
}

TEST(RateLimiter, DemandPagesCountAgainstTheCap) {
  FakeClock clock(1'000'000'000);
  RateLimiter limiter(kRate, &clock);
  // Half of the traffic is demand pages (charged, never waiting).
  for (int i = 0; i < 50; ++i) {
    limiter.Charge(1 << 20);
    limiter.Acquire(1 << 20);
  }
  const int64_t elapsed = clock.NowNanos() - 1'000'000'000;
  EXPECT_GE(elapsed, 940'000'000) << "100 MiB in all still take a second";
}

TEST(RateLimiter, NoCapNeverWaits) {
  FakeClock clock(5);
  RateLimiter limiter(0, &clock);
  limiter.Charge(1ull << 40);
  limiter.Acquire(1ull << 40);
  EXPECT_EQ(clock.NowNanos(), 5);
}

// The review's case: at 1 MB/s, demand pages charged 100 s of debt; a
// recovery, cancel or shutdown interrupts the push's wait at once instead
// of sleeping it off (real clock: the bound is a hang guard far below the
// 100 s the debt would take).
TEST(RateLimiter, AnInterruptEndsAWaitAtOnce) {
  RateLimiter limiter(1 << 20, &RealClock());
  limiter.Charge(100ull << 20);
  std::atomic<bool> done{false};
  bool completed = true;
  const int64_t t0 = MonotonicNowNanos();
  std::thread push([&] {
    completed = limiter.Acquire(4096);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done.load()) << "it waits for the debt";
  limiter.Interrupt();
  push.join();
  EXPECT_FALSE(completed) << "Acquire says it was interrupted";
  EXPECT_LT(MonotonicNowNanos() - t0, 30'000'000'000) << "the wait did not end at the interrupt";
}

TEST(RateLimiter, AnInterruptDoesNotAffectLaterWaits) {
  FakeClock clock(1'000'000'000);
  RateLimiter limiter(kRate, &clock);
  limiter.Interrupt();
  EXPECT_TRUE(limiter.Acquire(200 << 20));  // 2 s of fake time
  EXPECT_GE(clock.NowNanos() - 1'000'000'000, 1'900'000'000);
}

TEST(RateLimiter, ANewRateAppliesFromTheNextAcquire) {
  FakeClock clock(1'000'000'000);
  RateLimiter limiter(kRate, &clock);
  for (int i = 0; i < 100; ++i) limiter.Acquire(1 << 20);  // ~1 s at 100 MiB/s
  limiter.SetRate(kRate / 10);
  EXPECT_EQ(limiter.rate(), kRate / 10);
  int64_t start = clock.NowNanos();
  for (int i = 0; i < 10; ++i) limiter.Acquire(1 << 20);  // 10 MiB at 10 MiB/s
  EXPECT_GE(clock.NowNanos() - start, 950'000'000);
  EXPECT_LE(clock.NowNanos() - start, 1'050'000'000);
  limiter.SetRate(kRate);  // back up: 10 MiB take 0.1 s again
  start = clock.NowNanos();
  for (int i = 0; i < 10; ++i) limiter.Acquire(1 << 20);
  EXPECT_LE(clock.NowNanos() - start, 110'000'000);
}

TEST(RateLimiter, LiftingAndSettingTheCap) {
  FakeClock clock(1'000'000'000);
  RateLimiter limiter(kRate, &clock);
  limiter.SetRate(0);
  limiter.Acquire(1ull << 40);  // no cap: no wait
  EXPECT_EQ(clock.NowNanos(), 1'000'000'000);
  clock.Advance(5'000'000'000);
  limiter.SetRate(kRate);  // the bucket starts now, not with 5 s of credit
  for (int i = 0; i < 100; ++i) limiter.Acquire(1 << 20);
  EXPECT_GE(clock.NowNanos() - 6'000'000'000, 940'000'000);
}

}  // namespace
}  // namespace ferry::migration
