#include "migration/api/report_proto.h"

#include <algorithm>
#include "migration/api/names.h"

namespace ferry::api {
namespace {

// The phase spelled `name` (api::Spelling); UNSPECIFIED if none is.
ferry::v1::MigrationPhase PhaseOfName(const std::string& name) {
  for (int p = 1; ferry::v1::MigrationPhase_IsValid(p); ++p)
    if (Spelling(static_cast<ferry::v1::MigrationPhase>(p)) == name)
      return static_cast<ferry::v1::MigrationPhase>(p);
  return ferry::v1::MIGRATION_PHASE_UNSPECIFIED;
}

}  // namespace

ferry::v1::MigrationReport ToProto(const migration::MigrationReport& r) {
  ferry::v1::MigrationReport p;
  p.set_mode(r.mode);
  p.set_fault_mode(r.fault_mode);
  p.set_fault_mode_reason(r.fault_mode_reason);
  p.set_backend(r.backend);
  p.set_prefaulted_pages(r.prefaulted_pages);
  p.set_dirty_log(r.dirty_log);
  p.set_destination_paths(r.destination_paths);
  p.set_memory_bytes(r.memory_bytes);
  p.set_vcpus(r.vcpus);
  p.set_workload(r.workload);
  p.set_outcome(r.outcome);
  p.set_total_ms(r.total_ms);
  p.set_downtime_ms(r.downtime_ms);
  p.set_dest_switchover_ms(r.dest_switchover_ms);
  p.set_precopy_rounds(r.precopy_rounds);
  p.set_precopy_gbps(r.precopy_gbps);
  p.set_bytes_sent(r.bytes_sent);
  p.set_pages_sent(r.pages_sent);
  p.set_pages_resent(r.pages_resent);
  p.set_zero_pages(r.zero_pages);
  p.set_pages_pushed(r.pages_pushed);
  p.set_pages_demand(r.pages_demand);
  p.set_pages_discarded(r.pages_discarded);
  p.set_pages_held_back(r.pages_held_back);
  p.set_guest_resident_bytes(r.guest_resident_bytes);
  p.set_src_rss_bytes(r.src_rss_bytes);
  p.set_dst_rss_bytes(r.dst_rss_bytes);
  p.set_dst_guest_bytes(r.dst_guest_bytes);
  p.set_dst_heap_bytes(r.dst_heap_bytes);
  p.set_dst_zero_for_reads_bytes(r.dst_zero_for_reads_bytes);
  p.set_blocktime_ms(r.blocktime_ms);
  p.set_baseline_mgu_100ms(r.baseline_mgu_100ms);
  p.set_reconnects(r.reconnects);
  p.set_auto_converge(r.auto_converge);
  p.set_max_throttle_percent(static_cast<uint32_t>(r.max_throttle_percent));
  for (const migration::ThrottleChange& c : r.throttle_changes) {
    ferry::v1::ThrottleChange* out = p.add_throttle_changes();
    out->set_time_ms(c.time_ms);
    out->set_old_percent(static_cast<uint32_t>(c.old_percent));
    out->set_new_percent(static_cast<uint32_t>(c.new_percent));
    out->set_reason(c.reason);
  }
  p.set_baseline_mgu_10ms(r.baseline_mgu_10ms);
  p.set_baseline_below_half_ms(r.baseline_below_half_ms);
  p.set_impact_measured(r.impact_measured);
  p.set_impact_note(r.impact_note);
  p.set_baseline_ops_per_sec(r.baseline_ops_per_sec);
  p.set_baseline_window_ms(r.baseline_window_ms);
  p.set_below_half_ms(r.below_half_ms);
  p.set_mgu_10ms(r.mgu_10ms);
  p.set_mgu_100ms(r.mgu_100ms);
  p.set_mgu_1s(r.mgu_1s);
  p.set_precopy_below_half_ms(r.precopy_below_half_ms);
  p.set_precopy_mgu_10ms(r.precopy_mgu_10ms);
  p.set_precopy_mgu_100ms(r.precopy_mgu_100ms);
  p.set_precopy_mgu_1s(r.precopy_mgu_1s);
  for (double ms : r.blocktime_ms_per_vcpu) p.add_blocktime_ms_per_vcpu(ms);
  for (double w : r.mgu_curve_window_ms) p.add_mgu_curve_window_ms(w);
  for (double u : r.mgu_curve) p.add_mgu_curve(u);
  p.set_faults(r.faults);
  p.set_fault_p50_us(r.fault_p50_us);
  p.set_fault_p99_us(r.fault_p99_us);
  p.set_fault_max_us(r.fault_max_us);
  p.set_max_vcpu_stall_ms(r.max_vcpu_stall_ms);
  p.set_switchover_reason(r.switchover_reason);
  p.set_setup_ms(r.setup_ms);
  p.set_precopy_ms(r.precopy_ms);
  p.set_postcopy_ms(r.postcopy_ms);
  p.set_fault_p999_us(r.fault_p999_us);
  p.set_fetch_rtt_p50_us(r.fetch_rtt_p50_us);
  p.set_fetch_rtt_p99_us(r.fetch_rtt_p99_us);
  p.set_bytes_precopy(r.bytes_precopy);
  p.set_bytes_stop_and_copy(r.bytes_stop_and_copy);
  p.set_bytes_push(r.bytes_push);
  p.set_bytes_demand(r.bytes_demand);
  for (const auto& s : r.ops_timeline) {
    p.add_timeline_t_ms(s.t_ms);
    p.add_timeline_ops_per_sec(s.ops_per_sec);
    p.add_timeline_phase(s.phase);
  }
  for (const migration::PhaseTiming& t : r.phase_timings) {
    ferry::v1::PhaseTiming* out = p.add_phase_timings();
    out->set_phase(PhaseOfName(t.phase));
    out->set_start_unix_ms(t.start_unix_ms);
    out->set_end_unix_ms(t.end_unix_ms);
    out->set_duration_ms(t.duration_ms);
  }
  return p;
}

migration::MigrationReport FromProto(const ferry::v1::MigrationReport& p,
                                     const std::string& migration_id) {
  migration::MigrationReport r;
  r.migration_id = migration_id;
  r.mode = p.mode();
  r.fault_mode = p.fault_mode();
  r.fault_mode_reason = p.fault_mode_reason();
  r.backend = p.backend();
  r.prefaulted_pages = p.prefaulted_pages();
  r.dirty_log = p.dirty_log();
  r.destination_paths = p.destination_paths();
  r.memory_bytes = p.memory_bytes();
  r.vcpus = static_cast<int>(p.vcpus());
  r.workload = p.workload();
  r.outcome = p.outcome();
  r.total_ms = p.total_ms();
  r.downtime_ms = p.downtime_ms();
  r.dest_switchover_ms = p.dest_switchover_ms();
  r.switchover_ms = p.downtime_ms();
  r.precopy_rounds = static_cast<int>(p.precopy_rounds());
  r.precopy_gbps = p.precopy_gbps();
  r.bytes_sent = p.bytes_sent();
  r.pages_sent = p.pages_sent();
  r.pages_resent = p.pages_resent();
  r.zero_pages = p.zero_pages();
  r.pages_pushed = p.pages_pushed();
  r.pages_demand = p.pages_demand();
  r.pages_discarded = p.pages_discarded();
  r.pages_held_back = p.pages_held_back();
  r.guest_resident_bytes = p.guest_resident_bytes();
  r.src_rss_bytes = p.src_rss_bytes();
  r.dst_rss_bytes = p.dst_rss_bytes();
  r.dst_guest_bytes = p.dst_guest_bytes();
  r.dst_heap_bytes = p.dst_heap_bytes();
  r.dst_zero_for_reads_bytes = p.dst_zero_for_reads_bytes();
  r.blocktime_ms = p.blocktime_ms();
  r.baseline_mgu_100ms = p.baseline_mgu_100ms();
  r.reconnects = p.reconnects();
  r.auto_converge = p.auto_converge();
  // A peer's figures, bounded to what a throttle can be.
  r.max_throttle_percent = static_cast<int>(std::min<uint32_t>(p.max_throttle_percent(), 100));
  for (const ferry::v1::ThrottleChange& c : p.throttle_changes())
    r.throttle_changes.push_back(
        {c.time_ms(), static_cast<int>(std::min<uint32_t>(c.old_percent(), 100)),
         static_cast<int>(std::min<uint32_t>(c.new_percent(), 100)), c.reason()});
  r.baseline_mgu_10ms = p.baseline_mgu_10ms();
  r.baseline_below_half_ms = p.baseline_below_half_ms();
  r.impact_measured = p.impact_measured();
  r.impact_note = p.impact_note();
  r.baseline_ops_per_sec = p.baseline_ops_per_sec();
  r.baseline_window_ms = p.baseline_window_ms();
  r.below_half_ms = p.below_half_ms();
  r.mgu_10ms = p.mgu_10ms();
  r.mgu_100ms = p.mgu_100ms();
  r.mgu_1s = p.mgu_1s();
  r.precopy_below_half_ms = p.precopy_below_half_ms();
  r.precopy_mgu_10ms = p.precopy_mgu_10ms();
  r.precopy_mgu_100ms = p.precopy_mgu_100ms();
  r.precopy_mgu_1s = p.precopy_mgu_1s();
  r.blocktime_ms_per_vcpu.assign(p.blocktime_ms_per_vcpu().begin(),
                                 p.blocktime_ms_per_vcpu().end());
  r.mgu_curve_window_ms.assign(p.mgu_curve_window_ms().begin(), p.mgu_curve_window_ms().end());
  r.mgu_curve.assign(p.mgu_curve().begin(), p.mgu_curve().end());
  r.faults = p.faults();
  r.fault_p50_us = p.fault_p50_us();
  r.fault_p99_us = p.fault_p99_us();
  r.fault_max_us = p.fault_max_us();
  r.max_vcpu_stall_ms = p.max_vcpu_stall_ms();
  r.switchover_reason = p.switchover_reason();
  r.setup_ms = p.setup_ms();
  r.precopy_ms = p.precopy_ms();
  r.postcopy_ms = p.postcopy_ms();
  r.fault_p999_us = p.fault_p999_us();
  r.fetch_rtt_p50_us = p.fetch_rtt_p50_us();
  r.fetch_rtt_p99_us = p.fetch_rtt_p99_us();
  r.bytes_precopy = p.bytes_precopy();
  r.bytes_stop_and_copy = p.bytes_stop_and_copy();
  r.bytes_push = p.bytes_push();
  r.bytes_demand = p.bytes_demand();
  for (int i = 0; i < p.timeline_t_ms_size(); ++i) {
    migration::OpsSample s;
    s.t_ms = p.timeline_t_ms(i);
    s.ops_per_sec = i < p.timeline_ops_per_sec_size() ? p.timeline_ops_per_sec(i) : 0;
    s.phase = i < p.timeline_phase_size() ? p.timeline_phase(i) : "";
    r.ops_timeline.push_back(s);
  }
  for (const ferry::v1::PhaseTiming& t : p.phase_timings())
    r.phase_timings.push_back(
        {Spelling(t.phase()), t.start_unix_ms(), t.end_unix_ms(), t.duration_ms()});
  return r;
}

}  // namespace ferry::api
