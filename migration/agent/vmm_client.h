// VmmClient: one ferry-vmm process's ferry.v1.Control API, reached over
// its Unix socket in the state directory, as a ControlBackend. A call the
// process cannot answer (it is gone, or does not answer within `deadline`)
// is UNAVAILABLE naming the process; every other status is the process's
// own. The VMM's events are its own: events() here is a local log nobody
// publishes on.
#ifndef FERRY_MIGRATION_AGENT_VMM_CLIENT_H_
#define FERRY_MIGRATION_AGENT_VMM_CLIENT_H_

#include <memory>
#include <string>

#include "ferry/v1/control.grpc.pb.h"
#include "migration/agent/control_backend.h"

namespace ferry::agent {

class VmmClient final : public ControlBackend {
 public:
  // `socket_path`: the process's Control socket; `what` names it in errors
  // ("the VMM of VM web (pid 1234)").
  VmmClient(const std::string& socket_path, std::string what,
            absl::Duration deadline = absl::Seconds(30));

  absl::StatusOr<ferry::v1::Vm> CreateVm(const ferry::v1::CreateVmRequest& request) override;
  absl::StatusOr<ferry::v1::Vm> GetVm(const std::string& name) override;
  // Empty when the process cannot answer.
  std::vector<ferry::v1::Vm> ListVms() override;
  absl::StatusOr<std::vector<ferry::v1::Vm>> TryListVms();
  absl::Status DeleteVm(const std::string& name) override;
  absl::StatusOr<ferry::v1::VmStatsResponse> VmStats(const std::string& name) override;
  absl::StatusOr<ferry::v1::VerifyVmResponse> VerifyVm(
      const ferry::v1::VerifyVmRequest& request) override;
  absl::StatusOr<ferry::v1::Vm> ResumeVm(const ferry::v1::ResumeVmRequest& request) override;
  // Snapshot and restore take as long as the memory takes to write or read:
  // no deadline of ours (like VerifyVm).
  absl::StatusOr<ferry::v1::SnapshotVmResponse> SnapshotVm(
      const ferry::v1::SnapshotVmRequest& request) override;
  absl::StatusOr<ferry::v1::Vm> RestoreVm(const ferry::v1::RestoreVmRequest& request) override;
  absl::StatusOr<ferry::v1::ChangeVmMemoryResponse> ChangeVmMemory(
      const ferry::v1::ChangeVmMemoryRequest& request) override;
  absl::StatusOr<ferry::v1::MigrationResource> StartMigration(
      const ferry::v1::StartMigrationRequest& request) override;
  ferry::v1::CheckMigrationResponse CheckMigration(
      const ferry::v1::StartMigrationRequest& request) override;
  absl::StatusOr<ferry::v1::MigrationResource> GetMigration(const std::string& id) override;
  // Empty when the process cannot answer.
  std::vector<ferry::v1::MigrationResource> ListMigrations() override;
  absl::StatusOr<std::vector<ferry::v1::MigrationResource>> TryListMigrations();
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
  // Its exposition, within 2 s (a scrape must not wait on one process).
  absl::StatusOr<std::string> Metrics() override;

  // Streams the process's events from `since` (WatchEvents) to `on_event`
  // until it returns false, `ctx` is cancelled or the stream ends.
  absl::Status WatchEvents(uint64_t since, grpc::ClientContext* ctx,
                           const std::function<bool(const ferry::v1::Event&)>& on_event);

 private:
  // `s` as absl, an unreachable process named.
  absl::Status Convert(const grpc::Status& s) const;
  void Prepare(grpc::ClientContext* ctx, absl::Duration deadline) const;

  const std::string what_;
  const absl::Duration deadline_;
  std::unique_ptr<ferry::v1::Control::Stub> stub_;
  EventLog events_;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_VMM_CLIENT_H_
