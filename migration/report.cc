#include "migration/report.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace ferry::migration {

std::vector<JsonObject> PhaseTimingsJson(const std::vector<PhaseTiming>& timings) {
  std::vector<JsonObject> out;
  for (const PhaseTiming& t : timings) {
    JsonObject j;
    j.Add("phase", t.phase)
        .Add("start_unix_ms", t.start_unix_ms)
        .Add("end_unix_ms", t.end_unix_ms)
        .Add("duration_ms", t.duration_ms);
    out.push_back(std::move(j));
  }
  return out;
}

std::string PhaseTimingsText(const std::vector<PhaseTiming>& timings) {
  std::string out;
  for (const PhaseTiming& t : timings)
    absl::StrAppendFormat(
        &out, "  phase %-15s %s to %s (%.0f ms)\n", t.phase,
        absl::FormatTime("%H:%M:%E3S", absl::FromUnixMillis(t.start_unix_ms),
                         absl::LocalTimeZone()),
        absl::FormatTime("%H:%M:%E3S", absl::FromUnixMillis(t.end_unix_ms), absl::LocalTimeZone()),
        t.duration_ms);
  return out;
}

JsonObject MigrationReport::ToJson() const {
  JsonObject o;
  o.Add("migration_id", migration_id)
      .Add("mode", mode)
      .Add("fault_mode", fault_mode)
      .Add("fault_mode_reason", fault_mode_reason)
      .Add("backend", backend)
      .Add("memory_bytes", memory_bytes)
      .Add("vcpus", vcpus)
      .Add("workload", workload)
      .Add("outcome", outcome)
      .Add("total_ms", total_ms)
      .Add("downtime_ms", downtime_ms)
      .Add("setup_ms", setup_ms)
      .Add("precopy_ms", precopy_ms)
      .Add("switchover_ms", switchover_ms)
      .Add("dest_switchover_ms", dest_switchover_ms)
      .Add("postcopy_ms", postcopy_ms)
      .Add("precopy_rounds", precopy_rounds)
      .Add("precopy_gbps", precopy_gbps)
      .Add("switchover_reason", switchover_reason)
      .Add("bytes_sent", bytes_sent)
      .Add("pages_sent", pages_sent)
      .Add("pages_resent", pages_resent)
      .Add("zero_pages", zero_pages)
      .Add("pages_pushed", pages_pushed)
      .Add("pages_demand", pages_demand)
      .Add("pages_discarded", pages_discarded)
      .Add("pages_held_back", pages_held_back)
      .Add("bytes_precopy", bytes_precopy)
      .Add("bytes_stop_and_copy", bytes_stop_and_copy)
      .Add("bytes_push", bytes_push)
      .Add("bytes_demand", bytes_demand)
      .Add("faults", faults)
      .Add("fault_p50_us", fault_p50_us)
      .Add("fault_p99_us", fault_p99_us)
      .Add("fault_p999_us", fault_p999_us)
      .Add("fault_max_us", fault_max_us)
      .Add("max_vcpu_stall_ms", max_vcpu_stall_ms)
      .Add("fetch_rtt_p50_us", fetch_rtt_p50_us)
      .Add("fetch_rtt_p99_us", fetch_rtt_p99_us)
      .Add("prefaulted_pages", prefaulted_pages)
      .Add("dirty_log", dirty_log)
      .Add("destination_paths", destination_paths)
      .Add("guest_resident_bytes", guest_resident_bytes)
      .Add("src_rss_bytes", src_rss_bytes)
      .Add("dst_rss_bytes", dst_rss_bytes)
      .Add("dst_guest_bytes", dst_guest_bytes)
      .Add("dst_heap_bytes", dst_heap_bytes)
      .Add("dst_zero_for_reads_bytes", dst_zero_for_reads_bytes)
      .Add("blocktime_ms", blocktime_ms)
      .Add("blocktime_ms_per_vcpu", blocktime_ms_per_vcpu)
      .Add("impact_measured", impact_measured)
      .Add("reconnects", static_cast<uint64_t>(reconnects));
  if (impact_measured) {
    o.Add("baseline_ops_per_sec", baseline_ops_per_sec)
        .Add("baseline_window_ms", baseline_window_ms)
        .Add("baseline_below_half_ms", baseline_below_half_ms)
        .Add("baseline_mgu_10ms", baseline_mgu_10ms)
        .Add("baseline_mgu_100ms", baseline_mgu_100ms)
        .Add("below_half_ms", below_half_ms)
        .Add("mgu_10ms", mgu_10ms)
        .Add("mgu_100ms", mgu_100ms)
        .Add("mgu_1s", mgu_1s)
        .Add("precopy_below_half_ms", precopy_below_half_ms)
        .Add("precopy_mgu_10ms", precopy_mgu_10ms)
        .Add("precopy_mgu_100ms", precopy_mgu_100ms)
        .Add("precopy_mgu_1s", precopy_mgu_1s);
    JsonObject curve;
    curve.Add("window_ms", mgu_curve_window_ms).Add("mgu", mgu_curve);
    o.Add("mgu_curve", curve);
  } else {
    o.Add("impact_note", impact_note);
  }
  std::vector<double> t, ops;
  std::string phases;
  for (const OpsSample& s : ops_timeline) {
    t.push_back(s.t_ms);
    ops.push_back(s.ops_per_sec);
  }
  JsonObject timeline;
  timeline.Add("t_ms", t).Add("ops_per_sec", ops);
  std::vector<std::string> ph;
  std::string joined;
  for (size_t i = 0; i < ops_timeline.size(); ++i)
    absl::StrAppend(&joined, i ? "," : "", ops_timeline[i].phase);
  timeline.Add("phases", joined);
  o.Add("ops_timeline", timeline);
  o.Add("auto_converge", auto_converge).Add("max_throttle_percent", max_throttle_percent);
  std::vector<JsonObject> throttle;
  for (const ThrottleChange& c : throttle_changes) {
    JsonObject j;
    j.Add("time_ms", c.time_ms)
        .Add("old_percent", c.old_percent)
        .Add("new_percent", c.new_percent)
        .Add("reason", c.reason);
    throttle.push_back(std::move(j));
  }
  o.Add("throttle_changes", throttle);
  if (digest_match.has_value()) o.Add("digest_match", *digest_match);
  o.Add("phase_timings", PhaseTimingsJson(phase_timings));
  return o;
}

