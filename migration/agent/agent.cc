#include "migration/agent/agent.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/log_line.h"
#include "base/net.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "base/version.h"
#include "migration/agent/agent_metrics.h"
#include "migration/agent/control_translate.h"
#include "migration/agent/live_control.h"
#include "migration/agent/memory_change.h"
#include "migration/agent/vm_verify.h"
#include "migration/api/names.h"
#include "migration/convert.h"
#include "migration/phases.h"
#include "migration/protocol.h"

namespace ferry::agent {

std::string Agent::RenderMetrics() { return metrics_->Render(ListVms(), ListMigrations()); }

absl::StatusOr<std::unique_ptr<Agent>> Agent::Start(AgentOptions options) {
  ASSIGN_OR_RETURN(auto hp, SplitHostPort(options.fetch_listen));
  std::string host = options.fetch_advertise_host.empty() ? hp.first : options.fetch_advertise_host;
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
    raw->events_.Publish(
        RefusedEvent("incoming migration", why, /*identity=*/"", /*vm_name=*/"", claimed_id));
    raw->Log(LogLine(why.code() == absl::StatusCode::kUnauthenticated ? LogLevel::kWarn
                                                                      : LogLevel::kInfo,
                     "migration.refused")
                 .Kv("direction", "incoming")
                 .Kv("migration", claimed_id)
                 .Kv("code", absl::StatusCodeToString(why.code()))
                 .Kv("reason", why.message()));
  };
  dest.admit_check = [raw](const std::string& name, const vmm::VmConfig& c) {
    return raw->AdmitCheck(name, c);
  };
  dest.checked = [raw](const std::string& name, const std::vector<migration::CheckItem>& items) {
    int failed = 0;
    std::string first;
    for (const migration::CheckItem& i : items)
      if (!i.ok && failed++ == 0) first = absl::StrCat(i.name, ": ", i.detail);
    raw->Log(LogLine(LogLevel::kInfo, "migration.checked")
                 .Kv("direction", "incoming")
                 .Kv("vm", name)
                 .Kv("result", failed == 0 ? "pass" : "fail")
                 .Kv("first_failure", first));
  };
  dest.paused = [raw](const std::string& id, const std::string& why) {
    ferry::v1::Event e = MakeEvent(ferry::v1::EVENT_KIND_RECOVERY, "", id, "destination",
                                   why.empty() ? "the source reconnected" : why);
    e.set_outcome(why.empty() ? "recovered" : "paused");
    raw->events_.Publish(std::move(e));
    raw->Log(LogLine(why.empty() ? LogLevel::kInfo : LogLevel::kWarn,
                     why.empty() ? "migration.recovered" : "migration.paused")
                 .Kv("direction", "incoming")
                 .Kv("migration", id)
                 .Kv("detail", why.empty() ? "the source reconnected" : why));
  };
  dest.on_phase = [raw](const std::string& id, const std::string& vm,
                        const migration::PhaseChange& c) {
    raw->events_.Publish(PhaseChangedEvent(vm, id, "destination", c.from, c.to));
    if (migration::FactsOf(c.to).under_way) return;
    ferry::v1::Event e = MakeEvent(ferry::v1::EVENT_KIND_MIGRATION_ENDED, vm, id, "destination");
    e.set_outcome(migration::FactsOf(c.to).name);
    raw->events_.Publish(std::move(e));
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
    : metrics_(std::make_unique<AgentMetrics>()),
      options_(std::move(options)),
      events_(EventLog::Options{.log = options_.log}),
      vms_(VmRegistry::Limits{options_.max_vms, options_.max_memory}),
      migrations_(MigrationTable::Retention{options_.keep_finished, options_.keep_finished_count}) {
}

Agent::~Agent() {
  events_.Close();
  std::vector<std::shared_ptr<OutgoingMigration>> all;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    all = migrations_.All();
  }
  for (auto& m : all) {
    (void)m->session->Cancel();
    if (m->thread.joinable()) m->thread.join();
  }
  // The VMs still here end with the agent: say so, one line each.
  absl::MutexLock lock(&mu_);
  for (auto& e : vms_.TakeAll()) {
    e->EndRestoreWatch();  // it reports to this agent
    Log(LogLine(LogLevel::kWarn, "vm.destroyed").Kv("vm", e->name).Kv("reason", "agent stopped"));
    events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_DELETED, e->name, "", "", "agent stopped"));
    if (e->vm) e->vm->Stop();
  }
}

