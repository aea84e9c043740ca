#include "migration/agent/control_translate.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/net.h"
#include "base/status_macros.h"
#include "migration/api/defaults.h"
#include "migration/convert.h"
#include "migration/phases.h"

namespace ferry::agent {

absl::StatusOr<migration::MigrationOptions> MigrationOptionsFromRequest(
    const ferry::v1::StartMigrationRequest& r, const std::string& auth_token) {
  migration::MigrationOptions o;
  if (r.mode() != ferry::v1::MIGRATION_MODE_UNSPECIFIED) {
    ASSIGN_OR_RETURN(o.mode, migration::FromProto(r.mode()));
  }
  if (r.fault_mode() != ferry::v1::FAULT_MODE_UNSPECIFIED) {
    ASSIGN_OR_RETURN(o.fault_mode, migration::FromProto(r.fault_mode()));
  }
  if (r.downtime_target_ms() < 0)
    return absl::InvalidArgumentError("downtime target must not be negative");
  if (r.downtime_target_ms() > 0) o.downtime_target_ms = r.downtime_target_ms();
  o.max_bandwidth = r.max_bandwidth();
  if (r.max_rounds() > 0) o.max_rounds = static_cast<int>(r.max_rounds());
  if (r.streams() > kMaxStreamsField)
    return absl::InvalidArgumentError(
        absl::StrCat("streams ", r.streams(), ": at most ", kMaxStreamsField));
  o.streams = static_cast<int>(r.streams());
  if (r.recovery_timeout_ms() < 0)
    return absl::InvalidArgumentError("recovery timeout must not be negative");
  if (r.recovery_timeout_ms() > 0) o.recovery_timeout_ms = r.recovery_timeout_ms();
  o.auto_converge = r.auto_converge();
  // Bounded before the narrowing (ValidateMigrationOptions says 1 to 99).
  for (auto [value, field] : {std::pair{r.throttle_initial(), &o.throttle_initial},
                              std::pair{r.throttle_step(), &o.throttle_step},
                              std::pair{r.throttle_max(), &o.throttle_max}})
    if (value > 0) *field = static_cast<int>(std::min<uint32_t>(value, 1000));
  o.auth_token = auth_token;
  RETURN_IF_ERROR(migration::ValidateMigrationOptions(o));
  RETURN_IF_ERROR(SplitHostPort(r.destination()).status());
  if (r.request_id().size() > kMaxRequestIdBytes)
    return absl::InvalidArgumentError(
        absl::StrCat("request id is longer than ", kMaxRequestIdBytes, " bytes"));
  return o;
}

ferry::v1::StartMigrationRequest RequestFromMigrationOptions(const migration::MigrationOptions& o,
                                                             const std::string& vm_name,
                                                             const std::string& destination) {
  ferry::v1::StartMigrationRequest r;
  r.set_vm_name(vm_name);
  r.set_destination(destination);
  r.set_mode(migration::ToProto(o.mode));
  r.set_fault_mode(migration::ToProto(o.fault_mode));
  r.set_downtime_target_ms(o.downtime_target_ms);
  r.set_max_bandwidth(o.max_bandwidth);
  r.set_max_rounds(o.max_rounds);
  r.set_streams(o.streams);
  r.set_recovery_timeout_ms(o.recovery_timeout_ms);
  r.set_auto_converge(o.auto_converge);
  r.set_throttle_initial(o.throttle_initial);
  r.set_throttle_step(o.throttle_step);
  r.set_throttle_max(o.throttle_max);
  return r;
}

absl::StatusOr<vmm::VmConfig> VmConfigFromRequest(const ferry::v1::CreateVmRequest& r,
                                                  std::string* backend_reason) {
  vmm::VmConfig config;
  config.memory_bytes = r.memory_bytes();
  // 0: the default (ResolveMaxMemory, against the agent's limit).
  config.max_memory_bytes = r.max_memory_bytes();
  config.vcpus = static_cast<int>(r.vcpus());
  ASSIGN_OR_RETURN(config.workload, migration::FromWorkload(r.workload()));
  // UNSPECIFIED is the default, soft (migration/api/defaults.h).
  std::string backend_name = api::kDefaultBackend;
  if (r.backend() == ferry::v1::VM_BACKEND_SOFT) {
    backend_name = "soft";
  } else if (r.backend() == ferry::v1::VM_BACKEND_KVM) {
    backend_name = "kvm";
  } else if (r.backend() == ferry::v1::VM_BACKEND_AUTO) {
    backend_name = "auto";
  } else if (r.backend() != ferry::v1::VM_BACKEND_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat("backend ", r.backend(), " is unknown"));
  }
  ASSIGN_OR_RETURN(auto backend, vmm::ResolveVmBackend(backend_name));
  config.backend = backend.first;
  if (config.memory_bytes % (2 << 20) != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory %d is not a multiple of 2 MiB (give e.g. 512M or 1G)", config.memory_bytes));
  RETURN_IF_ERROR(vmm::ValidateVmConfig(config));
  if (backend_reason != nullptr) *backend_reason = backend.second;
  return config;
}

ferry::v1::VmState VmStateOf(const vmm::VmStats& stats, bool migrating) {
  bool any_running = false, any_failed = false, all_halted = true;
  for (const auto& vc : stats.vcpus) {
    any_running |= vc.state == vmm::VcpuRunState::kRunning;
    any_failed |= vc.state == vmm::VcpuRunState::kFailed;
    all_halted &= vc.state == vmm::VcpuRunState::kFinished;
  }
  if (migrating) return ferry::v1::VM_STATE_MIGRATING;
  if (any_failed) return ferry::v1::VM_STATE_FAILED;
  if (all_halted) return ferry::v1::VM_STATE_HALTED;
  if (any_running) return ferry::v1::VM_STATE_RUNNING;
  return ferry::v1::VM_STATE_PAUSED;
}

void AddVcpuStats(const vmm::VmStats& stats, ferry::v1::VmStatsResponse* response) {
  for (size_t i = 0; i < stats.vcpus.size(); ++i) {
    ferry::v1::VcpuStats* v = response->add_vcpus();
    v->set_index(i);
    v->set_state(vmm::VcpuRunStateName(stats.vcpus[i].state));
    v->set_ops(stats.vcpus[i].counters.ops);
    v->set_fault_exits(stats.vcpus[i].counters.fault_exits);
  }
}

void FillProgress(const migration::SourceProgress& p, ferry::v1::MigrationProgress* pp) {
  pp->set_round(p.round);
  pp->set_elapsed_ms(p.elapsed_ms);
  pp->set_pages_total(p.pages_total);
  pp->set_pages_transferred(p.pages_transferred);
  pp->set_pages_remaining(p.pages_remaining);
  pp->set_bytes_sent(p.bytes_sent);
  pp->set_bandwidth_bytes_per_sec(p.bandwidth_bps);
  pp->set_dirty_pages_per_sec(p.dirty_pages_per_sec);
  pp->set_faults(p.faults);
  pp->set_faults_per_sec(p.faults_per_sec);
  pp->set_downtime_ms(p.downtime_ms);
  pp->set_fault_p99_us(p.fault_p99_us);
  pp->set_percent(p.percent);
  pp->set_eta_ms(p.eta_ms);
  pp->set_reconnects(p.reconnects);
  pp->set_paused_reason(p.paused_reason);
  pp->set_throttle_percent(static_cast<uint32_t>(p.throttle_percent));
}

void SetEnded(const absl::Status& result, absl::Time finished, ferry::v1::MigrationResource* r) {
  r->set_end_time_unix_ms(absl::ToUnixMillis(finished));
  ferry::v1::MigrationProgress* p = r->mutable_progress();
  if (result.ok()) {
    p->set_percent(100);
    p->set_eta_ms(0);
    return;
  }
  p->set_eta_ms(-1);
  r->set_error(std::string(result.message()));
  r->set_error_code(static_cast<int>(result.code()));
}

bool Arriving(const migration::DestinationSession::Info& in) {
  return migration::FactsOf(migration::PhaseOf(in.state)).under_way;
}

std::string PeerOf(const migration::DestinationSession::Info& in) {
  return in.source_agent.empty() ? in.source : in.source_agent;
}

ferry::v1::Vm DescribeIncomingVm(const migration::DestinationSession::Info& in) {
  ferry::v1::Vm v;
  v.set_name(in.vm_name);
  v.set_state(ferry::v1::VM_STATE_INCOMING);
  v.set_migration_id(in.migration_id);
  if (in.has_vm) *v.mutable_layout() = in.layout;
  v.mutable_layout()->set_memory_bytes(in.memory_bytes);
  v.mutable_layout()->set_vcpus(in.vcpus);
  v.set_backend_capabilities(in.backend_capabilities);
  v.set_guest_ops(in.vm_stats.total_ops);
  const bool postcopy = migration::InPostcopy(in.state);
  v.set_pages_missing(postcopy ? in.pages_missing : in.pages_total);
  v.set_source(PeerOf(in));
  return v;
}

ferry::v1::MigrationResource DescribeIncomingMigration(
    const migration::DestinationSession::Info& in) {
  ferry::v1::MigrationResource r;
  r.set_id(in.migration_id);
  r.set_vm_name(in.vm_name);
  r.set_direction("incoming");
  r.set_source(PeerOf(in));
  r.set_mode(in.mode);
  r.set_fault_mode(in.fault_mode);
  r.set_phase(migration::PhaseOf(in.state));
  ferry::v1::MigrationProgress* p = r.mutable_progress();
  p->set_pages_total(in.pages_total);
  p->set_pages_transferred(in.pages_installed);
  if (migration::InPostcopy(in.state)) {
    p->set_pages_remaining(in.pages_missing);
    p->set_faults(in.faults);
    p->set_percent(in.pages_total ? 100.0 * (in.pages_total - in.pages_missing) / in.pages_total
                                  : 0);
  }
  if (!migration::FactsOf(r.phase()).under_way) {
    // Once it ended: this side's own phase timings (the rest of the report
    // is the source's).
    *r.mutable_report()->mutable_phase_timings() = in.phase_timings;
    r.mutable_report()->set_migration_id(in.migration_id);
  }
  return r;
}

ferry::v1::VmStatsResponse IncomingVmStats(const migration::DestinationSession::Info& in) {
  ferry::v1::VmStatsResponse r;
  *r.mutable_vm() = DescribeIncomingVm(in);
  AddVcpuStats(in.vm_stats, &r);
  r.set_guest_ops_per_sec(in.guest_ops_per_sec);
  r.set_faults(in.faults);
  r.set_pages_missing(r.vm().pages_missing());
  return r;
}

}  // namespace ferry::agent
