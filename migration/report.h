// MigrationReport: how a migration went, produced by the source session at
// the end (and as one JSON object). Times in ms, latencies in us.
#ifndef FERRY_MIGRATION_REPORT_H_
#define FERRY_MIGRATION_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/json.h"

namespace ferry::migration {

// Guest throughput in one 100 ms window, on the source clock.
struct OpsSample {
  double t_ms = 0;  // since the migration started
  double ops_per_sec = 0;
  std::string phase;
};

// One change of the guest's throttle by auto-converge.
struct ThrottleChange {
  double time_ms = 0;  // since the migration started
  int old_percent = 0;
  int new_percent = 0;  // 0: released (switchover, or the migration ended)
  std::string reason;
};

// One phase of one side of a migration, on that agent's wall clock
// (PhaseTimeline records them). The phases of a report are contiguous: each
// ends when the next starts.
struct PhaseTiming {
  std::string phase;  // as operators read it: "setup", "precopy", ...
  int64_t start_unix_ms = 0;
  int64_t end_unix_ms = 0;
  double duration_ms = 0;
};

// [{"phase": ..., "start_unix_ms": ..., "end_unix_ms": ..., "duration_ms": ...}, ...]
std::vector<JsonObject> PhaseTimingsJson(const std::vector<PhaseTiming>& timings);
// One line per phase: "  phase precopy: 10:00:00.120 to 10:00:01.500 (1380 ms)".
std::string PhaseTimingsText(const std::vector<PhaseTiming>& timings);

struct MigrationReport {
  std::string migration_id;
  std::string mode;
  std::string fault_mode;         // what the destination ran
  std::string fault_mode_reason;  // why (it may differ from what was asked)
  std::string backend;            // soft or kvm
  uint64_t memory_bytes = 0;
  int vcpus = 0;
  std::string workload;
  std::string outcome;  // "completed", or why not

  double total_ms = 0;
  double downtime_ms = 0;
  double setup_ms = 0;
  double precopy_ms = 0;
  double switchover_ms = 0;       // pause to Resumed
  double dest_switchover_ms = 0;  // destination: Switchover received to vCPUs running
  double postcopy_ms = 0;
  int precopy_rounds = 0;
  double precopy_gbps = 0;  // precopy page bytes over precopy time
  std::string switchover_reason;

  uint64_t bytes_sent = 0;    // page bytes on the migration stream and the fetch channel
  uint64_t pages_sent = 0;    // data pages sent (all channels)
  uint64_t pages_resent = 0;  // data pages sent more than once
  uint64_t zero_pages = 0;    // pages sent as zero-bitmap bits
  uint64_t pages_pushed = 0;  // postcopy push
  uint64_t pages_demand = 0;  // served on the fetch channel
  uint64_t pages_discarded = 0;
  uint64_t pages_held_back = 0;  // hot pages a precopy round did not resend
  // Page bytes on the wire by phase (data pages and zero bitmaps).
  uint64_t bytes_precopy = 0;
  uint64_t bytes_stop_and_copy = 0;
  uint64_t bytes_push = 0;
  uint64_t bytes_demand = 0;

  uint64_t faults = 0;
  double fault_p50_us = 0;
  double fault_p99_us = 0;
  double fault_p999_us = 0;
  double fault_max_us = 0;
  double max_vcpu_stall_ms = 0;
  double fetch_rtt_p50_us = 0;
  double fetch_rtt_p99_us = 0;
  uint64_t prefaulted_pages = 0;  // KVM: stage-2 faults pre-faulting saved
  std::string dirty_log;          // what tracked writes on the source
  std::string destination_paths;  // the destination's demand-paging paths

  // Memory, once the migration completed. guest_resident_bytes: the pages
  // the guest has touched: the source's allocated guest memory at the pause,
  // or the destination's at completion when larger (the guest went on
  // touching pages; the destination allocates no page the guest did not
  // hold: zero pages sent stay unallocated).
  // *_rss_bytes: an agent's guest memory plus its anonymous resident memory
  // (heap), after it returned freed heap; the source's guest memory is gone
  // by then. The destination's figure is split in dst_guest_bytes and
  // dst_heap_bytes.
  uint64_t guest_resident_bytes = 0;
  uint64_t src_rss_bytes = 0;
  uint64_t dst_rss_bytes = 0;
  uint64_t dst_guest_bytes = 0;
  uint64_t dst_heap_bytes = 0;
  uint64_t dst_zero_for_reads_bytes = 0;  // of dst_guest_bytes: zero pages a read allocated

  // Guest impact (guest_impact.h; docs/benchmarks.md, "Guest impact").
  // blocktime: time vCPUs waited on missing pages at the destination,
  // summed over vCPUs, and per vCPU.
  double blocktime_ms = 0;
  std::vector<double> blocktime_ms_per_vcpu;
  bool impact_measured = false;
  std::string impact_note;  // why the figures below were not measured
  double baseline_ops_per_sec = 0;
  double baseline_window_ms = 0;
  // The figures over the baseline window (no migration yet): the noise floor.
  double baseline_below_half_ms = 0;
  double baseline_mgu_10ms = 0;
  double baseline_mgu_100ms = 0;
  // Postcopy recovery: times the migration stream was re-established.
  uint32_t reconnects = 0;
  double below_half_ms = 0;  // start to end of the migration
  double mgu_10ms = 0;
  double mgu_100ms = 0;
  double mgu_1s = 0;
  double precopy_below_half_ms = 0;  // the precopy phase only
  double precopy_mgu_10ms = 0;
  double precopy_mgu_100ms = 0;
  double precopy_mgu_1s = 0;
  std::vector<double> mgu_curve_window_ms;  // the minimum-utilization curve
  std::vector<double> mgu_curve;

  // Auto-converge: whether it was on, the highest throttle the guest ran
  // under (0: never throttled; the guest-impact figures above include what
  // it cost), and each change.
  bool auto_converge = false;
  int max_throttle_percent = 0;
  std::vector<ThrottleChange> throttle_changes;

  std::vector<OpsSample> ops_timeline;
  std::optional<bool> digest_match;  // set by whoever verified the guest
  // This side's phases, in order; the final phase is not listed.
  std::vector<PhaseTiming> phase_timings;

  JsonObject ToJson() const;
  // A human-readable multi-line summary.
  std::string ToText() const;
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_REPORT_H_