void Agent::Log(const LogLine& line) const {
  if (options_.log) options_.log(line.str());
}

absl::StatusOr<std::shared_ptr<HostedVm>> Agent::FindVm(const std::string& name) {
  absl::MutexLock lock(&mu_);
  return vms_.Find(name);
}

absl::StatusOr<std::shared_ptr<OutgoingMigration>> Agent::FindMigration(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return migrations_.Find(id);
}

ferry::v1::Vm Agent::Describe(const HostedVm& e) const {
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
  const vmm::MemoryMap& map = e.vm->memory().map();
  *v.mutable_layout() = migration::ToLayout(e.vm->config(), map);
  migration::RegionsToProto(map.regions(), v.mutable_regions());
  v.set_max_memory_bytes(e.vm->memory_limits().max_bytes);
  v.set_memory_changes(static_cast<uint32_t>(e.vm->MemoryHistory().size()));
  v.set_backend_capabilities(e.vm->BackendCapabilities());
  v.set_backend_reason(e.backend_reason);
  vmm::VmStats s = e.vm->Stats();
  v.set_guest_ops(s.total_ops);
  v.set_state(VmStateOf(s, !migration_id.empty()));
  if (v.state() == ferry::v1::VM_STATE_FAILED) v.set_error(std::string(e.vm->Health().message()));
  v.set_restored_from(e.restored_from);
  v.set_restore_mode(e.restore_mode);
  if (e.lazy_restore != nullptr) {
    const vmm::FaultModeChoice& c = e.vm->fault_mode_choice();
    v.set_restore_fault_mode(absl::StrCat(vmm::FaultModeName(c.mode), ": ", c.reason));
    const snapshot::LazyRestoreStats ls = e.lazy_restore->Stats();
    if (ls.filled_ns != 0) v.set_restore_ms((ls.filled_ns - ls.started_ns) / 1e6);
    if (!e.lazy_restore->done() && e.vm->pager() != nullptr)
      v.set_pages_missing(e.vm->pager()->missing_pages());
  } else if (!e.restored_from.empty()) {
    v.set_restore_ms(e.eager_restore_ms);
  }
  return v;
}

absl::StatusOr<ferry::v1::Vm> Agent::CreateVm(const ferry::v1::CreateVmRequest& r) {
  RETURN_IF_ERROR(api::ValidateVmName(r.name()));
  std::string backend_reason;
  ASSIGN_OR_RETURN(vmm::VmConfig config, VmConfigFromRequest(r, &backend_reason));
  // Room to grow, within this agent's memory limit.
  ASSIGN_OR_RETURN(
      config.max_memory_bytes,
      ResolveMaxMemory(config.memory_bytes, config.max_memory_bytes, options_.max_memory));
  auto entry = std::make_shared<HostedVm>();
  entry->name = r.name();
  entry->backend_reason = backend_reason;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_)
      return absl::UnavailableError("this agent is shutting down: create the VM elsewhere");
    RETURN_IF_ERROR(
        vms_.RefusalStatus(vms_.Reserve(r.name(), config.memory_bytes, "is being created"),
                           r.name(), config.memory_bytes, /*incoming=*/false));
  }
  auto release = [&] {
    absl::MutexLock lock(&mu_);
    vms_.Unreserve(r.name());
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
    vms_.Add(r.name(), config.memory_bytes, entry);
  }
  Log(LogLine(LogLevel::kInfo, "vm.created")
          .Kv("vm", r.name())
          .Kv("memory_mib", config.memory_bytes >> 20)
          .Kv("max_memory_mib", config.max_memory_bytes >> 20)
          .Kv("vcpus", config.vcpus)
          .Kv("workload", vmm::WorkloadKindName(config.workload.kind))
          .Kv("backend", vmm::VmBackendName(config.backend))
          .Kv("backend_reason", backend_reason)
          .Kv("capabilities", config.backend == vmm::VmBackend::kKvm
                                  ? entry->vm->BackendCapabilities()
                                  : std::string()));
  events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_CREATED, r.name(), "", "",
                            absl::StrFormat("created: %d MiB, %d vCPUs, workload %s, backend %s",
                                            config.memory_bytes >> 20, config.vcpus,
                                            vmm::WorkloadKindName(config.workload.kind),
                                            vmm::VmBackendName(config.backend))));
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

