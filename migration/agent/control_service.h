// ControlService: ferry.v1.Control over an Agent (synchronous gRPC: the
// handlers may block, e.g. VerifyVm and WatchMigration). Status codes come
// from the agent through ToGrpcStatus.
#ifndef FERRY_MIGRATION_AGENT_CONTROL_SERVICE_H_
#define FERRY_MIGRATION_AGENT_CONTROL_SERVICE_H_

#include "ferry/v1/control.grpc.pb.h"
#include "migration/agent/agent.h"

namespace ferry::agent {

class ControlService final : public ferry::v1::Control::Service {
 public:
  explicit ControlService(Agent* agent) : agent_(agent) {}

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
  grpc::Status CancelMigration(grpc::ServerContext*, const ferry::v1::CancelMigrationRequest* r,
                               ferry::v1::MigrationResource* out) override;

 private:
  Agent* const agent_;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_CONTROL_SERVICE_H_
