// Supervisor: ferryd with --state-dir. Each VM runs in a ferry-vmm process
// of its own (vmm_process.h), started in its own session, so that VMs and
// their migrations outlive ferryd: a restart (kill -9 included) re-adopts
// every process it finds in the state directory. The supervisor enforces
// the host's admission limits and routes each Control call to the process
// of its VM or migration (ControlBackend); page data never passes through
// it. An incoming migration's Hello is admitted here and redirected to a
// process started for it (MigrationRouter, migration_router.h).
//
// A process that exits by itself (killed, crashed) leaves its VM failed:
// GetVm and ListVms show it VM_STATE_FAILED with the reason (its exit
// status when it was this ferryd's child) until it is deleted. A process
// whose VM is gone (deleted, or migrated away) and whose migrations ended
// is stopped; the ended migrations' final states stay here for
// GetMigration and ListMigrations (kept as AgentOptions says, in memory:
// a restart forgets them).
//
// Events: each process's events (its VM, its migrations) are republished
// on the supervisor's event log, with the supervisor's sequence numbers,
// beside the supervisor's own (refusals, VMs lost). After a restart the
// log starts afresh with what each process still holds.
//
// Threads: every method is thread-safe; calls to a process hold no lock.
#ifndef FERRY_MIGRATION_AGENT_SUPERVISOR_H_
#define FERRY_MIGRATION_AGENT_SUPERVISOR_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/unique_fd.h"
#include "ferry/v1/migration.pb.h"
#include "grpcpp/grpcpp.h"
#include "migration/agent/agent.h"
#include "migration/agent/control_backend.h"
#include "migration/agent/vmm_client.h"
#include "migration/agent/vmm_process.h"
#include "migration/preflight.h"

namespace ferry::agent {

struct SupervisorOptions {
  std::string state_dir;    // created 0700 if missing
  std::string vmm_binary;   // ferry-vmm; empty: FindFerryVmm()
  std::string listen_host;  // where VMM processes listen (ferryd --listen's host)
  std::string fetch_advertise_host;
  // --migration-ports: each process takes two ports (migration, fetch) from
  // [first, last]; 0, 0: any free ports.
  int first_port = 0;
  int last_port = 0;
  std::vector<std::string> vmm_args;  // TLS files, limits, log level
  // Limits, the migration token, retention and the log as for an Agent.
  AgentOptions agent;
};

class Supervisor final : public ControlBackend {
 public:
  // Creates the state directory, locks it (one ferryd per directory:
  // FailedPrecondition naming the other's pid while one runs), checks that
  // ferry-vmm can be found, and re-adopts the processes recorded there.
  static absl::StatusOr<std::unique_ptr<Supervisor>> Start(SupervisorOptions options);
  // Leaves every process running.
  ~Supervisor() override;

  absl::StatusOr<ferry::v1::Vm> CreateVm(const ferry::v1::CreateVmRequest& request) override;
  absl::StatusOr<ferry::v1::Vm> GetVm(const std::string& name) override;
  std::vector<ferry::v1::Vm> ListVms() override;
  absl::Status DeleteVm(const std::string& name) override;
  absl::StatusOr<ferry::v1::VmStatsResponse> VmStats(const std::string& name) override;
  absl::StatusOr<ferry::v1::VerifyVmResponse> VerifyVm(
      const ferry::v1::VerifyVmRequest& request) override;
  absl::StatusOr<ferry::v1::Vm> ResumeVm(const ferry::v1::ResumeVmRequest& request) override;
  // Routed to the VM's process, which writes the snapshot.
  absl::StatusOr<ferry::v1::SnapshotVmResponse> SnapshotVm(
      const ferry::v1::SnapshotVmRequest& request) override;
  // Opens the snapshot here (its memory size is what the new process is
  // admitted with; a snapshot that does not open starts no process),
  // starts a process for the VM as CreateVm does, and has it restore the
  // VM; a process whose restore fails is stopped.
  absl::StatusOr<ferry::v1::Vm> RestoreVm(const ferry::v1::RestoreVmRequest& request) override;
  // Plans the change against the VM as its process describes it; a grow is
  // admitted against the host's limits (the record counts the larger size
  // from then on), then the change is routed to the VM's process, and the
  // record rewritten with what the map holds after it (supervisor_memory.cc).
  absl::StatusOr<ferry::v1::ChangeVmMemoryResponse> ChangeVmMemory(
      const ferry::v1::ChangeVmMemoryRequest& request) override;
  absl::StatusOr<ferry::v1::MigrationResource> StartMigration(
      const ferry::v1::StartMigrationRequest& request) override;
  ferry::v1::CheckMigrationResponse CheckMigration(
      const ferry::v1::StartMigrationRequest& request) override;
  absl::StatusOr<ferry::v1::MigrationResource> GetMigration(const std::string& id) override;
  std::vector<ferry::v1::MigrationResource> ListMigrations() override;
  absl::StatusOr<ferry::v1::MigrationResource> CancelMigration(const std::string& id) override;
  absl::StatusOr<ferry::v1::MigrationResource> RecoverMigration(
      const ferry::v1::RecoverMigrationRequest& request) override;
  absl::StatusOr<ferry::v1::MigrationResource> SetMigrationParameters(
      const ferry::v1::SetMigrationParametersRequest& request) override;
  absl::StatusOr<ferry::v1::MigrationResource> StartPostcopy(const std::string& id) override;
  absl::Status WatchMigration(
      const std::string& id, absl::Duration interval,
      const std::function<bool(const ferry::v1::MigrationResource&)>& write) override;
  EventLog& events() override { return events_; }
  absl::StatusOr<std::string> Metrics() override { return RenderMetrics(); }

