#include "base/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace ferry {

int LatencyHistogram::BucketOf(uint64_t value) {
  if (value < kHistogramLinear) return static_cast<int>(value);
  int msb = 63 - std::countl_zero(value);  // >= kHistogramSubBits + 1
  int shift = msb - kHistogramSubBits;
  int sub = static_cast<int>((value >> shift) & ((1 << kHistogramSubBits) - 1));
  return kHistogramLinear + (shift - 1) * (1 << kHistogramSubBits) + sub;
}

uint64_t LatencyHistogram::BucketLow(int bucket) {
  if (bucket < kHistogramLinear) return bucket;
  int rel = bucket - kHistogramLinear;
  int shift = rel / (1 << kHistogramSubBits) + 1;
  uint64_t sub = rel % (1 << kHistogramSubBits);
  return ((uint64_t{1} << kHistogramSubBits) | sub) << shift;
}

uint64_t LatencyHistogram::BucketHigh(int bucket) {
  if (bucket + 1 >= kHistogramBuckets) return UINT64_MAX;
  return BucketLow(bucket + 1);
}

void LatencyHistogram::Record(uint64_t value) {
  counts_[BucketOf(value)].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  uint64_t prev = max_.load(std::memory_order_relaxed);
  while (value > prev &&
         !max_.compare_exchange_weak(prev, value, std::memory_order_relaxed)) {
  }
}

HistogramSnapshot LatencyHistogram::Snapshot() const {
  HistogramSnapshot s;
  for (int i = 0; i < kHistogramBuckets; ++i) {
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.total += s.counts[i];
  }
  s.max = max_.load(std::memory_order_relaxed);
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

void HistogramSnapshot::Merge(const HistogramSnapshot& other) {
  for (int i = 0; i < kHistogramBuckets; ++i) counts[i] += other.counts[i];
  total += other.total;
  sum += other.sum;
  max = std::max(max, other.max);
}

double HistogramSnapshot::Percentile(double p) const {
  if (total == 0) return 0;
  p = std::clamp(p, 0.0, 100.0);
  // The rank (1-based) of the sample at percentile p.
  uint64_t rank = static_cast<uint64_t>(std::ceil(p / 100.0 * total));
  rank = std::clamp<uint64_t>(rank, 1, total);
  uint64_t seen = 0;
  for (int i = 0; i < kHistogramBuckets; ++i) {
    seen += counts[i];
    if (seen >= rank) {
      uint64_t low = LatencyHistogram::BucketLow(i);
      uint64_t high = LatencyHistogram::BucketHigh(i);
      double mid = i < kHistogramLinear ? static_cast<double>(low)
                                        : (static_cast<double>(low) + high - 1) / 2;
      return std::min(mid, static_cast<double>(max));
    }
  }
  return static_cast<double>(max);
}

}  // namespace ferry
