#include "migration/agent/agent.h"

#include "base/process.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/clock.h"
#include "base/net.h"
#include "base/log_line.h"
#include "base/status_macros.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"
#include "migration/agent/agent_metrics.h"
#include "base/version.h"
#include "migration/protocol.h"
#include "migration/agent/live_control.h"
#include "migration/api/report_proto.h"
#include "migration/convert.h"
#include "migration/phases.h"

namespace ferry::agent {
namespace {

// StartMigrationRequest.streams: checked here before it becomes an int.
constexpr uint32_t kMaxStreamsField = 8;

using ferry::v1::MigrationPhase;

absl::Status ValidateName(const std::string& name) { return api::ValidateVmName(name); }

// What differs between a migration and a new request (empty: nothing).
template <typename Entry>
std::string RequestDifference(const Entry& e, const std::string& vm_name,
                              const std::string& destination,
                              const migration::MigrationOptions& o) {
  std::vector<std::string> d;
  auto field = [&](const char* name, const std::string& was, const std::string& now) {
    if (was != now) d.push_back(absl::StrCat(name, " ", was, " (now ", now, ")"));
  };
  field("vm", e.vm_name, vm_name);
  field("destination", e.destination, destination);
  field("mode", migration::MigrationModeName(e.options.mode), migration::MigrationModeName(o.mode));
  field("fault mode", vmm::FaultModeName(e.options.fault_mode), vmm::FaultModeName(o.fault_mode));
  field("downtime target ms", absl::StrCat(e.options.downtime_target_ms),
        absl::StrCat(o.downtime_target_ms));
  field("max bandwidth", absl::StrCat(e.options.max_bandwidth), absl::StrCat(o.max_bandwidth));
  field("max rounds", absl::StrCat(e.options.max_rounds), absl::StrCat(o.max_rounds));
  field("streams", absl::StrCat(e.options.streams), absl::StrCat(o.streams));
  return absl::StrJoin(d, ", ");
}

MigrationPhase ToPhase(migration::SourcePhase p) { return migration::PhaseOf(p); }


}  // namespace

struct Agent::VmEntry {
  std::string name;
  std::unique_ptr<vmm::Vm> vm;
  std::string migration_id;  // outgoing, under way
  std::string arrived_by;
  std::string backend_reason;  // why this backend ("as asked", or what auto found)
  // A failed migration kept it paused (the destination may have run it):
  // which, and why. Not migrated again until resumed.
  std::string held_by;
  std::string held_reason;
  // Guest ops/s, between two VmStats calls; the first call's is over the
  // VM's life here (since it was created or arrived).
  absl::Mutex stats_mu;
  int64_t last_t = MonotonicNowNanos();
  uint64_t last_ops = 0;  // at last_t
  double last_rate = 0;
};

struct Agent::MigrationEntry {
  std::string id;
  std::string request_id;
  std::string vm_name;
  std::string destination;
  migration::MigrationOptions options;
  std::unique_ptr<migration::SourceSession> session;
  std::thread thread;
  absl::Time started = absl::Now();  // wall clock, for the resource
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Time finished ABSL_GUARDED_BY(mu);
  absl::Status result ABSL_GUARDED_BY(mu);
  migration::MigrationReport report ABSL_GUARDED_BY(mu);
};

std::string Agent::RenderMetrics() { return metrics_->Render(ListVms(), ListMigrations()); }

absl::StatusOr<std::unique_ptr<Agent>> Agent::Start(AgentOptions options) {
  ASSIGN_OR_RETURN(auto hp, SplitHostPort(options.fetch_listen));
  std::string host = options.fetch_advertise_host.empty() ? hp.first
                                                          : options.fetch_advertise_host;
  if (host.empty() || host == "0.0.0.0" || host == "::")
    return absl::InvalidArgumentError(
        "--fetch-listen binds every address: give --fetch-advertise HOST, the address "
        "destinations use to reach this agent");
  std::unique_ptr<Agent> agent(new Agent(std::move(options)));
  ASSIGN_OR_RETURN(agent->page_server_,
                   migration::fetch::PageServer::Start(agent->options_.fetch_listen));
  agent->fetch_address_ = host.find(':') != std::string::npos
                              ? absl::StrCat("[", host, "]:", agent->page_server_->port())
                              : absl::StrCat(host, ":", agent->page_server_->port());
  migration::DestinationOptions dest;
  dest.expected_token = agent->options_.migration_token;
  dest.fault_handlers = agent->options_.fault_handlers;
  Agent* raw = agent.get();
  dest.admit = [raw](const std::string& id, const std::string& source, const std::string& name,
                     const vmm::VmConfig& c) { return raw->Admit(id, source, name, c); };
  dest.release = [raw](const std::string& id, const std::string& name, const absl::Status& why) {
    raw->Release(id, name, why);
  };
  dest.refused = [raw](const std::string& claimed_id, const absl::Status& why) {
    raw->Log(LogLine(why.code() == absl::StatusCode::kUnauthenticated ? LogLevel::kWarn
                                                                         : LogLevel::kInfo,
                     "migration.refused")
                 .Kv("direction", "incoming")
                 .Kv("migration", claimed_id)
                 .Kv("code", absl::StatusCodeToString(why.code()))
                 .Kv("reason", why.message()));
  };
  dest.paused = [raw](const std::string& id, const std::string& why) {
    raw->Log(LogLine(why.empty() ? LogLevel::kInfo : LogLevel::kWarn,
                why.empty() ? "migration.recovered" : "migration.paused")
            .Kv("direction", "incoming")
            .Kv("migration", id)
            .Kv("detail", why.empty() ? "the source reconnected" : why));
  };
  dest.on_end = [raw](const std::string& id, bool completed, const vmm::DemandPagerStats& pager,
                      const migration::fetch::FetcherStats& fetch) {
    raw->metrics_->RecordIncoming(id, completed, pager, fetch);
  };
  agent->migration_service_ = std::make_unique<migration::MigrationService>(
      dest, [raw](const std::string& id, const std::string& name, std::unique_ptr<vmm::Vm> vm) {
        raw->Adopt(id, name, std::move(vm));
      });
  return agent;
}

Agent::Agent(AgentOptions options)
    : metrics_(std::make_unique<AgentMetrics>()), options_(std::move(options)) {}

Agent::~Agent() {
  std::vector<std::shared_ptr<MigrationEntry>> all;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto& [id, m] : migrations_) all.push_back(m);
  }
  for (auto& m : all) {
    (void)m->session->Cancel();
    if (m->thread.joinable()) m->thread.join();
  }
  // The VMs still here end with the agent: say so, one line each.
  absl::MutexLock lock(&mu_);
  for (auto& [name, e] : vms_) {
    Log(LogLine(LogLevel::kWarn, "vm.destroyed").Kv("vm", name).Kv("reason", "agent stopped"));
    if (e->vm) e->vm->Stop();
  }
  vms_.clear();
}