std::vector<ferry::v1::Vm> Agent::IncomingVms() const {
  std::vector<ferry::v1::Vm> out;
  for (const migration::DestinationSession::Info& in : migration_service_->Incoming())
    if (Arriving(in)) out.push_back(DescribeIncomingVm(in));  // else adopted or gone
  return out;
}

absl::StatusOr<ferry::v1::Vm> Agent::GetVm(const std::string& name) {
  absl::StatusOr<std::shared_ptr<HostedVm>> e = FindVm(name);
  if (e.ok()) return Describe(**e);
  for (ferry::v1::Vm& v : IncomingVms())
    if (v.name() == name) return v;
  return e.status();
}

std::vector<ferry::v1::Vm> Agent::ListVms() {
  std::vector<std::shared_ptr<HostedVm>> all;
  {
    absl::MutexLock lock(&mu_);
    all = vms_.All();
  }
  std::vector<ferry::v1::Vm> out;
  absl::flat_hash_set<std::string> here;
  for (auto& e : all) {
    out.push_back(Describe(*e));
    here.insert(e->name);
  }
  // A VM adopted a moment before its migration says completed is listed once.
  for (ferry::v1::Vm& v : IncomingVms())
    if (!here.contains(v.name())) out.push_back(std::move(v));
  return out;
}

absl::Status Agent::DeleteVm(const std::string& name) {
  std::shared_ptr<HostedVm> e;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<HostedVm>> found = vms_.Find(name);
    if (!found.ok() && vms_.IsReserved(name)) return found.status();
    if (!found.ok())
      return absl::NotFoundError(absl::StrCat("no VM named '", name, "' on this agent"));
    if (!(*found)->migration_id.empty())
      return absl::FailedPreconditionError(absl::StrCat("VM '", name, "' is being migrated (",
                                                        (*found)->migration_id,
                                                        "): cancel the migration first"));
    if (!(*found)->snapshot_to.empty())
      return absl::FailedPreconditionError(
          absl::StrCat("VM '", name, "' is being snapshotted (to ", (*found)->snapshot_to,
                       "): delete it once the snapshot is written"));
    if ((*found)->changing_memory)
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", name, "' is changing its memory: delete it once the change is applied"));
    e = vms_.Remove(name);
  }
  // A lazy restore still filling ends with it, unreported.
  e->EndRestoreWatch();
  e->vm->Stop();
  Log(LogLine(LogLevel::kInfo, "vm.deleted").Kv("vm", name));
  events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_DELETED, name, "", "", "deleted"));
  return absl::OkStatus();
}

absl::StatusOr<ferry::v1::VmStatsResponse> Agent::VmStats(const std::string& name) {
  absl::StatusOr<std::shared_ptr<HostedVm>> found = FindVm(name);
  if (!found.ok()) {
    for (const migration::DestinationSession::Info& in : migration_service_->Incoming())
      if (Arriving(in) && in.vm_name == name) return IncomingVmStats(in);
    return found.status();
  }
  std::shared_ptr<HostedVm> e = *std::move(found);
  ferry::v1::VmStatsResponse r;
  *r.mutable_vm() = Describe(*e);
  vmm::VmStats s = e->vm->Stats();
  AddVcpuStats(s, &r);
  r.set_guest_ops_per_sec(e->OpsPerSec(s.total_ops));
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
      return absl::FailedPreconditionError(
          absl::StrCat("VM '", request.name(), "' is being migrated: verify it where it arrives"));
    if (!e->snapshot_to.empty())
      return absl::FailedPreconditionError(
          absl::StrCat("VM '", request.name(), "' is being snapshotted (to ", e->snapshot_to,
                       "): verify it once the snapshot is written"));
    if (e->Filling())
      return absl::FailedPreconditionError(
          absl::StrCat("VM '", request.name(), "' is still being restored from ", e->restored_from,
                       ": verify it once every page is read (`ferry vm get ", request.name(),
                       "` shows the pages missing)"));
    if (e->changing_memory)
      return absl::FailedPreconditionError(
          absl::StrCat("VM '", request.name(),
                       "' is changing its memory: verify it once the change is applied"));
    ++e->verifying;
  }
  absl::StatusOr<ferry::v1::VerifyVmResponse> verified =
      VerifyGuestMemory(*e->vm, request.name(), request.timeout_ms());
  {
    absl::MutexLock lock(&mu_);
    --e->verifying;
  }
  ASSIGN_OR_RETURN(ferry::v1::VerifyVmResponse r, std::move(verified));
  Log(LogLine(r.match() ? LogLevel::kInfo : LogLevel::kError, "vm.verified")
          .Kv("vm", request.name())
          .Kv("result", r.match() ? "match" : "mismatch")
          .Kv("differing_pages", static_cast<uint64_t>(r.differing_pages())));
  return r;
}

