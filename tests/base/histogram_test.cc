#include "base/histogram.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ferry {
namespace {

TEST(Histogram, BucketsCoverEveryValueContiguously) {
  for (int b = 0; b + 1 < kHistogramBuckets; ++b) {
    ASSERT_EQ(LatencyHistogram::BucketHigh(b), LatencyHistogram::BucketLow(b + 1));
    ASSERT_LT(LatencyHistogram::BucketLow(b), LatencyHistogram::BucketHigh(b));
  }
  for (uint64_t v : {0ull, 1ull, 31ull, 32ull, 33ull, 1000ull, 123456789ull,
                     (1ull << 62) + 5, ~0ull}) {
    int b = LatencyHistogram::BucketOf(v);
    EXPECT_GE(v, LatencyHistogram::BucketLow(b)) << v;
    if (b + 1 < kHistogramBuckets) EXPECT_LT(v, LatencyHistogram::BucketHigh(b)) << v;
  }
}

TEST(Histogram, PercentilesWithinBucketPrecision) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 10000; ++v) h.Record(v * 1000);  // 1us .. 10ms
  HistogramSnapshot s = h.Snapshot();
  EXPECT_EQ(s.total, 10000u);
  EXPECT_EQ(s.max, 10'000'000u);
  EXPECT_NEAR(s.Percentile(50), 5'000'000, 5'000'000 * 0.0625);
  EXPECT_NEAR(s.Percentile(99), 9'900'000, 9'900'000 * 0.0625);
  EXPECT_NEAR(s.Percentile(99.9), 9'990'000, 9'990'000 * 0.0625);
  EXPECT_LE(s.Percentile(100), 10'000'000);
  EXPECT_NEAR(s.Mean(), 5'000'500, 1);
}

TEST(Histogram, SmallValuesAreExact) {
  LatencyHistogram h;
  h.Record(3);
  h.Record(3);
  h.Record(7);
  HistogramSnapshot s = h.Snapshot();
  EXPECT_EQ(s.Percentile(50), 3);
  EXPECT_EQ(s.Percentile(100), 7);
  EXPECT_EQ(HistogramSnapshot{}.Percentile(50), 0);
}

TEST(Histogram, MergeAndConcurrentRecord) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&h] {
      for (int i = 0; i < 100000; ++i) h.Record(i % 100);
    });
  for (auto& t : threads) t.join();
  HistogramSnapshot a = h.Snapshot();
  EXPECT_EQ(a.total, 400000u);
  HistogramSnapshot b = a;
  b.Merge(a);
  EXPECT_EQ(b.total, 800000u);
  EXPECT_EQ(b.max, 99u);
  EXPECT_EQ(b.Percentile(50), a.Percentile(50));
}

}  // namespace
}  // namespace ferry
