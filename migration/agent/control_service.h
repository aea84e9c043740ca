// ControlService: ferry.v1.Control over a ControlBackend (an Agent, or the
// Supervisor of ferry-vmm processes) (synchronous gRPC: the
// handlers may block, e.g. VerifyVm and WatchMigration). Status codes come
// from the agent through ToGrpcStatus. With a policy (ferryd --authz) every
// call is first authorized for the caller's certificate identity; a call
// refused is PERMISSION_DENIED and logged (event=authz.denied) with the
// identity. Every call refused (any error status: authorization, bounds,
// invalid arguments, not found, limits) is also published on the agent's
// event log as REQUEST_REFUSED, with the caller's identity when known.
#ifndef FERRY_MIGRATION_AGENT_CONTROL_SERVICE_H_
#define FERRY_MIGRATION_AGENT_CONTROL_SERVICE_H_

#include <functional>
#include <optional>
#include <string>

#include "ferry/v1/control.grpc.pb.h"
#include "migration/agent/authz.h"
#include "migration/agent/control_backend.h"

namespace ferry::agent {

class ControlService final : public ferry::v1::Control::Service {
 public:
  // `log` gets one rendered log line per refused call (may be empty).
  explicit ControlService(ControlBackend* agent, std::optional<AuthzPolicy> policy = std::nullopt,
                          std::function<void(const std::string&)> log = nullptr)
      : agent_(agent), policy_(std::move(policy)), log_(std::move(log)) {}

  grpc::Status CreateVm(grpc::ServerContext*, const ferry::v1::CreateVmRequest* r,
                        ferry::v1::Vm* out) override;
  grpc::Status GetVm(grpc::ServerContext*, const ferry::v1::GetVmRequest* r,
                     ferry::v1::Vm* out) override;
  grpc::Status ListVms(grpc::ServerContext*, const ferry::v1::ListVmsRequest* r,
                       ferry::v1::ListVmsResponse* out) override;
  grpc::Status DeleteVm(grpc::ServerContext*, const ferry::v1::DeleteVmRequest* r,
                        ferry::v1::DeleteVmResponse* out) override;
  grpc::Status VmStats(grpc::ServerContext*, const ferry::v1::VmStatsRequest* r,
                       ferry::v1::VmStatsResponse* out) override;
  grpc::Status VerifyVm(grpc::ServerContext*, const ferry::v1::VerifyVmRequest* r,
                        ferry::v1::VerifyVmResponse* out) override;
  grpc::Status SetMigrationParameters(grpc::ServerContext*,
                                      const ferry::v1::SetMigrationParametersRequest* r,
                                      ferry::v1::MigrationResource* out) override;
  grpc::Status CheckMigration(grpc::ServerContext*, const ferry::v1::StartMigrationRequest* r,
                              ferry::v1::CheckMigrationResponse* out) override;
  grpc::Status StartPostcopy(grpc::ServerContext*, const ferry::v1::StartPostcopyRequest* r,
                             ferry::v1::MigrationResource* out) override;
  grpc::Status StartMigration(grpc::ServerContext*, const ferry::v1::StartMigrationRequest* r,
                              ferry::v1::MigrationResource* out) override;
  grpc::Status GetMigration(grpc::ServerContext*, const ferry::v1::GetMigrationRequest* r,
                            ferry::v1::MigrationResource* out) override;
  grpc::Status ListMigrations(grpc::ServerContext*, const ferry::v1::ListMigrationsRequest* r,
                              ferry::v1::ListMigrationsResponse* out) override;
  grpc::Status WatchMigration(grpc::ServerContext* ctx,
                              const ferry::v1::WatchMigrationRequest* r,
                              grpc::ServerWriter<ferry::v1::MigrationResource>* out) override;
  grpc::Status RecoverMigration(grpc::ServerContext*, const ferry::v1::RecoverMigrationRequest* r,
                                ferry::v1::MigrationResource* out) override;
  grpc::Status ResumeVm(grpc::ServerContext*, const ferry::v1::ResumeVmRequest* r,
                        ferry::v1::Vm* out) override;
  grpc::Status SnapshotVm(grpc::ServerContext*, const ferry::v1::SnapshotVmRequest* r,
                          ferry::v1::SnapshotVmResponse* out) override;
  grpc::Status RestoreVm(grpc::ServerContext*, const ferry::v1::RestoreVmRequest* r,
                         ferry::v1::Vm* out) override;
  grpc::Status ChangeVmMemory(grpc::ServerContext*, const ferry::v1::ChangeVmMemoryRequest* r,
                              ferry::v1::ChangeVmMemoryResponse* out) override;
  grpc::Status CancelMigration(grpc::ServerContext*, const ferry::v1::CancelMigrationRequest* r,
                               ferry::v1::MigrationResource* out) override;
  // Streams the agent's events until the client cancels or the agent
  // closes its event log (shutdown).
  grpc::Status GetMetrics(grpc::ServerContext* ctx, const ferry::v1::GetMetricsRequest* r,
                          ferry::v1::GetMetricsResponse* out) override;
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const ferry::v1::WatchEventsRequest* r,
                           grpc::ServerWriter<ferry::v1::Event>* out) override;

 private:
  // `why` as the call's status; a refusal (not OK, not CANCELLED) is
  // published as a REQUEST_REFUSED event naming `rpc`.
  grpc::Status Refuse(grpc::ServerContext* ctx, const char* rpc, const absl::Status& why) const;
  template <typename T, typename Out>
  grpc::Status Reply(grpc::ServerContext* ctx, const char* rpc, absl::StatusOr<T> result,
                     Out* out) const {
    if (!result.ok()) return Refuse(ctx, rpc, result.status());
    *out = std::move(result).value();
    return grpc::Status::OK;
  }
  // OK when there is no policy or it allows the caller `permission`.
  absl::Status Authorize(grpc::ServerContext* ctx, Permission permission, const char* what,
                         const std::string& destination = "") const;

  ControlBackend* const agent_;
  const std::optional<AuthzPolicy> policy_;
  const std::function<void(const std::string&)> log_;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_CONTROL_SERVICE_H_
