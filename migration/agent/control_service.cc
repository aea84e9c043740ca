#include "migration/agent/control_service.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "base/grpc_status.h"
#include "base/log_line.h"
#include "migration/api/names.h"

namespace ferry::agent {
namespace {

template <typename T, typename Out>
grpc::Status Reply(absl::StatusOr<T> result, Out* out) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *out = std::move(result).value();
  return grpc::Status::OK;
}

// Every name, id and address a caller supplies is bounded here, before the
// agent echoes it into an error or a log line: a longer one is refused
// with its length only.
constexpr size_t kMaxIdBytes = 64;        // migration and request ids
constexpr size_t kMaxAddressBytes = 255;  // HOST:PORT

absl::Status Bound(const std::string& value, size_t max, const char* what) {
  if (value.size() <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("%s is %d bytes, at most %d", what, value.size(), max));
}
absl::Status BoundName(const std::string& name) {
  return Bound(name, api::kMaxVmNameSize, "a VM name");
}
absl::Status BoundId(const std::string& id) { return Bound(id, kMaxIdBytes, "a migration id"); }

// The first failing check, or OK.
absl::Status First(std::initializer_list<absl::Status> checks) {
  for (const absl::Status& s : checks)
    if (!s.ok()) return s;
  return absl::OkStatus();
}

}  // namespace

absl::Status ControlService::Authorize(grpc::ServerContext* ctx, Permission permission,
                                       const char* what, const std::string& destination) const {
  if (!policy_) return absl::OkStatus();
  const std::string identity = CallerIdentity(*ctx);
  absl::Status s = policy_->Check(identity, permission, what, destination);
  if (!s.ok() && log_)
    log_(LogLine(LogLevel::kWarn, "authz.denied")
             .Kv("identity", identity.empty() ? "none" : identity.substr(0, 64))
             .Kv("call", what)
             .Kv("reason", s.message())
             .str());
  return s;
}

#define FERRY_AUTHORIZED(...)                                                          \
  do {                                                                                 \
    if (absl::Status a = Authorize(ctx, __VA_ARGS__); !a.ok()) return ToGrpcStatus(a); \
  } while (0)

#define FERRY_BOUNDED(...)                                                      \
  do {                                                                          \
    if (absl::Status b = First({__VA_ARGS__}); !b.ok()) return ToGrpcStatus(b); \
  } while (0)

grpc::Status ControlService::CreateVm(grpc::ServerContext* ctx, const ferry::v1::CreateVmRequest* r,
                                      ferry::v1::Vm* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kVm, "create VMs");
  return Reply(agent_->CreateVm(*r), out);
}

grpc::Status ControlService::GetVm(grpc::ServerContext* ctx, const ferry::v1::GetVmRequest* r,
                                   ferry::v1::Vm* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  return Reply(agent_->GetVm(r->name()), out);
}

grpc::Status ControlService::ListVms(grpc::ServerContext* ctx, const ferry::v1::ListVmsRequest*,
                                     ferry::v1::ListVmsResponse* out) {
  FERRY_AUTHORIZED(Permission::kRead, "read");
  for (auto& vm : agent_->ListVms()) *out->add_vms() = std::move(vm);
  return grpc::Status::OK;
}

grpc::Status ControlService::DeleteVm(grpc::ServerContext* ctx, const ferry::v1::DeleteVmRequest* r,
                                      ferry::v1::DeleteVmResponse*) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kVm, "delete VMs");
  return ToGrpcStatus(agent_->DeleteVm(r->name()));
}

grpc::Status ControlService::VmStats(grpc::ServerContext* ctx, const ferry::v1::VmStatsRequest* r,
                                     ferry::v1::VmStatsResponse* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  return Reply(agent_->VmStats(r->name()), out);
}

grpc::Status ControlService::VerifyVm(grpc::ServerContext* ctx, const ferry::v1::VerifyVmRequest* r,
                                      ferry::v1::VerifyVmResponse* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kVm, "verify VMs");
  return Reply(agent_->VerifyVm(*r), out);
}