void Agent::Log(const LogLine& line) const {
  if (options_.log) options_.log(line.str());
}

uint64_t Agent::MemoryInUseLocked() const {
  uint64_t total = 0;
  for (const auto& [n, e] : vms_)
    if (e->vm) total += e->vm->config().memory_bytes;
  for (const auto& [n, bytes] : reserved_) total += bytes;
  return total;
}

absl::StatusOr<std::shared_ptr<Agent::VmEntry>> Agent::FindVm(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = vms_.find(name);
  if (it == vms_.end()) {
    // An arriving VM is listed (state incoming) but not yet this agent's.
    if (reserved_.count(name))
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", name, "' is arriving by a migration: it is this agent's once it arrived"));
    return absl::NotFoundError(
        absl::StrCat("no VM named '", name, "' on this agent (see `ferry vm list`)"));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<Agent::MigrationEntry>> Agent::FindMigration(
    const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = migrations_.find(id);
  if (it == migrations_.end())
    return absl::NotFoundError(absl::StrCat(
        "no migration '", id, "' on this agent (migrations live on their source agent; "
        "see `ferry migration list`)"));
  return it->second;
}

ferry::v1::Vm Agent::Describe(const VmEntry& e) const {
  // What migrations change, read under the registry's lock.
  std::string migration_id, held_by, held_reason;
  {
    absl::MutexLock lock(&mu_);
    migration_id = e.migration_id;
    held_by = e.held_by;
    held_reason = e.held_reason;
  }
  ferry::v1::Vm v;
  v.set_name(e.name);
  v.set_migration_id(migration_id);
  v.set_arrived_by(e.arrived_by);
  v.set_held_by(held_by);
  v.set_held_reason(held_reason);
  const vmm::VmConfig& c = e.vm->config();
  *v.mutable_layout() = migration::ToLayout(c, e.vm->memory().map());
  v.set_backend_capabilities(e.vm->BackendCapabilities());
  v.set_backend_reason(e.backend_reason);
  vmm::VmStats s = e.vm->Stats();
  v.set_guest_ops(s.total_ops);
  bool any_running = false, any_failed = false, all_halted = true;
  for (const auto& vc : s.vcpus) {
    any_running |= vc.state == vmm::VcpuRunState::kRunning;
    any_failed |= vc.state == vmm::VcpuRunState::kFailed;
    all_halted &= vc.state == vmm::VcpuRunState::kFinished;
  }
  if (!migration_id.empty()) v.set_state(ferry::v1::VM_STATE_MIGRATING);
  else if (any_failed) v.set_state(ferry::v1::VM_STATE_FAILED);
  else if (all_halted) v.set_state(ferry::v1::VM_STATE_HALTED);
  else if (any_running) v.set_state(ferry::v1::VM_STATE_RUNNING);
  else v.set_state(ferry::v1::VM_STATE_PAUSED);
  return v;
}

absl::StatusOr<ferry::v1::Vm> Agent::CreateVm(const ferry::v1::CreateVmRequest& r) {
  RETURN_IF_ERROR(ValidateName(r.name()));
  vmm::VmConfig config;
  config.memory_bytes = r.memory_bytes();
  config.vcpus = static_cast<int>(r.vcpus());
  ASSIGN_OR_RETURN(config.workload, migration::FromWorkload(r.workload()));
  // UNSPECIFIED is the default, soft (migration/api/defaults.h).
  std::string backend_name = api::kDefaultBackend;
  if (r.backend() == ferry::v1::VM_BACKEND_SOFT) backend_name = "soft";
  else if (r.backend() == ferry::v1::VM_BACKEND_KVM) backend_name = "kvm";
  else if (r.backend() == ferry::v1::VM_BACKEND_AUTO) backend_name = "auto";
  else if (r.backend() != ferry::v1::VM_BACKEND_UNSPECIFIED)
    return absl::InvalidArgumentError(absl::StrCat("backend ", r.backend(), " is unknown"));
  ASSIGN_OR_RETURN(auto backend, vmm::ResolveVmBackend(backend_name));
  config.backend = backend.first;
  if (config.memory_bytes % (2 << 20) != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory %d is not a multiple of 2 MiB (give e.g. 512M or 1G)", config.memory_bytes));
  RETURN_IF_ERROR(vmm::ValidateVmConfig(config));
  auto entry = std::make_shared<VmEntry>();
  entry->name = r.name();
  entry->backend_reason = backend.second;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_)
      return absl::UnavailableError("this agent is shutting down: create the VM elsewhere");
    if (vms_.count(r.name()) || reserved_.count(r.name()))
      return absl::AlreadyExistsError(
          absl::StrCat("a VM named '", r.name(), "' already exists on this agent"));
    if (static_cast<int>(vms_.size() + reserved_.size()) >= options_.max_vms)
      return absl::ResourceExhaustedError(absl::StrFormat(
          "this agent already hosts its limit of %d VMs (--max-vms)", options_.max_vms));
    if (MemoryInUseLocked() + config.memory_bytes > options_.max_memory)
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%d MiB more would exceed this agent's memory limit of %d MiB (--max-memory)",
          config.memory_bytes >> 20, options_.max_memory >> 20));
    reserved_[r.name()] = config.memory_bytes;
  }
  auto release = [&] {
    absl::MutexLock lock(&mu_);
    reserved_.erase(r.name());
  };
  auto vm = vmm::Vm::Create(config);
  absl::Status s = vm.status();
  if (s.ok()) s = (*vm)->LoadInitialMemory();
  if (s.ok()) s = (*vm)->Start();
  if (!s.ok()) {
    release();
    return s;
  }
  entry->vm = std::move(vm).value();
  {
    absl::MutexLock lock(&mu_);
    reserved_.erase(r.name());
    vms_[r.name()] = entry;
  }
  Log(LogLine(LogLevel::kInfo, "vm.created")
          .Kv("vm", r.name())
          .Kv("memory_mib", config.memory_bytes >> 20)
          .Kv("vcpus", config.vcpus)
          .Kv("workload", vmm::WorkloadKindName(config.workload.kind))
          .Kv("backend", vmm::VmBackendName(config.backend))
          .Kv("backend_reason", backend.second)
          .Kv("capabilities", config.backend == vmm::VmBackend::kKvm
                                  ? entry->vm->BackendCapabilities()
                                  : std::string()));
  return Describe(*entry);
}

