// Prometheus text exposition (format 0.0.4): what `ferryd --metrics-listen`
// serves. Metric and label names are fixed by the caller; label values are
// escaped here.
#ifndef FERRY_MIGRATION_AGENT_PROMETHEUS_H_
#define FERRY_MIGRATION_AGENT_PROMETHEUS_H_

#include <string>
#include <utility>
#include <vector>

#include "base/histogram.h"

namespace ferry::agent {

using Labels = std::vector<std::pair<std::string, std::string>>;

class PrometheusText {
 public:
  // "# HELP" and "# TYPE" lines; once per metric, before its samples.
  void Declare(const std::string& name, const char* type, const std::string& help);
  void Sample(const std::string& name, const Labels& labels, double value);
  // A histogram of values recorded in nanoseconds, exported in seconds with
  // cumulative buckets at fixed bounds (10 us to 10 s; counts are exact to
  // the recording histogram's 1/16 precision), _sum and _count.
  void HistogramSeconds(const std::string& name, const Labels& labels,
                        const HistogramSnapshot& ns);
  const std::string& text() const { return out_; }

 private:
  std::string out_;
};

// One exposition to merge, with labels to add to each of its samples.
struct ExpositionPart {
  std::string text;
  Labels extra;
};

// Merges expositions into one (ferryd --state-dir: its own figures and each
// ferry-vmm process's, labelled vm="NAME"). The text format wants a
// family's lines in one group: each family's samples are gathered from
// every part, in the order families first appear; a family's HELP and TYPE
// come from the first part that declares it. A sample belongs to the last
// declared family whose name prefixes it (a histogram's _bucket, _sum and
// _count), else to a family of its own name. The labels to add come first
// and replace any of the same name a sample had (a process names only
// itself). A line that does not parse as a sample is dropped, as are
// comments other than HELP and TYPE, and blank lines.
std::string MergeExpositions(const std::vector<ExpositionPart>& parts);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_PROMETHEUS_H_
