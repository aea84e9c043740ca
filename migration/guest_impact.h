// Guest impact: what a migration cost the guest, from the guest's own
// per-vCPU op counters sampled every few milliseconds on both sides
// (vmm::OpsMeter). Pure arithmetic over recorded samples; the source
// session feeds it (docs/benchmarks.md, "Guest impact", defines each
// figure).
//
// Baseline: the guest's throughput on the source over a warmed-up window
// just before the migration: between the samples inside the last
// kBaselineWindow before the start that were taken at least kWarmUp after
// the VM's first sample, at least kMinBaselineWindow apart. A vCPU that did no op in that window (idle,
// halted, or with no samples) is left out of the baseline and of every
// figure: it cannot fall below a throughput it never had.
//
// Timeline: the counted vCPUs' cumulative ops, piecewise linear between
// samples: the source's samples until the destination resumed, then the
// destination's (its clock's zero placed at the source's receipt of
// Resumed). A stretch with no samples carries no ops (the pause, a sampler
// that could not run).
//
// Utilization of a window [a, a + w): ops done in it over baseline * w,
// clipped to [0, 1]. mgu(w) is its minimum over every window that fits in
// [from, to) (exact: the minimum of a difference of piecewise-linear
// functions lies at a breakpoint); a span shorter than w is one window.
// below_half: the time in 10 ms bins from `from` (the last one partial)
// whose utilization is below 0.5.
#ifndef FERRY_MIGRATION_GUEST_IMPACT_H_
#define FERRY_MIGRATION_GUEST_IMPACT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "vmm/ops_meter.h"

namespace ferry::migration {

inline constexpr absl::Duration kBaselineWindow = absl::Seconds(1);
inline constexpr absl::Duration kWarmUp = absl::Milliseconds(250);
inline constexpr absl::Duration kMinBaselineWindow = absl::Milliseconds(100);
inline constexpr absl::Duration kBelowHalfBin = absl::Milliseconds(10);
// The windows of the minimum-utilization curve, in ms.
inline constexpr double kMguCurveWindowsMs[] = {5,   10,  20,   50,   100, 200,
                                                 500, 1000, 2000, 5000};

struct Baseline {
  double ops_per_sec = 0;     // the counted vCPUs' ops per second
  double window_ms = 0;
  int64_t from_ns = 0, to_ns = 0;  // the samples it was measured between
  std::vector<bool> counted;       // per vCPU
};

// The baseline from the source's samples (trace) ending at start_ns, the VM
// having first been sampled at first_sample_ns. FailedPrecondition (saying
// why) when the VM ran too briefly or did no op.
absl::StatusOr<Baseline> MeasureBaseline(const vmm::OpsTrace& trace,
                                         int64_t first_sample_ns, int64_t start_ns);

struct GuestTimeline {
  std::vector<int64_t> t_ns;  // increasing
  std::vector<double> ops;    // cumulative, non-decreasing
};

// The counted vCPUs' timeline: source rows up to until_ns (the
// destination's resume on the source clock, or the end), then the
// destination's rows (times relative to its resume) placed at until_ns,
// continuing the count where the source left it. InvalidArgument for a
// destination trace that does not fit (vCPUs, lengths, times or counts
// that go backwards).
absl::StatusOr<GuestTimeline> Stitch(const vmm::OpsTrace& source, int64_t until_ns,
                                     const vmm::OpsTrace* destination,
                                     const std::vector<bool>& counted);

// Ops done by time t (interpolated; clamped to the first and last sample).
double OpsAt(const GuestTimeline& timeline, int64_t t_ns);

// Minimum utilization over windows of window_ns within [from_ns, to_ns);
// 1 when the span is empty.
double MinUtilization(const GuestTimeline& timeline, double baseline_ops_per_sec,
                      int64_t from_ns, int64_t to_ns, int64_t window_ns);

// Time in ms within [from_ns, to_ns) spent below half the baseline.
double BelowHalfMs(const GuestTimeline& timeline, double baseline_ops_per_sec,
                   int64_t from_ns, int64_t to_ns);

struct ImpactFigures {
  double below_half_ms = 0;
  double mgu_10ms = 1;
  double mgu_100ms = 1;
  double mgu_1s = 1;
};

ImpactFigures Figures(const GuestTimeline& timeline, double baseline_ops_per_sec,
                      int64_t from_ns, int64_t to_ns);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_GUEST_IMPACT_H_
