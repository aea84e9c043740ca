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

}  // namespace
}  // namespace ferry::migration