void Agent::set_control_address(const std::string& address) {
  absl::MutexLock lock(&address_mu_);
  control_address_ = address;
}

std::string Agent::control_address() const {
  absl::MutexLock lock(&address_mu_);
  return control_address_;
}

namespace {

// Arriving VMs: migrations to this agent that have not ended.
bool Arriving(const migration::DestinationSession::Info& in) {
  return migration::FactsOf(migration::PhaseOf(in.state)).under_way;
}

// The peer of an incoming migration as operators know it: the source
// agent's Control address, else (an older source) its fetch address.
std::string PeerOf(const migration::DestinationSession::Info& in) {
  return in.source_agent.empty() ? in.source : in.source_agent;
}

ferry::v1::Vm DescribeIncoming(const migration::DestinationSession::Info& in) {
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

}  // namespace

std::vector<ferry::v1::Vm> Agent::IncomingVms() const {
  std::vector<ferry::v1::Vm> out;
  for (const migration::DestinationSession::Info& in : migration_service_->Incoming())
    if (Arriving(in)) out.push_back(DescribeIncoming(in));  // else adopted or gone
  return out;
}

absl::StatusOr<ferry::v1::Vm> Agent::GetVm(const std::string& name) {
  absl::StatusOr<std::shared_ptr<VmEntry>> e = FindVm(name);
  if (e.ok()) return Describe(**e);
  for (ferry::v1::Vm& v : IncomingVms())
    if (v.name() == name) return v;
  return e.status();
}

std::vector<ferry::v1::Vm> Agent::ListVms() {
  std::vector<std::shared_ptr<VmEntry>> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [n, e] : vms_) all.push_back(e);
  }
  std::vector<ferry::v1::Vm> out;
  for (auto& e : all) out.push_back(Describe(*e));
  for (ferry::v1::Vm& v : IncomingVms()) out.push_back(std::move(v));
  return out;
}

