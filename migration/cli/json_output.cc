#include "migration/cli/json_output.h"

#include <vector>

#include "migration/api/names.h"
#include "migration/report.h"

namespace ferry::cli {
namespace {

bool Ended(ferry::v1::MigrationPhase p) {
  return p == ferry::v1::MIGRATION_PHASE_COMPLETED || p == ferry::v1::MIGRATION_PHASE_FAILED ||
         p == ferry::v1::MIGRATION_PHASE_CANCELLED;
}

JsonObject WorkloadJson(const ferry::v1::WorkloadSpec& w) {
  JsonObject o;
  o.Add("kind", api::Spelling(w.kind()))
      .Add("ops_per_vcpu", w.ops_per_vcpu())
      .Add("seed", w.seed())
      .Add("zero_fraction", w.zero_fraction())
      .Add("dirty_bytes_per_sec", w.dirty_bytes_per_sec())
      .Add("write_fraction", w.write_fraction())
      .Add("hot_fraction", w.hot_fraction())
      .Add("hot_access_fraction", w.hot_access_fraction());
  return o;
}

}  // namespace

JsonObject MigrationJson(const ferry::v1::MigrationResource& m) {
  const auto& p = m.progress();
  JsonObject progress;
  progress.Add("round", static_cast<uint64_t>(p.round()))
      .Add("elapsed_ms", p.elapsed_ms())
      .Add("percent", p.percent())
      .Add("eta_ms", p.eta_ms())
      .Add("pages_total", p.pages_total())
      .Add("pages_transferred", p.pages_transferred())
      .Add("pages_remaining", p.pages_remaining())
      .Add("bytes_sent", p.bytes_sent())
      .Add("bandwidth_bytes_per_sec", p.bandwidth_bytes_per_sec())
      .Add("dirty_pages_per_sec", p.dirty_pages_per_sec())
      .Add("faults", p.faults())
      .Add("faults_per_sec", p.faults_per_sec())
      .Add("downtime_ms", p.downtime_ms())
      .Add("fault_p99_us", p.fault_p99_us())
      .Add("reconnects", static_cast<uint64_t>(p.reconnects()))
      .Add("paused_reason", p.paused_reason())
      .Add("max_bandwidth", p.max_bandwidth())
      .Add("downtime_target_ms", static_cast<int64_t>(p.downtime_target_ms()))
      .Add("streams", static_cast<int>(p.streams()))
      .Add("throttle_percent", static_cast<uint64_t>(p.throttle_percent()));
  JsonObject o;
  o.Add("id", m.id())
      .Add("request_id", m.request_id())
      .Add("vm_name", m.vm_name())
      .Add("direction", m.direction().empty() ? std::string("outgoing") : m.direction())
      .Add("source", m.source())
      .Add("destination", m.destination())
      .Add("mode", m.mode() ? api::Spelling(m.mode()) : std::string())
      .Add("fault_mode", m.fault_mode() ? api::Spelling(m.fault_mode()) : std::string())
      .Add("phase", api::Spelling(m.phase()))
      .Add("start_time_unix_ms", static_cast<int64_t>(m.start_time_unix_ms()))
      .Add("end_time_unix_ms", static_cast<int64_t>(m.end_time_unix_ms()))
      .Add("error", m.error())
      .Add("error_code", api::ErrorCodeName(m.error_code()))
      .Add("progress", progress);
  if (Ended(m.phase()) && m.has_report() && m.direction() == "incoming") {
    // The destination's record: its own phase timings only.
    JsonObject report;
    report.Add("migration_id", m.id())
        .Add("phase_timings", migration::PhaseTimingsJson(m.report().phase_timings()));
    o.Add("report", report);
  } else if (Ended(m.phase()) && m.has_report()) {
    o.Add("report", migration::ReportJson(migration::ReportOf(m)));
  }
  return o;
}

namespace {

// A memory map's regions: [{"name", "gpa", "size_bytes"}, ...].
std::vector<JsonObject> RegionsJson(
    const google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion>& regions) {
  std::vector<JsonObject> out;
  for (const ferry::v1::MemoryRegion& r : regions) {
    JsonObject o;
    o.Add("name", r.name()).Add("gpa", r.gpa()).Add("size_bytes", r.size());
    out.push_back(o);
  }
  return out;
}

}  // namespace

JsonObject VmJson(const ferry::v1::Vm& v) {
  JsonObject o;
  o.Add("name", v.name())
      .Add("state", api::Spelling(v.state()))
      .Add("memory_bytes", v.layout().memory_bytes())
      .Add("vcpus", static_cast<uint64_t>(v.layout().vcpus()))
      .Add("backend", api::Spelling(v.layout().backend()))
      .Add("backend_reason", v.backend_reason())
      .Add("backend_capabilities", v.backend_capabilities())
      .Add("workload", WorkloadJson(v.layout().workload()))
      .Add("guest_ops", v.guest_ops())
      .Add("migration_id", v.migration_id())
      .Add("arrived_by", v.arrived_by())
      .Add("source", v.source())
      .Add("pages_missing", v.pages_missing())
      .Add("held_by", v.held_by())
      .Add("held_reason", v.held_reason())
      .Add("restored_from", v.restored_from())
      .Add("restore_mode", v.restore_mode())
      .Add("restore_fault_mode", v.restore_fault_mode())
      .Add("restore_ms", v.restore_ms())
      .Add("error", v.error())
      .Add("regions", RegionsJson(v.regions()))
      .Add("max_memory_bytes", v.max_memory_bytes())
      .Add("memory_changes", static_cast<uint64_t>(v.memory_changes()));
  return o;
}

JsonObject MemoryChangeJson(const std::string& name, const ferry::v1::ChangeVmMemoryResponse& r) {
  JsonObject o;
  o.Add("name", name)
      .Add("regions", RegionsJson(r.regions()))
      .Add("memory_bytes", r.memory_bytes())
      .Add("held_off_us", r.held_off_us())
      .Add("apply_us", r.apply_us())
      .Add("slots_kept", static_cast<uint64_t>(r.slots_kept()))
      .Add("slots_recreated", static_cast<uint64_t>(r.slots_recreated()))
      .Add("slots_created", static_cast<uint64_t>(r.slots_created()))
      .Add("slots_deleted", static_cast<uint64_t>(r.slots_deleted()))
      .Add("stage2_bytes_dropped", r.stage2_bytes_dropped())
      .Add("slots_resized", static_cast<uint64_t>(r.slots_resized()));
  return o;
}

JsonObject SnapshotJson(const ferry::v1::SnapshotVmResponse& s) {
  JsonObject o;
  o.Add("vm", VmJson(s.vm()))
      .Add("dir", s.dir())
      .Add("memory_bytes", s.memory_bytes())
      .Add("data_pages", s.data_pages())
      .Add("zero_pages", s.zero_pages())
      .Add("guest_ops", s.guest_ops())
      .Add("write_ms", s.write_ms())
      .Add("paused_ms", s.paused_ms())
      .Add("live", s.rounds() > 0)
      .Add("rounds", static_cast<uint64_t>(s.rounds()))
      .Add("pages_written", s.pages_written())
      .Add("memory_digest", s.memory_digest());
  return o;
}

JsonObject VmStatsJson(const ferry::v1::VmStatsResponse& s) {
  std::vector<JsonObject> vcpus;
  for (const auto& c : s.vcpus()) {
    JsonObject v;
    v.Add("index", static_cast<uint64_t>(c.index()))
        .Add("state", c.state())
        .Add("ops", c.ops())
        .Add("fault_exits", c.fault_exits());
    vcpus.push_back(v);
  }
  JsonObject o;
  o.Add("vm", VmJson(s.vm()))
      .Add("guest_ops_per_sec", s.guest_ops_per_sec())
      .Add("faults", s.faults())
      .Add("pages_missing", s.pages_missing())
      .Add("vcpus", vcpus);
  return o;
}

JsonObject VerifyJson(const std::string& name, const ferry::v1::VerifyVmResponse& v) {
  std::vector<double> ops(v.ops().begin(), v.ops().end());
  JsonObject o;
  o.Add("name", name)
      .Add("match", v.match())
      .Add("digest", v.digest())
      .Add("reference_digest", v.reference_digest())
      .Add("differing_pages", v.differing_pages())
      .Add("ops_per_vcpu", ops);
  return o;
}

JsonObject ErrorJson(const absl::Status& status, int exit_code) {
  JsonObject e;
  e.Add("code", api::ErrorCodeName(static_cast<int>(status.code())))
      .Add("exit_code", exit_code)
      .Add("message", std::string(status.message()));
  JsonObject o;
  o.Add("error", e);
  return o;
}

}  // namespace ferry::cli