  // An incoming migration's Hello: the token, the name and the limits are
  // checked, a process is started for it, and its migration port returned
  // (the Redirect). Errors are the Error to answer.
  absl::StatusOr<int> AdmitIncoming(const ferry::v1::Hello& hello);

  // A preflight check's view of admission (`ferry migrate --check` to this
  // agent): the name, the limits and the port range, as AdmitIncoming would
  // judge them now; nothing reserved, no process started.
  std::vector<migration::CheckItem> AdmitCheck(const std::string& name,
                                               const vmm::VmConfig& config);
  const std::string& migration_token() const { return options_.agent.migration_token; }

  // Prometheus text: the supervisor's own figures and every process's
  // (MergeExpositions, each sample labelled vm="NAME"; docs/operations.md).
  // A process that does not answer within 2 s is left out and counted in
  // ferry_vmm_metrics_unavailable.
  std::string RenderMetrics();

 private:
  struct Vmm {
    VmmRecord record;
    std::string dir;
    bool child = false;  // started by this ferryd (waitpid gives its status)
    int pidfd = -1;      // adopted ones: readable once the process exited
    bool stopping = false;
    // Under mu_: CreateVm or RestoreVm is under way in it (no VM listed
    // yet): the reaper leaves it be.
    bool creating = false;
    // Under mu_: a ChangeVmMemory is routed to it (one at a time).
    bool changing_memory = false;
    // Under mu_: its VM left it (its VM_DELETED event: migrated away or
    // deleted). It holds no VM whatever its age: its name is free here and
    // the reaper stops it as soon as its migrations ended.
    bool vm_gone = false;
    std::unique_ptr<VmmClient> client;
    // Republishes the process's events on the supervisor's log.
    std::thread forwarder;
    grpc::ClientContext* watch = nullptr;  // under mu_; the forwarder's stream
    bool forwarding_done = false;          // under mu_
    // The migrations its events named that have not ended, with the side
    // and the last phase its events told, under mu_: what fails with the
    // process should it exit.
    struct OpenMigration {
      std::string side;
      v1::MigrationPhase phase = v1::MIGRATION_PHASE_SETUP;
      // As its process last answered, at its start and each phase change:
      // what a failure report starts from (mode, peer, progress).
      v1::MigrationResource last;
    };
    std::map<std::string, OpenMigration> open_migrations;
  };
  explicit Supervisor(SupervisorOptions options);

  void Log(const LogLine& line) const;
  absl::Status Adopt();
  std::shared_ptr<Vmm> Track(const VmmRecord& record, bool child);
  // Starts a process for VM `name`, with the admission checks under the
  // lock: `memory_bytes` is admitted, and the process may hold up to
  // `max_memory_bytes` (its --max-memory; the VM's own maximum).
  absl::StatusOr<std::shared_ptr<Vmm>> Launch(const std::string& name, uint64_t memory_bytes,
                                              uint64_t max_memory_bytes, const std::string& role,
                                              const std::string& migration_id);
  // CreateVm or RestoreVm in `vmm` returned `result`: the reaper may look
  // at it again; a process whose VM did not start is stopped.
  void Created(const std::shared_ptr<Vmm>& vmm, const absl::Status& result);
  absl::StatusOr<std::pair<int, int>> PickPorts() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether VM `name` of `memory_bytes` may start here now (the name free,
  // --max-vms, --max-memory).
  absl::Status Admissible(const std::string& name, uint64_t memory_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Guest memory admitted on this host: every process's and every launch's.
  uint64_t MemoryInUse() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records `memory_bytes` as `vmm`'s admitted memory, in memory and in its
  // record on disk (what a restarted ferryd counts). A write that fails is
  // logged: the count here is right, a restart's may be stale.
  void SetAdmittedMemory(Vmm& vmm, uint64_t memory_bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The migration a process was started to receive, as the process tells
  // it, if it came and ended without completing (then no VM will arrive
  // in it); nullopt otherwise.
  std::optional<v1::MigrationResource> IncomingEndedUncompleted(Vmm& vmm);
  absl::StatusOr<std::shared_ptr<Vmm>> ByName(const std::string& name);
  absl::StatusOr<std::shared_ptr<Vmm>> ByMigration(const std::string& id);
  // A process that exited by itself: its VM FAILED (kept in lost_ until
  // deleted) unless it was still receiving it before switchover; its open
  // migrations FAILED, kept as finished.
  void Lost(const std::shared_ptr<Vmm>& vmm);
  // SIGTERM, then SIGKILL after 5 s; forgets it and removes its directory.
  void Stop(const std::shared_ptr<Vmm>& vmm);
  // Every 250 ms: processes that exited, and processes with nothing left.
  void ReaperLoop();
  void ReapOnce();
  // The forwarder's loop: the process's events, from its first, on
  // events_, until the process is forgotten or the supervisor stops.
  void Forward(Vmm* vmm);
  // Ends and joins a forgotten process's forwarder.
  void EndForwarder(const std::shared_ptr<Vmm>& vmm);
  // Why a process that exited is gone, as a VM's held_reason.
  std::string ExitReason(Vmm& vmm);

  const SupervisorOptions options_;
  EventLog events_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Vmm>> vmms_ ABSL_GUARDED_BY(mu_);  // by key
  // Names reserved by a launch in progress.
  std::map<std::string, uint64_t> launching_ ABSL_GUARDED_BY(mu_);
  // VMs whose process exited: their last known state, FAILED, with why.
  std::map<std::string, ferry::v1::Vm> lost_ ABSL_GUARDED_BY(mu_);
  // Migrations whose process was stopped: their final states.
  std::map<std::string, ferry::v1::MigrationResource> finished_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> finished_at_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reaper_;
  UniqueFd lock_;  // the state directory's (LockStateDir): held while this runs
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_SUPERVISOR_H_