std::string MigrationReport::ToText() const {
  std::string out;
  absl::StrAppendFormat(&out, "migration %s: %s\n", migration_id, outcome);
  absl::StrAppendFormat(&out, "  %s, %d MiB, %d vCPUs (%s), workload %s, fault mode %s\n", mode,
                        memory_bytes >> 20, vcpus, backend.empty() ? "soft" : backend, workload,
                        fault_mode);
  if (!fault_mode_reason.empty())
    absl::StrAppendFormat(&out, "  fault mode: %s\n", fault_mode_reason);
  if (!dirty_log.empty() || !destination_paths.empty())
    absl::StrAppendFormat(&out, "  paths: source dirty log %s; destination %s\n",
                          dirty_log.empty() ? "none (postcopy)" : dirty_log,
                          destination_paths.empty() ? "unknown" : destination_paths);
  if (downtime_ms > 0 || !switchover_reason.empty())
    absl::StrAppendFormat(&out,
                          "  total %.1f ms, downtime %.2f ms (%.2f ms of it at the destination; "
                          "switchover: %s)\n",
                          total_ms, downtime_ms, dest_switchover_ms,
                          switchover_reason.empty() ? "none" : switchover_reason);
  else
    absl::StrAppendFormat(&out, "  total %.1f ms, no switchover\n", total_ms);
  if (reconnects > 0)
    absl::StrAppendFormat(&out,
                          "  postcopy recovery: the migration stream was re-established %d "
                          "times\n",
                          reconnects);
  if (mode == "postcopy") {
    // No precopy to speak of: the switchover came first.
    if (postcopy_ms > 0) absl::StrAppendFormat(&out, "  postcopy %.1f ms\n", postcopy_ms);
  } else if (mode == "precopy") {
    absl::StrAppendFormat(&out, "  precopy %d rounds in %.1f ms at %.2f Gbit/s\n", precopy_rounds,
                          precopy_ms, precopy_gbps);
  } else if (precopy_rounds == 0 && precopy_ms > 0) {
    absl::StrAppendFormat(&out,
                          "  precopy: part of round 0 in %.1f ms at %.2f Gbit/s; postcopy %.1f "
                          "ms\n",
                          precopy_ms, precopy_gbps, postcopy_ms);
  } else if (postcopy_ms > 0) {
    absl::StrAppendFormat(&out, "  precopy %d rounds in %.1f ms at %.2f Gbit/s; postcopy %.1f ms\n",
                          precopy_rounds, precopy_ms, precopy_gbps, postcopy_ms);
  } else {
    absl::StrAppendFormat(&out, "  precopy %d rounds in %.1f ms at %.2f Gbit/s\n", precopy_rounds,
                          precopy_ms, precopy_gbps);
  }
  absl::StrAppendFormat(&out,
                        "  sent %.1f MiB: %d pages (%d resent), %d zero pages; pushed %d, "
                        "on demand %d, discarded %d\n",
                        bytes_sent / 1048576.0, pages_sent, pages_resent, zero_pages, pages_pushed,
                        pages_demand, pages_discarded);
  absl::StrAppendFormat(&out,
                        "  faults %d: p50 %.1f us, p99 %.1f us, max %.1f us; longest vCPU "
                        "stall %.2f ms\n",
                        faults, fault_p50_us, fault_p99_us, fault_max_us, max_vcpu_stall_ms);
  if (impact_measured) {
    absl::StrAppendFormat(&out,
                          "  guest impact: blocktime %.1f ms (vCPUs summed); below half speed "
                          "%.0f ms; min utilization %.2f over 10 ms, %.2f over 100 ms, %.2f "
                          "over 1 s\n",
                          blocktime_ms, below_half_ms, mgu_10ms, mgu_100ms, mgu_1s);
    absl::StrAppendFormat(&out,
                          "  baseline: %.0f ops/s over %.0f ms before the migration (there: "
                          "below half %.0f ms; min utilization %.2f over 10 ms, %.2f over 100 "
                          "ms)\n",
                          baseline_ops_per_sec, baseline_window_ms, baseline_below_half_ms,
                          baseline_mgu_10ms, baseline_mgu_100ms);
    if (precopy_ms > 0)
      absl::StrAppendFormat(&out,
                            "  during precopy: below half %.0f ms; min utilization %.2f / "
                            "%.2f / %.2f (10 ms / 100 ms / 1 s)\n",
                            precopy_below_half_ms, precopy_mgu_10ms, precopy_mgu_100ms,
                            precopy_mgu_1s);
  } else {
    absl::StrAppendFormat(&out, "  guest impact: blocktime %.1f ms; utilization not measured: %s\n",
                          blocktime_ms, impact_note);
  }
  if (auto_converge) {
    absl::StrAppendFormat(&out, "  auto-converge: the guest was throttled up to %d%%%s\n",
                          max_throttle_percent, max_throttle_percent > 0 ? "" : " (never needed)");
    for (const ThrottleChange& c : throttle_changes)
      absl::StrAppendFormat(&out, "    at %.0f ms: throttle %d%% -> %d%%\n", c.time_ms,
                            c.old_percent, c.new_percent);
  }
  if (dst_rss_bytes > 0)
    absl::StrAppendFormat(&out,
                          "  memory: guest touched %.1f MiB; destination holds %.1f MiB (guest "
                          "%.1f + heap %.1f); source %.1f MiB after release\n",
                          guest_resident_bytes / 1048576.0, dst_rss_bytes / 1048576.0,
                          dst_guest_bytes / 1048576.0, dst_heap_bytes / 1048576.0,
                          src_rss_bytes / 1048576.0);
  if (prefaulted_pages > 0)
    absl::StrAppendFormat(&out, "  pre-faulted %d pages (stage-2 faults the guest did not take)\n",
                          prefaulted_pages);
  if (digest_match.has_value())
    absl::StrAppendFormat(&out, "  memory digest vs reference run: %s\n",
                          *digest_match ? "MATCH" : "MISMATCH");
  return out;
}

}  // namespace ferry::migration
