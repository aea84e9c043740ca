// Agent: what one ferryd hosts. It owns the VMs of this host, the migrations
// it drives as the source, and the page server; it adopts VMs that migrate
// in, and restores VMs from snapshots. The gRPC services
// (control_service.h, migration_service.h) are thin layers over it.
//
// Lifecycle events are logged, one line each, through AgentOptions::log,
// and published on the agent's event log (events(); WatchEvents), which
// logs each event too.
//
// Threads: every method is thread-safe. Each outgoing migration runs on a
// thread of its own, and so does the watch of each lazy restore. Blocking
// calls (VerifyVm, WatchMigration, SnapshotVm, RestoreVm, ChangeVmMemory) hold no lock
// while they wait.
#ifndef FERRY_MIGRATION_AGENT_AGENT_H_
#define FERRY_MIGRATION_AGENT_AGENT_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/log_line.h"
#include "ferry/v1/control.pb.h"
#include "grpcpp/security/credentials.h"
#include "migration/agent/control_backend.h"
#include "migration/agent/event_log.h"
#include "migration/agent/migration_table.h"
#include "migration/agent/vm_registry.h"
#include "migration/fetch/page_server.h"
#include "migration/migration_service.h"
#include "migration/preflight.h"
#include "migration/source_session.h"

namespace ferry::agent {

class AgentMetrics;

struct AgentOptions {
  std::string fetch_listen = "127.0.0.1:0";  // the page server
  // The host destinations dial for the fetch channel; empty: fetch_listen's
  // host (which then must not be a wildcard address).
  std::string fetch_advertise_host;
  std::string migration_token;  // required of incoming, sent with outgoing
  int max_vms = 64;
  uint64_t max_memory = 64ull << 30;  // all VMs of this agent together
  int max_migrations = 4;             // outgoing at once
  // Incoming VMs in blocking fault mode: fault handler threads per VM
  // (0: one per two vCPUs).
  int fault_handlers = 0;
  // Finished migrations (and their reports) are kept this long, and at
  // most this many; the oldest go first. Their threads are joined and
  // their sessions freed when they go.
  absl::Duration keep_finished = absl::Hours(1);
  int keep_finished_count = 100;
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials;  // default insecure
  std::function<void(const std::string&)> log;
};

class Agent final : public ControlBackend {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Start(AgentOptions options);
  ~Agent() override;

  int fetch_port() const { return page_server_->port(); }
  // Where destinations reach this agent's page server, HOST:PORT.
  const std::string& fetch_address() const { return fetch_address_; }
  // The address of this agent's ferry.v1.Control server, HOST:PORT, once
  // it listens (ferryd sets it): what destinations show as the peer.
  void set_control_address(const std::string& address);
  std::string control_address() const;
  migration::MigrationService* migration_service() { return migration_service_.get(); }

  absl::StatusOr<ferry::v1::Vm> CreateVm(const ferry::v1::CreateVmRequest& request) override;
  absl::StatusOr<ferry::v1::Vm> GetVm(const std::string& name) override;
  std::vector<ferry::v1::Vm> ListVms() override;
  absl::Status DeleteVm(const std::string& name) override;
  absl::StatusOr<ferry::v1::VmStatsResponse> VmStats(const std::string& name) override;
  absl::StatusOr<ferry::v1::VerifyVmResponse> VerifyVm(
      const ferry::v1::VerifyVmRequest& request) override;
  // Forgets finished migrations past the retention (AgentOptions); called
  // when migrations are started or listed.
  void PruneFinished();