absl::Status Agent::Admit(const std::string& migration_id, const std::string& source,
                          const std::string& name, const vmm::VmConfig& config) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(api::ValidateVmName(name));
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("the destination agent is shutting down");
    const uint64_t bytes = vmm::CreatedMemoryBytes(config);  // a resized VM's regions
    return vms_.RefusalStatus(vms_.Reserve(name, bytes), name, bytes, /*incoming=*/true);
  }();
  if (s.ok())
    events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_MIGRATION_ADMITTED, name, migration_id,
                              "destination", absl::StrCat("incoming from ", source)));
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
    vms_.Unreserve(name);
  }
  events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_FAILED, name, migration_id, "destination",
                            absl::StrCat("never arrived: ", why.message())));
  Log(LogLine(LogLevel::kWarn, "vm.not_arrived")
          .Kv("vm", name)
          .Kv("migration", migration_id)
          .Kv("reason", why.message()));
}

void Agent::Adopt(const std::string& migration_id, const std::string& name,
                  std::unique_ptr<vmm::Vm> vm) {
  auto e = std::make_shared<HostedVm>();
  e->name = name;
  e->vm = std::move(vm);
  // What its map holds (a VM resized before it left is admitted so).
  const uint64_t memory_bytes = e->vm->memory().size();
  e->last_ops = e->vm->Stats().total_ops;  // what it ran at the source is not its rate here
  e->arrived_by = migration_id;
  e->backend_reason = "as the source had it";
  absl::MutexLock lock(&mu_);
  vms_.Add(name, memory_bytes, e);
  Log(LogLine(LogLevel::kInfo, "vm.arrived").Kv("vm", name).Kv("migration", migration_id));
  events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_CREATED, name, migration_id, "destination",
                            absl::StrCat("arrived by migration ", migration_id)));
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::StartMigration(
    const ferry::v1::StartMigrationRequest& r) {
  ASSIGN_OR_RETURN(const migration::MigrationOptions o,
                   MigrationOptionsFromRequest(r, options_.migration_token));
  PruneFinished();
  auto m = std::make_shared<OutgoingMigration>();
  std::shared_ptr<HostedVm> vm;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(std::shared_ptr<OutgoingMigration> same,
                     migrations_.FindRequest(r.request_id(), r.vm_name(), r.destination(), o));
    if (same != nullptr) return Describe(*same);  // lock order: mu_, then the migration's mu
    if (shutting_down_)
      return absl::UnavailableError("this agent is shutting down: it starts no migrations");
    absl::StatusOr<std::shared_ptr<HostedVm>> found = vms_.Find(r.vm_name());
    if (!found.ok())
      return absl::NotFoundError(
          absl::StrCat("no VM named '", r.vm_name(), "' on this agent (see `ferry vm list`)"));
    vm = *std::move(found);
    RETURN_IF_ERROR(CanMigrate(*vm));
    const int running = migrations_.Running();
    if (running >= options_.max_migrations)
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%d migrations are under way, this agent's limit (--max-migrations)", running));
    migration::SourceConfig config = SourceConfigFor(r, o);
    config.on_recovery = [this, entry = m.get()](const std::string& event,
                                                 const std::string& detail) {
      Log(LogLine(event == "paused" ? LogLevel::kWarn : LogLevel::kInfo,
                  absl::StrCat("migration.", event))
              .Kv("direction", "outgoing")
              .Kv("migration", entry->id)
              .Kv("vm", entry->vm_name)
              .Kv("detail", detail));
      ferry::v1::Event e =
          MakeEvent(ferry::v1::EVENT_KIND_RECOVERY, entry->vm_name, entry->id, "source", detail);
      e.set_outcome(event);
      events_.Publish(std::move(e));
    };
    // Under the session's lock: only publishes.
    config.on_phase = [this, entry = m.get()](const migration::PhaseChange& c) {
      events_.Publish(PhaseChangedEvent(entry->vm_name, entry->id, "source", c.from, c.to));
    };
    m->session = std::make_unique<migration::SourceSession>(vm->vm.get(), config);
    m->id = m->session->migration_id();
    m->request_id = r.request_id();
    m->vm_name = r.vm_name();
    m->destination = r.destination();
    m->options = o;
    vm->migration_id = m->id;
    migrations_.Add(m);
  }
  Log(LogLine(LogLevel::kInfo, "migration.started")
          .Kv("migration", m->id)
          .Kv("vm", m->vm_name)
          .Kv("destination", m->destination)
          .Kv("mode", migration::MigrationModeName(o.mode))
          .Kv("fault_mode", vmm::FaultModeName(o.fault_mode)));
  events_.Publish(MakeEvent(
      ferry::v1::EVENT_KIND_MIGRATION_STARTED, m->vm_name, m->id, "source",
      absl::StrFormat("to %s, %s, fault mode %s", m->destination,
                      migration::MigrationModeName(o.mode), vmm::FaultModeName(o.fault_mode))));
  m->thread = std::thread(&Agent::RunMigration, this, m, vm);
  return Describe(*m);
}