absl::Status Agent::DeleteVm(const std::string& name) {
  std::shared_ptr<VmEntry> e;
  {
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(name);
    if (it == vms_.end() && reserved_.count(name))
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", name, "' is arriving by a migration: it can be deleted once it arrived"));
    if (it == vms_.end())
      return absl::NotFoundError(absl::StrCat("no VM named '", name, "' on this agent"));
    if (!it->second->migration_id.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", name, "' is being migrated (", it->second->migration_id,
          "): cancel the migration first"));
    e = it->second;
    vms_.erase(it);
  }
  e->vm->Stop();
  Log(LogLine(LogLevel::kInfo, "vm.deleted").Kv("vm", name));
  return absl::OkStatus();
}

absl::StatusOr<ferry::v1::VmStatsResponse> Agent::VmStats(const std::string& name) {
  absl::StatusOr<std::shared_ptr<VmEntry>> found = FindVm(name);
  if (!found.ok()) {
    // A VM arriving here: what it does so far (in postcopy it runs here).
    for (const migration::DestinationSession::Info& in : migration_service_->Incoming()) {
      if (!Arriving(in) || in.vm_name != name) continue;
      ferry::v1::VmStatsResponse r;
      *r.mutable_vm() = DescribeIncoming(in);
      for (size_t i = 0; i < in.vm_stats.vcpus.size(); ++i) {
        ferry::v1::VcpuStats* v = r.add_vcpus();
        v->set_index(i);
        v->set_state(vmm::VcpuRunStateName(in.vm_stats.vcpus[i].state));
        v->set_ops(in.vm_stats.vcpus[i].counters.ops);
        v->set_fault_exits(in.vm_stats.vcpus[i].counters.fault_exits);
      }
      r.set_guest_ops_per_sec(in.guest_ops_per_sec);
      r.set_faults(in.faults);
      r.set_pages_missing(r.vm().pages_missing());
      return r;
    }
    return found.status();
  }
  std::shared_ptr<VmEntry> e = *std::move(found);
  ferry::v1::VmStatsResponse r;
  *r.mutable_vm() = Describe(*e);
  vmm::VmStats s = e->vm->Stats();
  for (size_t i = 0; i < s.vcpus.size(); ++i) {
    ferry::v1::VcpuStats* v = r.add_vcpus();
    v->set_index(i);
    v->set_state(vmm::VcpuRunStateName(s.vcpus[i].state));
    v->set_ops(s.vcpus[i].counters.ops);
    v->set_fault_exits(s.vcpus[i].counters.fault_exits);
  }
  {
    absl::MutexLock lock(&e->stats_mu);
    const int64_t now = MonotonicNowNanos();
    if (e->last_t != 0 && now - e->last_t > 50'000'000)
      e->last_rate = (s.total_ops - e->last_ops) / ((now - e->last_t) / 1e9);
    if (e->last_t == 0 || now - e->last_t > 50'000'000) {
      e->last_t = now;
      e->last_ops = s.total_ops;
    }
    r.set_guest_ops_per_sec(e->last_rate);
  }
  if (e->vm->pager() != nullptr) {
    vmm::DemandPagerStats ps = e->vm->pager()->Stats();
    r.set_faults(ps.faults);
    r.set_pages_missing(ps.missing_pages);
  }
  return r;
}

