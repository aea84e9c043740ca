#include "migration/guest_impact.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace ferry::migration {
namespace {

int64_t Nanos(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

// The counted vCPUs' ops at a row.
double CountedOps(const vmm::OpsTrace& trace, size_t row, const std::vector<bool>& counted) {
  double sum = 0;
  for (int v = 0; v < trace.vcpus; ++v)
    if (v < static_cast<int>(counted.size()) && counted[v])
      sum += static_cast<double>(trace.ops[row * trace.vcpus + v]);
  return sum;
}

double Utilization(double ops, double baseline, int64_t ns) {
  if (baseline <= 0 || ns <= 0) return 1;
  return std::clamp(ops / (baseline * static_cast<double>(ns) / 1e9), 0.0, 1.0);
}

}  // namespace

absl::StatusOr<Baseline> MeasureBaseline(const vmm::OpsTrace& trace,
                                         int64_t first_sample_ns, int64_t start_ns) {
  if (first_sample_ns <= 0 || trace.rows() == 0)
    return absl::FailedPreconditionError("no baseline: the VM's guest was never sampled");
  const int64_t from =
      std::max(start_ns - Nanos(kBaselineWindow), first_sample_ns + Nanos(kWarmUp));
  if (start_ns - from < Nanos(kMinBaselineWindow))
    return absl::FailedPreconditionError(absl::StrFormat(
        "no baseline: the guest ran %.0f ms before the migration (%.0f ms warm-up and "
        "%.0f ms of measure needed)",
        (start_ns - first_sample_ns) / 1e6, absl::ToDoubleMilliseconds(kWarmUp),
        absl::ToDoubleMilliseconds(kMinBaselineWindow)));
  // The samples inside the window (a sampler the scheduler delayed leaves
  // gaps; the rate is measured between real samples).
  const auto& ts = trace.t_ns;
  const size_t i0 = std::lower_bound(ts.begin(), ts.end(), from) - ts.begin();
  const size_t end = std::upper_bound(ts.begin(), ts.end(), start_ns) - ts.begin();
  if (end == 0 || i0 >= end - 1 || ts[end - 1] - ts[i0] < Nanos(kMinBaselineWindow))
    return absl::FailedPreconditionError(absl::StrFormat(
        "no baseline: the guest's samples cover %.0f ms of the %.0f ms before the migration",
        end == 0 || i0 >= end ? 0.0 : (ts[end - 1] - ts[i0]) / 1e6, (start_ns - from) / 1e6));
  const size_t i1 = end - 1;
  Baseline b;
  b.from_ns = ts[i0];
  b.to_ns = ts[i1];
  b.window_ms = (ts[i1] - ts[i0]) / 1e6;
  b.counted.assign(trace.vcpus, false);
  double ops = 0;
  for (int v = 0; v < trace.vcpus; ++v) {
    const double done = static_cast<double>(trace.ops[i1 * trace.vcpus + v]) -
                        static_cast<double>(trace.ops[i0 * trace.vcpus + v]);
    if (done <= 0) continue;  // idle in the window: not counted
    b.counted[v] = true;
    ops += done;
  }
  if (ops <= 0)
    return absl::FailedPreconditionError(
        "no baseline: the guest did no op in the window before the migration");
  b.ops_per_sec = ops / ((ts[i1] - ts[i0]) / 1e9);
  return b;
}

absl::StatusOr<GuestTimeline> Stitch(const vmm::OpsTrace& source, int64_t until_ns,
                                     const vmm::OpsTrace* destination,
                                     const std::vector<bool>& counted) {
  GuestTimeline tl;
  for (size_t i = 0; i < source.rows(); ++i) {
    if (source.t_ns[i] > until_ns) break;
    if (!tl.t_ns.empty() && source.t_ns[i] <= tl.t_ns.back()) continue;
    tl.t_ns.push_back(source.t_ns[i]);
    tl.ops.push_back(CountedOps(source, i, counted));
  }
  if (destination == nullptr || destination->rows() == 0) return tl;
  const vmm::OpsTrace& d = *destination;
  if (d.vcpus != source.vcpus || d.ops.size() != d.rows() * static_cast<size_t>(d.vcpus))
    return absl::InvalidArgumentError(absl::StrFormat(
        "destination ops trace: %d vCPUs and %d counts in %d rows for a %d-vCPU VM",
        d.vcpus, d.ops.size(), d.rows(), source.vcpus));
  // The source's count where the destination took over; the destination
  // continues the same counters, restored from the vCPU state.
  const double at_pause = tl.ops.empty() ? 0 : tl.ops.back();
  const double first = CountedOps(d, 0, counted);
  const double offset = first < at_pause ? at_pause - first : 0;
  double last = -1;
  for (size_t i = 0; i < d.rows(); ++i) {
    if (d.t_ns[i] < 0 || (i > 0 && d.t_ns[i] < d.t_ns[i - 1]))
      return absl::InvalidArgumentError(absl::StrFormat(
          "destination ops trace: row %d's time %d goes backwards", i, d.t_ns[i]));
    const double ops = CountedOps(d, i, counted) + offset;
    if (ops < last)
      return absl::InvalidArgumentError(
          absl::StrFormat("destination ops trace: row %d's count goes backwards", i));
    last = ops;
    const int64_t t = until_ns + d.t_ns[i];
    if (!tl.t_ns.empty() && t <= tl.t_ns.back()) continue;
    tl.t_ns.push_back(t);
    tl.ops.push_back(ops);
  }
  return tl;
}

double OpsAt(const GuestTimeline& tl, int64_t t) {
  if (tl.t_ns.empty()) return 0;
  auto it = std::lower_bound(tl.t_ns.begin(), tl.t_ns.end(), t);
  const size_t i = it - tl.t_ns.begin();
  if (i == 0) return tl.ops.front();
  if (i == tl.t_ns.size()) return tl.ops.back();
  const double span = static_cast<double>(tl.t_ns[i] - tl.t_ns[i - 1]);
  return tl.ops[i - 1] +
         (tl.ops[i] - tl.ops[i - 1]) * static_cast<double>(t - tl.t_ns[i - 1]) / span;
}

double MinUtilization(const GuestTimeline& tl, double baseline, int64_t from, int64_t to,
                      int64_t window) {
  if (to <= from || window <= 0) return 1;
  if (to - from <= window) return Utilization(OpsAt(tl, to) - OpsAt(tl, from), baseline, to - from);
  // Window starts where the window's start or end meets a sample.
  std::vector<int64_t> starts = {from, to - window};
  for (int64_t t : tl.t_ns) {
    if (t >= from && t <= to - window) starts.push_back(t);
    if (t - window >= from && t - window <= to - window) starts.push_back(t - window);
  }
  double min = 1;
  for (int64_t a : starts)
    min = std::min(min, Utilization(OpsAt(tl, a + window) - OpsAt(tl, a), baseline, window));
  return min;
}

double BelowHalfMs(const GuestTimeline& tl, double baseline, int64_t from, int64_t to) {
  const int64_t bin = Nanos(kBelowHalfBin);
  int64_t below = 0;
  for (int64_t a = from; a < to; a += bin) {
    const int64_t b = std::min(a + bin, to);
    if (Utilization(OpsAt(tl, b) - OpsAt(tl, a), baseline, b - a) < 0.5) below += b - a;
  }
  return below / 1e6;
}

ImpactFigures Figures(const GuestTimeline& tl, double baseline, int64_t from, int64_t to) {
  ImpactFigures f;
  f.below_half_ms = BelowHalfMs(tl, baseline, from, to);
  f.mgu_10ms = MinUtilization(tl, baseline, from, to, Nanos(absl::Milliseconds(10)));
  f.mgu_100ms = MinUtilization(tl, baseline, from, to, Nanos(absl::Milliseconds(100)));
  f.mgu_1s = MinUtilization(tl, baseline, from, to, Nanos(absl::Seconds(1)));
  return f;
}

}  // namespace ferry::migration