migration::SourceConfig Agent::SourceConfigFor(const ferry::v1::StartMigrationRequest& r,
                                               const migration::MigrationOptions& o) const {
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
  return config;
}

void Agent::RunMigration(std::shared_ptr<OutgoingMigration> m, std::shared_ptr<HostedVm> vm) {
  absl::Status s = m->session->Run();
  migration::MigrationReport report = m->session->report();
  {
    // The registry first: whoever sees the migration end also sees the VM
    // gone from here (completed) or free to migrate again (failed).
    absl::MutexLock lock(&mu_);
    vm->migration_id.clear();
    ferry::v1::Event ended = MakeEvent(ferry::v1::EVENT_KIND_MIGRATION_ENDED, m->vm_name, m->id,
                                       "source", s.ok() ? "" : std::string(s.message()));
    ended.set_outcome(OutcomeName(OutcomeOf(s)));
    events_.Publish(std::move(ended));
    if (!s.ok() && m->session->kept_paused()) {
      vm->held_by = m->id;
      vm->held_reason = std::string(s.message());
      events_.Publish(
          MakeEvent(ferry::v1::EVENT_KIND_VM_FAILED, m->vm_name, m->id, "source",
                    absl::StrCat("kept paused after a failed switchover: ", s.message())));
    }
    if (s.ok()) {
      // The destination runs the VM now; the source's copy was released.
      vms_.Remove(m->vm_name);
      events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_DELETED, m->vm_name, m->id, "source",
                                absl::StrCat("migrated to ", m->destination)));
      Log(LogLine(LogLevel::kInfo, "migration.completed")
              .Kv("migration", m->id)
              .Kv("vm", m->vm_name)
              .Kv("destination", m->destination)
              .Kv("total_ms", report.total_ms())
              .Kv("downtime_ms", report.downtime_ms()));
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
    report.set_src_rss_bytes(AnonymousResidentBytes());
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
  std::vector<std::shared_ptr<OutgoingMigration>> gone;
  {
    absl::MutexLock lock(&mu_);
    gone = migrations_.Prune(absl::Now());
  }
  // Outside the registry's lock: the session thread has ended (done).
  for (auto& m : gone)
    if (m->thread.joinable()) m->thread.join();
}