absl::StatusOr<ferry::v1::VerifyVmResponse> Agent::VerifyVm(
    const ferry::v1::VerifyVmRequest& request) {
  ASSIGN_OR_RETURN(auto e, FindVm(request.name()));
  {
    absl::MutexLock lock(&mu_);  // migration_id is written under mu_
    if (!e->migration_id.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", request.name(), "' is being migrated: verify it where it arrives"));
  }
  vmm::Vm& vm = *e->vm;
  const bool finite = vm.config().workload.ops_per_vcpu != 0 && !vm.paused();
  bool paused_here = false;
  // The whole check within the timeout: waiting for a finite workload to
  // halt, and the replay, whose cost grows with the ops the guest has run
  // (an endless guest that ran too long is refused, saying so).
  const int64_t ms = request.timeout_ms() > 0 ? request.timeout_ms() : 60'000;
  const int64_t deadline = MonotonicNowNanos() + ms * 1'000'000;
  if (finite) {
    RETURN_IF_ERROR(vm.WaitUntilHalted(absl::Milliseconds(ms)));
  } else if (!vm.paused()) {  // a paused VM is checked as it is
    RETURN_IF_ERROR(vm.Pause());
    paused_here = true;
  }
  std::vector<uint64_t> ops;
  for (const auto& v : vm.Stats().vcpus) ops.push_back(v.counters.ops);
  absl::StatusOr<vmm::MemoryDigest> got = vm.Digest();
  if (paused_here) (void)vm.Resume();
  if (!got.ok()) return got.status();
  absl::StatusOr<vmm::MemoryDigest> want = vmm::ReferenceDigest(vm.config(), ops, deadline);
  if (absl::IsDeadlineExceeded(want.status()))
    return absl::DeadlineExceededError(absl::StrFormat(
        "cannot verify VM '%s' within %d ms: %s (a guest that runs until stopped is verified "
        "by replaying everything it did; verify it sooner, or give a longer --timeout-ms)",
        request.name(), ms, want.status().message()));
  if (!want.ok()) return want.status();
  ferry::v1::VerifyVmResponse r;
  r.set_match(got->digest == want->digest);
  r.set_digest(absl::StrFormat("%016x", got->digest));
  r.set_reference_digest(absl::StrFormat("%016x", want->digest));
  for (uint64_t o : ops) r.add_ops(o);
  r.set_differing_pages(vmm::DifferingPages(*got, *want).size());
  Log(LogLine(r.match() ? LogLevel::kInfo : LogLevel::kError, "vm.verified")
          .Kv("vm", request.name())
          .Kv("result", r.match() ? "match" : "mismatch")
          .Kv("differing_pages", static_cast<uint64_t>(r.differing_pages())));
  return r;
}

absl::Status Agent::Admit(const std::string& migration_id, const std::string& source,
                          const std::string& name, const vmm::VmConfig& config) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(ValidateName(name));
    absl::MutexLock lock(&mu_);
    if (shutting_down_)
      return absl::UnavailableError("the destination agent is shutting down");
    if (vms_.count(name) || reserved_.count(name))
      return absl::AlreadyExistsError(
          absl::StrCat("the destination already hosts a VM named '", name, "'"));
    if (static_cast<int>(vms_.size() + reserved_.size()) >= options_.max_vms)
      return absl::ResourceExhaustedError("the destination is at its VM limit");
    if (MemoryInUseLocked() + config.memory_bytes > options_.max_memory)
      return absl::ResourceExhaustedError("the destination is at its memory limit");
    reserved_[name] = config.memory_bytes;
    return absl::OkStatus();
  }();
  if (s.ok())
    Log(LogLine(LogLevel::kInfo, "vm.arriving")
            .Kv("vm", name)
            .Kv("migration", migration_id)
            .Kv("source", source)
            .Kv("memory_mib", config.memory_bytes >> 20)
            .Kv("vcpus", config.vcpus));
  else
    Log(LogLine(LogLevel::kWarn, "migration.refused")
            .Kv("direction", "incoming")
            .Kv("migration", migration_id)
            .Kv("vm", name)
            .Kv("source", source)
            .Kv("reason", s.message()));
  return s;
}

void Agent::Release(const std::string& migration_id, const std::string& name,
                    const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    reserved_.erase(name);
  }
  Log(LogLine(LogLevel::kWarn, "vm.not_arrived")
          .Kv("vm", name)
          .Kv("migration", migration_id)
          .Kv("reason", why.message()));
}

