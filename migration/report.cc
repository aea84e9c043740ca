#include "migration/report.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "base/proto_json.h"
#include "migration/api/names.h"

namespace ferry::migration {
namespace {

// "hybrid, 1024 MiB, 2 vCPUs (soft), workload zipf, fault mode exit", the
// fault mode's reason and the paths.
void AppendSetup(const MigrationReport& r, std::string* out) {
  absl::StrAppendFormat(out, "  %s, %u MiB, %u vCPUs (%s), workload %s, fault mode %s\n", r.mode(),
                        r.memory_bytes() >> 20, r.vcpus(),
                        r.backend().empty() ? "soft" : r.backend(), r.workload(), r.fault_mode());
  if (!r.fault_mode_reason().empty())
    absl::StrAppendFormat(out, "  fault mode: %s\n", r.fault_mode_reason());
  if (!r.dirty_log().empty() || !r.destination_paths().empty())
    absl::StrAppendFormat(out, "  paths: source dirty log %s; destination %s\n",
                          r.dirty_log().empty() ? "none (postcopy)" : r.dirty_log(),
                          r.destination_paths().empty() ? "unknown" : r.destination_paths());
  if (!r.send_path().empty()) absl::StrAppendFormat(out, "  frames: %s\n", r.send_path());
}

// Total, downtime, reconnects and the time in precopy and postcopy.
void AppendTimes(const MigrationReport& r, std::string* out) {
  if (r.downtime_ms() > 0 || !r.switchover_reason().empty())
    absl::StrAppendFormat(out,
                          "  total %.1f ms, downtime %.2f ms (%.2f ms of it at the destination; "
                          "switchover: %s)\n",
                          r.total_ms(), r.downtime_ms(), r.dest_switchover_ms(),
                          r.switchover_reason().empty() ? "none" : r.switchover_reason());
  else
    absl::StrAppendFormat(out, "  total %.1f ms, no switchover\n", r.total_ms());
  if (r.reconnects() > 0)
    absl::StrAppendFormat(out,
                          "  postcopy recovery: the migration stream was re-established %u "
                          "times\n",
                          r.reconnects());
  if (r.mode() == "postcopy") {
    // No precopy to speak of: the switchover came first.
    if (r.postcopy_ms() > 0) absl::StrAppendFormat(out, "  postcopy %.1f ms\n", r.postcopy_ms());
  } else if (r.mode() == "precopy") {
    absl::StrAppendFormat(out, "  precopy %u rounds in %.1f ms at %.2f Gbit/s\n",
                          r.precopy_rounds(), r.precopy_ms(), r.precopy_gbps());
  } else if (r.precopy_rounds() == 0 && r.precopy_ms() > 0) {
    absl::StrAppendFormat(out,
                          "  precopy: part of round 0 in %.1f ms at %.2f Gbit/s; postcopy %.1f "
                          "ms\n",
                          r.precopy_ms(), r.precopy_gbps(), r.postcopy_ms());
  } else if (r.postcopy_ms() > 0) {
    absl::StrAppendFormat(out, "  precopy %u rounds in %.1f ms at %.2f Gbit/s; postcopy %.1f ms\n",
                          r.precopy_rounds(), r.precopy_ms(), r.precopy_gbps(), r.postcopy_ms());
  } else {
    absl::StrAppendFormat(out, "  precopy %u rounds in %.1f ms at %.2f Gbit/s\n",
                          r.precopy_rounds(), r.precopy_ms(), r.precopy_gbps());
  }
}

// Pages sent and the destination's faults.
void AppendPages(const MigrationReport& r, std::string* out) {
  absl::StrAppendFormat(out,
                        "  sent %.1f MiB: %d pages (%d resent), %d zero pages; pushed %d, "
                        "on demand %d, discarded %d\n",
                        r.bytes_sent() / 1048576.0, r.pages_sent(), r.pages_resent(),
                        r.zero_pages(), r.pages_pushed(), r.pages_demand(), r.pages_discarded());
  absl::StrAppendFormat(out,
                        "  faults %d: p50 %.1f us, p99 %.1f us, max %.1f us; longest vCPU "
                        "stall %.2f ms\n",
                        r.faults(), r.fault_p50_us(), r.fault_p99_us(), r.fault_max_us(),
                        r.max_vcpu_stall_ms());
  // Where a fetched fault's time went, each stage its own percentile: only
  // where the faulting thread resolved its own faults (exit mode), the one
  // path that times every stage.
  if (r.fetch_rtt_p50_us() > 0 && r.fault_install_p50_us() > 0)
    absl::StrAppendFormat(out,
                          "  fault stages p50 / p99: trap %.1f / %.1f us, fetch %.1f / %.1f us "
                          "(source %.1f / %.1f us of it), install %.1f / %.1f us\n",
                          r.fault_trap_p50_us(), r.fault_trap_p99_us(), r.fetch_rtt_p50_us(),
                          r.fetch_rtt_p99_us(), r.source_service_p50_us(),
                          r.source_service_p99_us(), r.fault_install_p50_us(),
                          r.fault_install_p99_us());
}

// Guest impact (docs/benchmarks.md, "Guest impact").
void AppendImpact(const MigrationReport& r, std::string* out) {
  if (!r.impact_measured()) {
    absl::StrAppendFormat(out, "  guest impact: blocktime %.1f ms; utilization not measured: %s\n",
                          r.blocktime_ms(), r.impact_note());
    return;
  }
  absl::StrAppendFormat(out,
                        "  guest impact: blocktime %.1f ms (vCPUs summed); below half speed "
                        "%.0f ms; min utilization %.2f over 10 ms, %.2f over 100 ms, %.2f "
                        "over 1 s\n",
                        r.blocktime_ms(), r.below_half_ms(), r.mgu_10ms(), r.mgu_100ms(),
                        r.mgu_1s());
  absl::StrAppendFormat(out,
                        "  baseline: %.0f ops/s over %.0f ms before the migration (there: "
                        "below half %.0f ms; min utilization %.2f over 10 ms, %.2f over 100 "
                        "ms)\n",
                        r.baseline_ops_per_sec(), r.baseline_window_ms(),
                        r.baseline_below_half_ms(), r.baseline_mgu_10ms(), r.baseline_mgu_100ms());
  if (r.precopy_ms() > 0)
    absl::StrAppendFormat(out,
                          "  during precopy: below half %.0f ms; min utilization %.2f / "
                          "%.2f / %.2f (10 ms / 100 ms / 1 s)\n",
                          r.precopy_below_half_ms(), r.precopy_mgu_10ms(), r.precopy_mgu_100ms(),
                          r.precopy_mgu_1s());
}

// Auto-converge, memory, pre-faulting and the digest, where there is any.
void AppendExtras(const MigrationReport& r, std::string* out) {
  if (r.auto_converge()) {
    absl::StrAppendFormat(out, "  auto-converge: the guest was throttled up to %u%%%s\n",
                          r.max_throttle_percent(),
                          r.max_throttle_percent() > 0 ? "" : " (never needed)");
    for (const ferry::v1::ThrottleChange& c : r.throttle_changes())
      absl::StrAppendFormat(out, "    at %.0f ms: throttle %u%% -> %u%%\n", c.time_ms(),
                            c.old_percent(), c.new_percent());
  }
  if (r.dst_rss_bytes() > 0)
    absl::StrAppendFormat(out,
                          "  memory: guest touched %.1f MiB; destination holds %.1f MiB (guest "
                          "%.1f + heap %.1f); source %.1f MiB after release\n",
                          r.guest_resident_bytes() / 1048576.0, r.dst_rss_bytes() / 1048576.0,
                          r.dst_guest_bytes() / 1048576.0, r.dst_heap_bytes() / 1048576.0,
                          r.src_rss_bytes() / 1048576.0);
  if (r.prefaulted_pages() > 0)
    absl::StrAppendFormat(out, "  pre-faulted %d pages (stage-2 faults the guest did not take)\n",
                          r.prefaulted_pages());
  if (r.has_digest_match())
    absl::StrAppendFormat(out, "  memory digest vs reference run: %s\n",
                          r.digest_match() ? "MATCH" : "MISMATCH");
}

}  // namespace

MigrationReport ReportOf(const ferry::v1::MigrationResource& migration) {
  MigrationReport report = migration.report();
  report.set_migration_id(migration.id());
  // A peer's figures, bounded to what a throttle can be.
  report.set_max_throttle_percent(std::min<uint32_t>(report.max_throttle_percent(), 100));
  for (ferry::v1::ThrottleChange& c : *report.mutable_throttle_changes()) {
    c.set_old_percent(std::min<uint32_t>(c.old_percent(), 100));
    c.set_new_percent(std::min<uint32_t>(c.new_percent(), 100));
  }
  return report;
}

JsonObject ReportJson(const MigrationReport& report) { return ProtoToJson(report); }

std::string ReportText(const MigrationReport& r) {
  std::string out = absl::StrFormat("migration %s: %s\n", r.migration_id(), r.outcome());
  AppendSetup(r, &out);
  AppendTimes(r, &out);
  AppendPages(r, &out);
  AppendImpact(r, &out);
  AppendExtras(r, &out);
  return out;
}

std::vector<JsonObject> PhaseTimingsJson(const PhaseTimings& timings) {
  std::vector<JsonObject> out;
  for (const ferry::v1::PhaseTiming& t : timings) out.push_back(ProtoToJson(t));
  return out;
}

std::string PhaseTimingsText(const PhaseTimings& timings) {
  std::string out;
  for (const ferry::v1::PhaseTiming& t : timings)
    absl::StrAppendFormat(&out, "  phase %-15s %s to %s (%.0f ms)\n", api::Spelling(t.phase()),
                          absl::FormatTime("%H:%M:%E3S", absl::FromUnixMillis(t.start_unix_ms()),
                                           absl::LocalTimeZone()),
                          absl::FormatTime("%H:%M:%E3S", absl::FromUnixMillis(t.end_unix_ms()),
                                           absl::LocalTimeZone()),
                          t.duration_ms());
  return out;
}

}  // namespace ferry::migration
