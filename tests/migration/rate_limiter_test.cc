// The bandwidth cap on the fake clock: bulk sends wait their turn, and
// demand pages charged without waiting make the bulk wait for them too.
#include "migration/rate_limiter.h"

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

}  // namespace
}  // namespace ferry::migration