void Agent::Adopt(const std::string& migration_id, const std::string& name,
                  std::unique_ptr<vmm::Vm> vm) {
  auto e = std::make_shared<VmEntry>();
  e->name = name;
  e->vm = std::move(vm);
  e->last_ops = e->vm->Stats().total_ops;  // what it ran at the source is not its rate here
  e->arrived_by = migration_id;
  e->backend_reason = "as the source had it";
  absl::MutexLock lock(&mu_);
  reserved_.erase(name);
  vms_[name] = e;
  Log(LogLine(LogLevel::kInfo, "vm.arrived").Kv("vm", name).Kv("migration", migration_id));
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::StartMigration(
    const ferry::v1::StartMigrationRequest& r) {
  // Fields left at 0 or UNSPECIFIED keep MigrationOptions' defaults
  // (migration/api/defaults.h); ValidateMigrationOptions judges the rest.
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
    return absl::InvalidArgumentError(absl::StrCat("streams ", r.streams(), ": at most ",
                                                   kMaxStreamsField));
  o.streams = static_cast<int>(r.streams());
  if (r.recovery_timeout_ms() < 0)
    return absl::InvalidArgumentError("recovery timeout must not be negative");
  if (r.recovery_timeout_ms() > 0) o.recovery_timeout_ms = r.recovery_timeout_ms();
  o.auth_token = options_.migration_token;
  RETURN_IF_ERROR(migration::ValidateMigrationOptions(o));
  RETURN_IF_ERROR(SplitHostPort(r.destination()).status());
  if (r.request_id().size() > 64)
    return absl::InvalidArgumentError("request id is longer than 64 bytes");

  PruneFinished();
  auto m = std::make_shared<MigrationEntry>();
  std::shared_ptr<VmEntry> vm;
  {
    absl::MutexLock lock(&mu_);
    if (!r.request_id().empty()) {
      auto it = by_request_id_.find(r.request_id());
      if (it != by_request_id_.end()) {
        std::shared_ptr<MigrationEntry> existing = migrations_[it->second];
        // The same request again is the same migration; the same id with
        // other parameters is a different request, refused by name.
        const std::string diff = RequestDifference(*existing, r.vm_name(), r.destination(), o);
        if (!diff.empty())
          return absl::AlreadyExistsError(absl::StrCat(
              "request id '", r.request_id(), "' was already used for migration ",
              existing->id, " with other parameters: ", diff));
        return Describe(*existing);  // lock order: mu_, then the migration's mu
      }
    }
    if (shutting_down_)
      return absl::UnavailableError("this agent is shutting down: it starts no migrations");
    auto it = vms_.find(r.vm_name());
    if (it == vms_.end())
      return absl::NotFoundError(
          absl::StrCat("no VM named '", r.vm_name(), "' on this agent (see `ferry vm list`)"));
    vm = it->second;
    if (!vm->migration_id.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", r.vm_name(), "' is already being migrated (", vm->migration_id, ")"));
    if (!vm->held_by.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", r.vm_name(), "' is held paused by migration ", vm->held_by, ", which failed "
          "after switchover (", vm->held_reason, "): the destination may run it. Check the "
          "destination; `ferry vm resume ", r.vm_name(), " --force` resumes this copy"));
    if (vm->vm->paused())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", r.vm_name(), "' is paused: resume it first (`ferry vm resume ", r.vm_name(),
          "`)"));
    int running = 0;
    for (auto& [id, x] : migrations_) {
      absl::MutexLock l(&x->mu);
      running += !x->done;
    }
    if (running >= options_.max_migrations)
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%d migrations are under way, this agent's limit (--max-migrations)", running));
    migration::SourceConfig config;
    config.options = o;
    config.destination = r.destination();
    config.page_server = page_server_.get();
    config.fetch_address = fetch_address_;
    config.source_agent = control_address();
    config.credentials = options_.peer_credentials;
    // With TLS between the agents, demand pages are encrypted too.
    config.encrypt_fetch = options_.peer_credentials != nullptr;
    config.vm_name = r.vm_name();
    config.on_recovery = [this, entry = m.get()](const std::string& event,
                                                 const std::string& detail) {
      Log(LogLine(event == "paused" ? LogLevel::kWarn : LogLevel::kInfo,
                  absl::StrCat("migration.", event))
              .Kv("direction", "outgoing")
              .Kv("migration", entry->id)
              .Kv("vm", entry->vm_name)
              .Kv("detail", detail));
    };
    m->session = std::make_unique<migration::SourceSession>(vm->vm.get(), config);
    m->id = m->session->migration_id();
    m->request_id = r.request_id();
    m->vm_name = r.vm_name();
    m->destination = r.destination();
    m->options = o;
    vm->migration_id = m->id;
    migrations_[m->id] = m;
    if (!r.request_id().empty()) by_request_id_[r.request_id()] = m->id;
  }
  Log(LogLine(LogLevel::kInfo, "migration.started")
          .Kv("migration", m->id)
          .Kv("vm", m->vm_name)
          .Kv("destination", m->destination)
          .Kv("mode", migration::MigrationModeName(o.mode))
          .Kv("fault_mode", vmm::FaultModeName(o.fault_mode)));
  m->thread = std::thread(&Agent::RunMigration, this, m, vm);
  return Describe(*m);
}

void Agent::RunMigration(std::shared_ptr<MigrationEntry> m, std::shared_ptr<VmEntry> vm) {
  absl::Status s = m->session->Run();
  migration::MigrationReport report = m->session->report();
  {
    // The registry first: whoever sees the migration end also sees the VM
    // gone from here (completed) or free to migrate again (failed).
    absl::MutexLock lock(&mu_);
    vm->migration_id.clear();
    if (!s.ok() && m->session->kept_paused()) {
      vm->held_by = m->id;
      vm->held_reason = std::string(s.message());
    }
    if (s.ok()) {
      // The destination runs the VM now; the source's copy was released.
      vms_.erase(m->vm_name);
      Log(LogLine(LogLevel::kInfo, "migration.completed")
              .Kv("migration", m->id)
              .Kv("vm", m->vm_name)
              .Kv("destination", m->destination)
              .Kv("total_ms", report.total_ms)
              .Kv("downtime_ms", report.downtime_ms));
    } else {
      const Outcome o = OutcomeOf(s);
      Log(LogLine(o == Outcome::kCancelled ? LogLevel::kWarn : LogLevel::kError,
                  absl::StrCat("migration.", OutcomeName(o)))
              .Kv("migration", m->id)
              .Kv("vm", m->vm_name)
              .Kv("destination", m->destination)
              .Kv("reason", s.message()));
    }
  }
  if (s.ok()) {
    // The VM's memory is freed here (its last reference), then the heap the
    // migration used goes back to the kernel; what is left is reported.
    vm.reset();
    ReturnFreedHeap();
    report.src_rss_bytes = AnonymousResidentBytes();
  } else {
    ReturnFreedHeap();
  }
  metrics_->RecordOutgoing(m->id, s, report);
  absl::MutexLock lock(&m->mu);
  m->done = true;
  m->finished = absl::Now();
  m->result = s;
  m->report = report;
}

