#include "migration/agent/prometheus.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace ferry::agent {
namespace {

std::string Format(const Labels& labels, const std::string& extra = "") {
  std::string s;
  for (const auto& [k, v] : labels)
    absl::StrAppend(&s, s.empty() ? "" : ",", k, "=\"",
                    absl::StrReplaceAll(v, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}}),
                    "\"");
  if (!extra.empty()) absl::StrAppend(&s, s.empty() ? "" : ",", extra);
  return s.empty() ? "" : absl::StrCat("{", s, "}");
}

std::string Number(double v) { return absl::StrFormat("%.9g", v); }

// Upper bounds, seconds.
constexpr double kBounds[] = {10e-6, 25e-6,  50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3,
                              5e-3,  10e-3, 25e-3, 50e-3,  100e-3, 250e-3, 1,    10};

}  // namespace

void PrometheusText::Declare(const std::string& name, const char* type,
                             const std::string& help) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void PrometheusText::Sample(const std::string& name, const Labels& labels, double value) {
  absl::StrAppend(&out_, name, Format(labels), " ", Number(value), "\n");
}

void PrometheusText::HistogramSeconds(const std::string& name, const Labels& labels,
                                      const HistogramSnapshot& ns) {
  // A recording bucket counts below a bound when all of it lies below.
  for (double bound : kBounds) {
    const uint64_t bound_ns = static_cast<uint64_t>(bound * 1e9);
    uint64_t below = 0;
    for (int b = 0; b < kHistogramBuckets; ++b)
      if (ns.counts[b] != 0 && LatencyHistogram::BucketHigh(b) <= bound_ns + 1)
        below += ns.counts[b];
    absl::StrAppend(&out_, name, "_bucket",
                    Format(labels, absl::StrCat("le=\"", Number(bound), "\"")), " ", below, "\n");
  }
  absl::StrAppend(&out_, name, "_bucket", Format(labels, "le=\"+Inf\""), " ", ns.total, "\n");
  absl::StrAppend(&out_, name, "_sum", Format(labels), " ", Number(ns.sum / 1e9), "\n");
  absl::StrAppend(&out_, name, "_count", Format(labels), " ", ns.total, "\n");
}

}  // namespace ferry::agent