ferry::v1::MigrationResource Agent::Describe(const OutgoingMigration& m) const {
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
  r.set_phase(migration::PhaseOf(p.phase));
  ferry::v1::MigrationProgress* pp = r.mutable_progress();
  FillProgress(p, pp);
  if (!p.destination.empty()) r.set_destination(p.destination);
  auto& mm = const_cast<OutgoingMigration&>(m);
  absl::MutexLock lock(&mm.mu);
  if (mm.done) {
    // The session's phase may lag the thread's end by a moment.
    constexpr ferry::v1::MigrationPhase kPhaseOf[kOutcomes] = {
        ferry::v1::MIGRATION_PHASE_COMPLETED, ferry::v1::MIGRATION_PHASE_FAILED,
        ferry::v1::MIGRATION_PHASE_CANCELLED};
    r.set_phase(kPhaseOf[static_cast<int>(OutcomeOf(mm.result))]);
    SetEnded(mm.result, mm.finished, &r);
    *r.mutable_report() = mm.report;
  }
  DescribeLive(*mm.session, mm.done, r);
  return r;
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::GetMigration(const std::string& id) {
  absl::StatusOr<std::shared_ptr<OutgoingMigration>> m = FindMigration(id);
  if (m.ok()) return Describe(**m);
  // The destination's view of a migration arriving here, or that arrived
  // (or failed to) while the migration service keeps its session.
  std::optional<migration::DestinationSession::Info> in;
  if (!id.empty()) in = migration_service_->IncomingInfo(id);
  if (in.has_value()) return DescribeIncomingMigration(*in);
  return m.status();
}

std::vector<ferry::v1::MigrationResource> Agent::ListMigrations() {
  PruneFinished();
  std::vector<std::shared_ptr<OutgoingMigration>> all;
  {
    absl::MutexLock lock(&mu_);
    all = migrations_.All();
  }
  std::vector<ferry::v1::MigrationResource> out;
  for (auto& m : all) out.push_back(Describe(*m));
  for (ferry::v1::MigrationResource& r : IncomingMigrations()) out.push_back(std::move(r));
  return out;
}

std::vector<ferry::v1::MigrationResource> Agent::IncomingMigrations() const {
  std::vector<ferry::v1::MigrationResource> out;
  // The destination's view: migrations arriving here.
  for (const migration::DestinationSession::Info& in : migration_service_->Incoming())
    out.push_back(DescribeIncomingMigration(in));
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
    if (!e->snapshot_to.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", r.name(), "' is being snapshotted (to ", e->snapshot_to,
          "): it resumes by itself when the snapshot is written, unless it was asked to stay "
          "stopped"));
    if (absl::Status h = e->vm->Health(); !h.ok())
      return absl::FailedPreconditionError(absl::StrCat("VM '", r.name(), "' failed (", h.message(),
                                                        "): it cannot run again; delete it"));
    if (!e->vm->paused())
      return absl::FailedPreconditionError(absl::StrCat("VM '", r.name(), "' is not paused"));
    RETURN_IF_ERROR(e->vm->Resume());
    Log(LogLine(e->held_by.empty() ? LogLevel::kInfo : LogLevel::kWarn, "vm.resumed")
            .Kv("vm", r.name())
            .Kv("held_by", e->held_by)
            .Kv("forced", r.force() ? "true" : "false"));
    events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_RESUMED, r.name(), e->held_by, "",
                              r.force() ? "resumed (forced)" : "resumed"));
    e->held_by.clear();
    e->held_reason.clear();
  }
  return Describe(*e);
}

absl::StatusOr<ferry::v1::MigrationResource> Agent::SetMigrationParameters(
    const ferry::v1::SetMigrationParametersRequest& r) {
  ASSIGN_OR_RETURN(auto m, FindMigration(r.id()));
  const size_t before = m->session->parameter_changes().size();
  RETURN_IF_ERROR(SetParameters(*m->session, r));
  const std::vector<migration::ParameterChange> changes = m->session->parameter_changes();
  for (size_t i = before; i < changes.size(); ++i) {
    ferry::v1::Event e = MakeEvent(ferry::v1::EVENT_KIND_PARAMETER_CHANGED, m->vm_name, m->id,
                                   "source", changes[i].parameter);
    e.set_parameter(changes[i].parameter);
    e.set_old_value(changes[i].old_value);
    e.set_new_value(changes[i].new_value);
    events_.Publish(std::move(e));
  }
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
  events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_POSTCOPY_FORCED, m->vm_name, id, "source",
                            "postcopy requested: the switch comes at the next decision point"));
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
  std::vector<std::shared_ptr<OutgoingMigration>> all;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    all = migrations_.All();
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
  for (auto& m : migrations_.All()) {
    absl::MutexLock l(&m->mu);
    if (m->done) continue;
    // Paused in postcopy included: the destination runs the VM and this
    // agent's page server holds the rest of its memory.
    if (migration::MustFinish(m->session->Progress().phase)) return true;
  }
  return false;
}

}  // namespace ferry::agent