void Agent::PruneFinished() {
  std::vector<std::shared_ptr<MigrationEntry>> gone;
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::pair<absl::Time, std::string>> finished;  // oldest first
    for (auto& [id, m] : migrations_) {
      absl::MutexLock l(&m->mu);
      if (m->done) finished.push_back({m->finished, id});
    }
    std::sort(finished.begin(), finished.end());
    const absl::Time cutoff = absl::Now() - options_.keep_finished;
    const size_t over = finished.size() > static_cast<size_t>(options_.keep_finished_count)
                            ? finished.size() - options_.keep_finished_count
                            : 0;
    for (size_t i = 0; i < finished.size(); ++i) {
      if (i >= over && finished[i].first >= cutoff) continue;
      auto it = migrations_.find(finished[i].second);
      if (!it->second->request_id.empty()) by_request_id_.erase(it->second->request_id);
      gone.push_back(std::move(it->second));
      migrations_.erase(it);
    }
  }
  // Outside the registry's lock: the session thread has ended (done).
  for (auto& m : gone)
    if (m->thread.joinable()) m->thread.join();
}

ferry::v1::MigrationResource Agent::Describe(const MigrationEntry& m) const {
  ferry::v1::MigrationResource r;
  r.set_id(m.id);
  r.set_direction("outgoing");
  r.set_request_id(m.request_id);
  r.set_vm_name(m.vm_name);
  r.set_destination(m.destination);
  r.set_mode(migration::ToProto(m.options.mode));
  r.set_fault_mode(migration::ToProto(m.options.fault_mode));
  r.set_start_time_unix_ms(absl::ToUnixMillis(m.started));
  migration::SourceProgress p = m.session->Progress();
  r.set_phase(ToPhase(p.phase));
  ferry::v1::MigrationProgress* pp = r.mutable_progress();
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
  if (!p.destination.empty()) r.set_destination(p.destination);
  auto& mm = const_cast<MigrationEntry&>(m);
  absl::MutexLock lock(&mm.mu);
  if (mm.done) {
    // The session's phase may lag the thread's end by a moment.
    constexpr ferry::v1::MigrationPhase kPhaseOf[kOutcomes] = {
        ferry::v1::MIGRATION_PHASE_COMPLETED, ferry::v1::MIGRATION_PHASE_FAILED,
        ferry::v1::MIGRATION_PHASE_CANCELLED};
    r.set_phase(kPhaseOf[static_cast<int>(OutcomeOf(mm.result))]);
    r.set_end_time_unix_ms(absl::ToUnixMillis(mm.finished));
    if (mm.result.ok()) {
      pp->set_percent(100);
      pp->set_eta_ms(0);
    } else {
      pp->set_eta_ms(-1);
    }
    if (!mm.result.ok()) {
      r.set_error(std::string(mm.result.message()));
      r.set_error_code(static_cast<int>(mm.result.code()));
    }
    *r.mutable_report() = api::ToProto(mm.report);
  }
  DescribeLive(*mm.session, mm.done, r);
  return r;
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::GetMigration(const std::string& id) {
  absl::StatusOr<std::shared_ptr<MigrationEntry>> m = FindMigration(id);
  if (m.ok()) return Describe(**m);
  // The destination's view of a migration arriving here.
  for (ferry::v1::MigrationResource& r : IncomingMigrations())
    if (r.id() == id) return std::move(r);
  return m.status();
}

std::vector<ferry::v1::MigrationResource> Agent::ListMigrations() {
  PruneFinished();
  std::vector<std::shared_ptr<MigrationEntry>> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, m] : migrations_) all.push_back(m);
  }
  std::vector<ferry::v1::MigrationResource> out;
  for (auto& m : all) out.push_back(Describe(*m));
  for (ferry::v1::MigrationResource& r : IncomingMigrations()) out.push_back(std::move(r));
  return out;
}