  absl::StatusOr<ferry::v1::MigrationResource> StartMigration(
      const ferry::v1::StartMigrationRequest& request) override;
  // Everything StartMigration(request) would check before a page moves,
  // here and at the destination, starting nothing (agent_check.cc).
  ferry::v1::CheckMigrationResponse CheckMigration(
      const ferry::v1::StartMigrationRequest& request) override;
  absl::StatusOr<ferry::v1::MigrationResource> GetMigration(const std::string& id) override;
  std::vector<ferry::v1::MigrationResource> ListMigrations() override;
  absl::StatusOr<ferry::v1::MigrationResource> CancelMigration(const std::string& id) override;
  // A paused postcopy migration reconnects now (optionally elsewhere).
  absl::StatusOr<ferry::v1::MigrationResource> RecoverMigration(
      const ferry::v1::RecoverMigrationRequest& request) override;
  // Changes a running outgoing migration's parameters (live_control.h).
  absl::StatusOr<ferry::v1::MigrationResource> SetMigrationParameters(
      const ferry::v1::SetMigrationParametersRequest& request) override;
  // Switches a running hybrid migration to postcopy now.
  absl::StatusOr<ferry::v1::MigrationResource> StartPostcopy(const std::string& id) override;
  // Resumes a paused VM (force: one a failed migration kept paused).
  absl::StatusOr<ferry::v1::Vm> ResumeVm(const ferry::v1::ResumeVmRequest& request) override;
  // Writes a snapshot of a VM: a running one is paused for the write and
  // resumed after unless asked not to (agent_snapshot.cc).
  absl::StatusOr<ferry::v1::SnapshotVmResponse> SnapshotVm(
      const ferry::v1::SnapshotVmRequest& request) override;
  // A new VM from a snapshot, admitted like CreateVm, eager or lazy
  // (agent_snapshot.cc).
  absl::StatusOr<ferry::v1::Vm> RestoreVm(const ferry::v1::RestoreVmRequest& request) override;
  // Applies a memory map transaction to a VM of this agent: a grow is
  // admitted against --max-memory first, and the VM is marked
  // (HostedVm::changing_memory) while the change applies (agent_memory.cc).
  absl::StatusOr<ferry::v1::ChangeVmMemoryResponse> ChangeVmMemory(
      const ferry::v1::ChangeVmMemoryRequest& request) override;
  // Calls `write` with a snapshot every `interval` and on the end; returns
  // when the migration ended (after writing its final state) or `write`
  // returned false.
  absl::Status WatchMigration(
      const std::string& id, absl::Duration interval,
      const std::function<bool(const ferry::v1::MigrationResource&)>& write) override;

  // SIGTERM: refuse new work, cancel outgoing migrations that have not
  // switched over (their VMs keep running).
  void BeginShutdown();
  // True while a migration that has switched over is still under way, in
  // either direction: exiting then would lose the VM.
  bool HasIncompletePostcopy();

  // The agent's events: VM lifecycle, both sides' migration phases,
  // parameter changes, recoveries; the control service adds refusals.
  // ferryd closes it on shutdown, which ends every WatchEvents stream.
  EventLog& events() override { return events_; }
  absl::StatusOr<std::string> Metrics() override { return RenderMetrics(); }

  // The agent's metrics in Prometheus text format (ferryd --metrics-listen;
  // docs/operations.md lists them).
  std::string RenderMetrics();

 private:
  std::unique_ptr<AgentMetrics> metrics_;
  explicit Agent(AgentOptions options);

  void Log(const LogLine& line) const;
  ferry::v1::Vm Describe(const HostedVm& e) const;
  ferry::v1::MigrationResource Describe(const OutgoingMigration& m) const;
  absl::StatusOr<std::shared_ptr<HostedVm>> FindVm(const std::string& name);
  absl::StatusOr<std::shared_ptr<OutgoingMigration>> FindMigration(const std::string& id);
  void RunMigration(std::shared_ptr<OutgoingMigration> m, std::shared_ptr<HostedVm> vm);
  absl::Status Admit(const std::string& migration_id, const std::string& source,
                     const std::string& name, const vmm::VmConfig& config);
  void Release(const std::string& migration_id, const std::string& name, const absl::Status& why);
  // A preflight check's view of Admit: the name free, the limits, nothing
  // reserved (agent_check.cc).
  std::vector<migration::CheckItem> AdmitCheck(const std::string& name,
                                               const vmm::VmConfig& config);
  // The source session's configuration for a migration `request` with
  // options `o` (the callbacks aside).
  migration::SourceConfig SourceConfigFor(const ferry::v1::StartMigrationRequest& request,
                                          const migration::MigrationOptions& o) const;
  // VMs arriving here by migrations not yet completed (VM_STATE_INCOMING).
  std::vector<ferry::v1::Vm> IncomingVms() const;
  // Migrations arriving here (direction "incoming"), ended ones included
  // while the migration service keeps them.
  std::vector<ferry::v1::MigrationResource> IncomingMigrations() const;
  void Adopt(const std::string& migration_id, const std::string& name, std::unique_ptr<vmm::Vm> vm);
  // A lazy restore of VM `name` ended: logged and published (filled, or
  // failed with the reason).
  void RestoreEnded(const std::string& name, const std::string& dir, const absl::Status& result,
                    double fill_ms);

  const AgentOptions options_;
  // Before the services that publish on it, so it outlives them.
  EventLog events_;
  std::string fetch_address_;
  std::unique_ptr<migration::fetch::PageServer> page_server_;
  std::unique_ptr<migration::MigrationService> migration_service_;

  // Guards the registry, the table and the HostedVm fields they document
  // as "under the owner's lock".
  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Its own lock: read while mu_ is held (a migration's config).
  mutable absl::Mutex address_mu_;
  std::string control_address_ ABSL_GUARDED_BY(address_mu_);
  VmRegistry vms_ ABSL_GUARDED_BY(mu_);
  MigrationTable migrations_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_AGENT_H_
