#include "migration/agent/control_service.h"

#include <algorithm>

#include "base/grpc_status.h"

namespace ferry::agent {
namespace {

template <typename T, typename Out>
grpc::Status Reply(absl::StatusOr<T> result, Out* out) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *out = std::move(result).value();
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ControlService::CreateVm(grpc::ServerContext*, const ferry::v1::CreateVmRequest* r,
                                      ferry::v1::Vm* out) {
  return Reply(agent_->CreateVm(*r), out);
}

grpc::Status ControlService::GetVm(grpc::ServerContext*, const ferry::v1::GetVmRequest* r,
                                   ferry::v1::Vm* out) {
  return Reply(agent_->GetVm(r->name()), out);
}

grpc::Status ControlService::ListVms(grpc::ServerContext*, const ferry::v1::ListVmsRequest*,
                                     ferry::v1::ListVmsResponse* out) {
  for (auto& vm : agent_->ListVms()) *out->add_vms() = std::move(vm);
  return grpc::Status::OK;
}

grpc::Status ControlService::DeleteVm(grpc::ServerContext*, const ferry::v1::DeleteVmRequest* r,
                                      ferry::v1::DeleteVmResponse*) {
  return ToGrpcStatus(agent_->DeleteVm(r->name()));
}

grpc::Status ControlService::VmStats(grpc::ServerContext*, const ferry::v1::VmStatsRequest* r,
                                     ferry::v1::VmStatsResponse* out) {
  return Reply(agent_->VmStats(r->name()), out);
}

grpc::Status ControlService::VerifyVm(grpc::ServerContext*, const ferry::v1::VerifyVmRequest* r,
                                      ferry::v1::VerifyVmResponse* out) {
  return Reply(agent_->VerifyVm(*r), out);
}

grpc::Status ControlService::StartMigration(grpc::ServerContext*,
                                            const ferry::v1::StartMigrationRequest* r,
                                            ferry::v1::MigrationResource* out) {
  return Reply(agent_->StartMigration(*r), out);
}

grpc::Status ControlService::GetMigration(grpc::ServerContext*,
                                          const ferry::v1::GetMigrationRequest* r,
                                          ferry::v1::MigrationResource* out) {
  return Reply(agent_->GetMigration(r->id()), out);
}

grpc::Status ControlService::ListMigrations(grpc::ServerContext*,
                                            const ferry::v1::ListMigrationsRequest*,
                                            ferry::v1::ListMigrationsResponse* out) {
  for (auto& m : agent_->ListMigrations()) *out->add_migrations() = std::move(m);
  return grpc::Status::OK;
}

grpc::Status ControlService::WatchMigration(
    grpc::ServerContext* ctx, const ferry::v1::WatchMigrationRequest* r,
    grpc::ServerWriter<ferry::v1::MigrationResource>* out) {
  const int64_t ms = r->interval_ms() > 0 ? std::max<int64_t>(r->interval_ms(), 50) : 250;
  return ToGrpcStatus(agent_->WatchMigration(
      r->id(), absl::Milliseconds(ms), [&](const ferry::v1::MigrationResource& m) {
        return !ctx->IsCancelled() && out->Write(m);
      }));
}

grpc::Status ControlService::RecoverMigration(grpc::ServerContext*,
                                              const ferry::v1::RecoverMigrationRequest* r,
                                              ferry::v1::MigrationResource* out) {
  return Reply(agent_->RecoverMigration(*r), out);
}

grpc::Status ControlService::SetMigrationParameters(
    grpc::ServerContext*, const ferry::v1::SetMigrationParametersRequest* r,
    ferry::v1::MigrationResource* out) {
  return Reply(agent_->SetMigrationParameters(*r), out);
}

grpc::Status ControlService::StartPostcopy(grpc::ServerContext*,
                                           const ferry::v1::StartPostcopyRequest* r,
                                           ferry::v1::MigrationResource* out) {
  return Reply(agent_->StartPostcopy(r->id()), out);
}

grpc::Status ControlService::ResumeVm(grpc::ServerContext*, const ferry::v1::ResumeVmRequest* r,
                                      ferry::v1::Vm* out) {
  return Reply(agent_->ResumeVm(*r), out);
}

grpc::Status ControlService::CancelMigration(grpc::ServerContext*,
                                             const ferry::v1::CancelMigrationRequest* r,
                                             ferry::v1::MigrationResource* out) {
  return Reply(agent_->CancelMigration(r->id()), out);
}

}  // namespace ferry::agent