grpc::Status ControlService::StartMigration(grpc::ServerContext* ctx,
                                            const ferry::v1::StartMigrationRequest* r,
                                            ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundName(r->vm_name()), Bound(r->request_id(), kMaxIdBytes, "a request id"),
                Bound(r->destination(), kMaxAddressBytes, "a destination address"));
  FERRY_AUTHORIZED(Permission::kMigrate, "start migrations", r->destination());
  return Reply(agent_->StartMigration(*r), out);
}

grpc::Status ControlService::CheckMigration(grpc::ServerContext* ctx,
                                            const ferry::v1::StartMigrationRequest* r,
                                            ferry::v1::CheckMigrationResponse* out) {
  FERRY_BOUNDED(BoundName(r->vm_name()), Bound(r->request_id(), kMaxIdBytes, "a request id"),
                Bound(r->destination(), kMaxAddressBytes, "a destination address"));
  // A check reaches the destination with this agent's token: as much a
  // right as starting the migration.
  FERRY_AUTHORIZED(Permission::kMigrate, "check migrations", r->destination());
  *out = agent_->CheckMigration(*r);
  return grpc::Status::OK;
}

grpc::Status ControlService::GetMigration(grpc::ServerContext* ctx,
                                          const ferry::v1::GetMigrationRequest* r,
                                          ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  return Reply(agent_->GetMigration(r->id()), out);
}

grpc::Status ControlService::ListMigrations(grpc::ServerContext* ctx,
                                            const ferry::v1::ListMigrationsRequest*,
                                            ferry::v1::ListMigrationsResponse* out) {
  FERRY_AUTHORIZED(Permission::kRead, "read");
  for (auto& m : agent_->ListMigrations()) *out->add_migrations() = std::move(m);
  return grpc::Status::OK;
}

grpc::Status ControlService::WatchMigration(grpc::ServerContext* ctx,
                                            const ferry::v1::WatchMigrationRequest* r,
                                            grpc::ServerWriter<ferry::v1::MigrationResource>* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  const int64_t ms = r->interval_ms() > 0 ? std::max<int64_t>(r->interval_ms(), 50) : 250;
  return ToGrpcStatus(agent_->WatchMigration(
      r->id(), absl::Milliseconds(ms),
      [&](const ferry::v1::MigrationResource& m) { return !ctx->IsCancelled() && out->Write(m); }));
}

grpc::Status ControlService::RecoverMigration(grpc::ServerContext* ctx,
                                              const ferry::v1::RecoverMigrationRequest* r,
                                              ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()),
                Bound(r->destination(), kMaxAddressBytes, "a destination address"));
  FERRY_AUTHORIZED(Permission::kMigrate, "recover migrations", r->destination());
  return Reply(agent_->RecoverMigration(*r), out);
}

grpc::Status ControlService::SetMigrationParameters(
    grpc::ServerContext* ctx, const ferry::v1::SetMigrationParametersRequest* r,
    ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kMigrate, "steer migrations");
  return Reply(agent_->SetMigrationParameters(*r), out);
}

grpc::Status ControlService::StartPostcopy(grpc::ServerContext* ctx,
                                           const ferry::v1::StartPostcopyRequest* r,
                                           ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kMigrate, "steer migrations");
  return Reply(agent_->StartPostcopy(r->id()), out);
}

grpc::Status ControlService::ResumeVm(grpc::ServerContext* ctx, const ferry::v1::ResumeVmRequest* r,
                                      ferry::v1::Vm* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kVm, "resume VMs");
  return Reply(agent_->ResumeVm(*r), out);
}

grpc::Status ControlService::CancelMigration(grpc::ServerContext* ctx,
                                             const ferry::v1::CancelMigrationRequest* r,
                                             ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kMigrate, "cancel migrations");
  return Reply(agent_->CancelMigration(r->id()), out);
}

}  // namespace ferry::agent
