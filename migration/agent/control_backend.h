// ControlBackend: what ferry.v1.Control serves, as absl types. The control
// service (control_service.h) authorizes and bounds each call, then hands
// it to a backend:
//   - Agent: the VMs and migrations of this process (ferryd without
//     --state-dir, and each ferry-vmm process);
//   - Supervisor: routes each call to the ferry-vmm process of its VM or
//     migration (ferryd --state-dir, docs/architecture.md "Processes");
//   - VmmClient: one ferry-vmm process's Control API over its Unix socket.
// Each call's contract is the RPC's (proto/ferry/v1/control.proto).
#ifndef FERRY_MIGRATION_AGENT_CONTROL_BACKEND_H_
#define FERRY_MIGRATION_AGENT_CONTROL_BACKEND_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ferry/v1/control.pb.h"
#include "migration/agent/event_log.h"

namespace ferry::agent {

class ControlBackend {
 public:
  virtual ~ControlBackend() = default;

  virtual absl::StatusOr<ferry::v1::Vm> CreateVm(const ferry::v1::CreateVmRequest& request) = 0;
  virtual absl::StatusOr<ferry::v1::Vm> GetVm(const std::string& name) = 0;
  virtual std::vector<ferry::v1::Vm> ListVms() = 0;
  virtual absl::Status DeleteVm(const std::string& name) = 0;
  virtual absl::StatusOr<ferry::v1::VmStatsResponse> VmStats(const std::string& name) = 0;
  virtual absl::StatusOr<ferry::v1::VerifyVmResponse> VerifyVm(
      const ferry::v1::VerifyVmRequest& request) = 0;
  virtual absl::StatusOr<ferry::v1::Vm> ResumeVm(const ferry::v1::ResumeVmRequest& request) = 0;
  // Snapshots and restores (docs/snapshots.md). Both block until the
  // snapshot is written, or the restored VM runs (an eager restore reads
  // every page first).
  virtual absl::StatusOr<ferry::v1::SnapshotVmResponse> SnapshotVm(
      const ferry::v1::SnapshotVmRequest& request) = 0;
  virtual absl::StatusOr<ferry::v1::Vm> RestoreVm(const ferry::v1::RestoreVmRequest& request) = 0;
  // A memory map transaction (docs/operations.md, "Changing a VM's
  // memory"): a grow is admitted against the host's memory limit first,
  // a shrink gives memory back. Blocks until the map changed or was
  // refused (the vCPUs are held off for an op, not for long).
  virtual absl::StatusOr<ferry::v1::ChangeVmMemoryResponse> ChangeVmMemory(
      const ferry::v1::ChangeVmMemoryRequest& request) = 0;

  virtual absl::StatusOr<ferry::v1::MigrationResource> StartMigration(
      const ferry::v1::StartMigrationRequest& request) = 0;
  virtual ferry::v1::CheckMigrationResponse CheckMigration(
      const ferry::v1::StartMigrationRequest& request) = 0;
  virtual absl::StatusOr<ferry::v1::MigrationResource> GetMigration(const std::string& id) = 0;
  virtual std::vector<ferry::v1::MigrationResource> ListMigrations() = 0;
  virtual absl::StatusOr<ferry::v1::MigrationResource> CancelMigration(const std::string& id) = 0;
  virtual absl::StatusOr<ferry::v1::MigrationResource> RecoverMigration(
      const ferry::v1::RecoverMigrationRequest& request) = 0;
  virtual absl::StatusOr<ferry::v1::MigrationResource> SetMigrationParameters(
      const ferry::v1::SetMigrationParametersRequest& request) = 0;
  virtual absl::StatusOr<ferry::v1::MigrationResource> StartPostcopy(const std::string& id) = 0;
  // Calls `write` with a snapshot every `interval` and on the end; returns
  // when the migration ended (after writing its final state) or `write`
  // returned false.
  virtual absl::Status WatchMigration(
      const std::string& id, absl::Duration interval,
      const std::function<bool(const ferry::v1::MigrationResource&)>& write) = 0;

  // The Prometheus exposition (GetMetrics, --metrics-listen).
  virtual absl::StatusOr<std::string> Metrics() = 0;

  // The events WatchEvents serves; the control service publishes refusals
  // on it.
  virtual EventLog& events() = 0;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_CONTROL_BACKEND_H_