std::vector<ferry::v1::MigrationResource> Agent::IncomingMigrations() const {
  std::vector<ferry::v1::MigrationResource> out;
  // The destination's view: migrations arriving here.
  for (const migration::DestinationSession::Info& in : migration_service_->Incoming()) {
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
      p->set_percent(in.pages_total ? 100.0 * (in.pages_total - in.pages_missing) /
                                          in.pages_total
                                    : 0);
    }
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::RecoverMigration(
    const ferry::v1::RecoverMigrationRequest& r) {
  if (!r.destination().empty()) RETURN_IF_ERROR(SplitHostPort(r.destination()).status());
  ASSIGN_OR_RETURN(auto m, FindMigration(r.id()));
  RETURN_IF_ERROR(m->session->Recover(r.destination()));
  Log(LogLine(LogLevel::kInfo, "migration.recover_requested")
          .Kv("migration", r.id())
          .Kv("destination", r.destination().empty() ? m->destination : r.destination()));
  return Describe(*m);
}

absl::StatusOr<ferry::v1::Vm> Agent::ResumeVm(const ferry::v1::ResumeVmRequest& r) {
  ASSIGN_OR_RETURN(auto e, FindVm(r.name()));
  {
    absl::MutexLock lock(&mu_);
    if (!e->migration_id.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", r.name(), "' is being migrated (", e->migration_id, "): it cannot be resumed"));
    if (!e->held_by.empty() && !r.force())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", r.name(), "' was kept paused by migration ", e->held_by,
          ", which failed after switchover (", e->held_reason,
          "): the destination may have run it, and resuming this copy would run the guest "
          "twice. Make sure the destination does not run it (`ferry --agent DEST vm list`), "
          "then give --force to resume this copy as of the switchover"));
    if (!e->vm->paused())
      return absl::FailedPreconditionError(
          absl::StrCat("VM '", r.name(), "' is not paused"));
    RETURN_IF_ERROR(e->vm->Resume());
    Log(LogLine(e->held_by.empty() ? LogLevel::kInfo : LogLevel::kWarn, "vm.resumed")
            .Kv("vm", r.name())
            .Kv("held_by", e->held_by)
            .Kv("forced", r.force() ? "true" : "false"));
    e->held_by.clear();
    e->held_reason.clear();
  }
  return Describe(*e);
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::SetMigrationParameters(
    const ferry::v1::SetMigrationParametersRequest& r) {
  ASSIGN_OR_RETURN(auto m, FindMigration(r.id()));
  RETURN_IF_ERROR(SetParameters(*m->session, r));
  Log(LogLine(LogLevel::kInfo, "migration.parameters_set")
          .Kv("migration", r.id())
          .Kv("max_bandwidth", r.has_max_bandwidth() ? absl::StrCat(r.max_bandwidth()) : "-")
          .Kv("downtime_target_ms",
              r.has_downtime_target_ms() ? absl::StrCat(r.downtime_target_ms()) : "-"));
  return Describe(*m);
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::StartPostcopy(const std::string& id) {
  ASSIGN_OR_RETURN(auto m, FindMigration(id));
  RETURN_IF_ERROR(m->session->StartPostcopy());
  Log(LogLine(LogLevel::kInfo, "migration.postcopy_requested").Kv("migration", id));
  return Describe(*m);
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::CancelMigration(const std::string& id) {
  ASSIGN_OR_RETURN(auto m, FindMigration(id));
  RETURN_IF_ERROR(m->session->Cancel());
  Log(LogLine(LogLevel::kInfo, "migration.cancel_requested").Kv("migration", id));
  if (m->thread.joinable()) {
    // Wait (briefly) for the session to wind down so the caller sees the end.
    absl::MutexLock lock(&m->mu);
    m->mu.AwaitWithTimeout(absl::Condition(&m->done), absl::Seconds(10));
  }
  return Describe(*m);
}

absl::Status Agent::WatchMigration(
    const std::string& id, absl::Duration interval,
    const std::function<bool(const ferry::v1::MigrationResource&)>& write) {
  ASSIGN_OR_RETURN(auto m, FindMigration(id));
  while (true) {
    bool done;
    {
      absl::MutexLock lock(&m->mu);
      m->mu.AwaitWithTimeout(absl::Condition(&m->done), interval);
      done = m->done;
    }
    ferry::v1::MigrationResource r = Describe(*m);
    if (!write(r)) return absl::CancelledError("the watcher went away");
    // Only `done` ends the watch: the session reaches a terminal phase a
    // moment before its report is recorded, and the last message carries it.
    if (done) return absl::OkStatus();
  }
}

void Agent::BeginShutdown() {
  std::vector<std::shared_ptr<MigrationEntry>> all;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto& [id, m] : migrations_) all.push_back(m);
  }
  Log(LogLine(LogLevel::kInfo, "agent.shutting_down")
          .Kv("detail", "no new work; cancelling migrations that have not switched over"));
  for (auto& m : all) {
    absl::Status s = m->session->Cancel();
    if (s.ok())
      Log(LogLine(LogLevel::kWarn, "migration.cancel_requested")
              .Kv("migration", m->id)
              .Kv("reason", "agent shutdown"));
  }
}

bool Agent::HasIncompletePostcopy() {
  if (migration_service_->HasIncompletePostcopy()) return true;
  absl::MutexLock lock(&mu_);
  for (auto& [id, m] : migrations_) {
    absl::MutexLock l(&m->mu);
    if (m->done) continue;
    // Paused in postcopy included: the destination runs the VM and this
    // agent's page server holds the rest of its memory.
    if (migration::MustFinish(m->session->Progress().phase)) return true;
  }
  return false;
}

}  // namespace ferry::agent
