// Statistics over repeated runs: quantiles by linear interpolation between
// order statistics (the "type 7" definition most tools use), the median and
// the spread (min, max and the interquartile range).
#ifndef FERRY_BENCH_STATS_H_
#define FERRY_BENCH_STATS_H_

#include <cstddef>
#include <vector>

namespace ferry::bench {

// The q-quantile (q in [0, 1]) of `values`; 0 for an empty input.
double Quantile(std::vector<double> values, double q);

struct Summary {
  size_t n = 0;
  double median = 0;
  double min = 0;
  double max = 0;
  double p25 = 0;
  double p75 = 0;
  double iqr() const { return p75 - p25; }
};

Summary Summarize(const std::vector<double>& values);

// The index of the run whose value is the median (the lower middle one for
// an even count), so a whole run can stand for its point.
size_t MedianIndex(const std::vector<double>& values);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_STATS_H_
