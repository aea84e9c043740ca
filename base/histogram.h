// LatencyHistogram: a lock-free log-linear histogram of non-negative values
// (Ferry records nanoseconds). Buckets are exact below 32 and then have 16
// sub-buckets per power of two, so a reported percentile is within 1/16
// (6.25%) of the true value. Record() is wait-free and may be called from
// many threads at once, and from a signal handler; Snapshot() may run
// concurrently and sees each Record() whole or not at all per bucket.
//
//   LatencyHistogram h;
//   h.Record(elapsed_ns);
//   HistogramSnapshot s = h.Snapshot();
//   double p99 = s.Percentile(99.0);
#ifndef FERRY_BASE_HISTOGRAM_H_
#define FERRY_BASE_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>

namespace ferry {

inline constexpr int kHistogramSubBits = 4;
inline constexpr int kHistogramLinear = 2 << kHistogramSubBits;  // 32
inline constexpr int kHistogramBuckets =
    kHistogramLinear + (64 - kHistogramSubBits - 1) * (1 << kHistogramSubBits);

// A point-in-time copy: plain values that can be merged and queried.
struct HistogramSnapshot {
  std::array<uint64_t, kHistogramBuckets> counts{};
  uint64_t total = 0;
  uint64_t max = 0;
  uint64_t sum = 0;

  void Merge(const HistogramSnapshot& other);
  // The value at percentile p in [0, 100]: the midpoint of the bucket that
  // holds it, clamped to max. 0 when empty.
  double Percentile(double p) const;
  double Mean() const { return total ? static_cast<double>(sum) / total : 0; }
};

class LatencyHistogram {
 public:
  void Record(uint64_t value);
  HistogramSnapshot Snapshot() const;

  // Bucket geometry, exposed for tests.
  static int BucketOf(uint64_t value);
  static uint64_t BucketLow(int bucket);
  static uint64_t BucketHigh(int bucket);  // exclusive

 private:
  std::array<std::atomic<uint64_t>, kHistogramBuckets> counts_{};
  std::atomic<uint64_t> max_{0};
  std::atomic<uint64_t> sum_{0};
};

}  // namespace ferry

#endif  // FERRY_BASE_HISTOGRAM_H_
