#include "migration/agent/control_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/grpc_status.h"
#include "base/log_line.h"
#include "base/status_macros.h"
#include "migration/agent/memory_change.h"
#include "migration/api/names.h"

namespace ferry::agent {
namespace {

// Every name, id and address a caller supplies is bounded here, before the
// agent echoes it into an error or a log line: a longer one is refused
// with its length only.
constexpr size_t kMaxIdBytes = 64;        // migration and request ids
constexpr size_t kMaxAddressBytes = 255;  // HOST:PORT
constexpr size_t kMaxPathBytes = 1024;    // a snapshot directory

absl::Status Bound(const std::string& value, size_t max, const char* what) {
  if (value.size() <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("%s is %d bytes, at most %d", what, value.size(), max));
}
absl::Status BoundName(const std::string& name) {
  return Bound(name, api::kMaxVmNameSize, "a VM name");
}
absl::Status BoundId(const std::string& id) { return Bound(id, kMaxIdBytes, "a migration id"); }
// A VM the call names must be named (the agent would only say "not found").
absl::Status NameGiven(const std::string& name) {
  if (!name.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError("no VM name given");
}
// A snapshot directory: an absolute path on the agent's host, bounded, with
// no NUL byte (a C string would end there: another path than the one asked).
absl::Status SnapshotDir(const std::string& dir) {
  RETURN_IF_ERROR(Bound(dir, kMaxPathBytes, "a snapshot directory"));
  if (dir.empty()) return absl::InvalidArgumentError("no snapshot directory given");
  if (dir.find('\0') != std::string::npos)
    return absl::InvalidArgumentError("a snapshot directory holds a NUL byte");
  if (dir[0] != '/')
    return absl::InvalidArgumentError(absl::StrCat(
        "the snapshot directory must be an absolute path on the agent's host, not '", dir, "'"));
  return absl::OkStatus();
}

// The first failing check, or OK.
absl::Status First(std::initializer_list<absl::Status> checks) {
  for (const absl::Status& s : checks)
    if (!s.ok()) return s;
  return absl::OkStatus();
}

}  // namespace

grpc::Status ControlService::Refuse(grpc::ServerContext* ctx, const char* rpc,
                                    const absl::Status& why) const {
  // A stream the client ended is no refusal.
  if (!why.ok() && why.code() != absl::StatusCode::kCancelled)
    agent_->events().Publish(RefusedEvent(rpc, why, CallerIdentity(*ctx)));
  return ToGrpcStatus(why);
}

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

// Each handler's refusals go through Refuse (an event), named by the
// handler (__func__ is the RPC's name).
#define FERRY_AUTHORIZED(...)                                                                   \
  do {                                                                                          \
    if (absl::Status a = Authorize(ctx, __VA_ARGS__); !a.ok()) return Refuse(ctx, __func__, a); \
  } while (0)

#define FERRY_BOUNDED(...)                                                               \
  do {                                                                                   \
    if (absl::Status b = First({__VA_ARGS__}); !b.ok()) return Refuse(ctx, __func__, b); \
  } while (0)

#define FERRY_REPLY(result) return Reply(ctx, __func__, (result), out)

grpc::Status ControlService::CreateVm(grpc::ServerContext* ctx, const ferry::v1::CreateVmRequest* r,
                                      ferry::v1::Vm* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kVm, "create VMs");
  FERRY_REPLY(agent_->CreateVm(*r));
}

grpc::Status ControlService::GetVm(grpc::ServerContext* ctx, const ferry::v1::GetVmRequest* r,
                                   ferry::v1::Vm* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  FERRY_REPLY(agent_->GetVm(r->name()));
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
  return Refuse(ctx, __func__, agent_->DeleteVm(r->name()));
}

grpc::Status ControlService::VmStats(grpc::ServerContext* ctx, const ferry::v1::VmStatsRequest* r,
                                     ferry::v1::VmStatsResponse* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  FERRY_REPLY(agent_->VmStats(r->name()));
}

grpc::Status ControlService::VerifyVm(grpc::ServerContext* ctx, const ferry::v1::VerifyVmRequest* r,
                                      ferry::v1::VerifyVmResponse* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kVm, "verify VMs");
  FERRY_REPLY(agent_->VerifyVm(*r));
}

grpc::Status ControlService::StartMigration(grpc::ServerContext* ctx,
                                            const ferry::v1::StartMigrationRequest* r,
                                            ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundName(r->vm_name()), Bound(r->request_id(), kMaxIdBytes, "a request id"),
                Bound(r->destination(), kMaxAddressBytes, "a destination address"));
  FERRY_AUTHORIZED(Permission::kMigrate, "start migrations", r->destination());
  FERRY_REPLY(agent_->StartMigration(*r));
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

grpc::Status ControlService::GetMetrics(grpc::ServerContext* ctx,
                                        const ferry::v1::GetMetricsRequest*,
                                        ferry::v1::GetMetricsResponse* out) {
  FERRY_AUTHORIZED(Permission::kRead, "read");
  absl::StatusOr<std::string> text = agent_->Metrics();
  if (!text.ok()) return Refuse(ctx, "GetMetrics", text.status());
  out->set_text(*std::move(text));
  return grpc::Status::OK;
}

grpc::Status ControlService::GetMigration(grpc::ServerContext* ctx,
                                          const ferry::v1::GetMigrationRequest* r,
                                          ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  FERRY_REPLY(agent_->GetMigration(r->id()));
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
  return Refuse(ctx, __func__,
                agent_->WatchMigration(r->id(), absl::Milliseconds(ms),
                                       [&](const ferry::v1::MigrationResource& m) {
                                         return !ctx->IsCancelled() && out->Write(m);
                                       }));
}

grpc::Status ControlService::WatchEvents(grpc::ServerContext* ctx,
                                         const ferry::v1::WatchEventsRequest* r,
                                         grpc::ServerWriter<ferry::v1::Event>* out) {
  FERRY_BOUNDED(BoundName(r->vm_name()), BoundId(r->migration_id()));
  FERRY_AUTHORIZED(Permission::kRead, "read");
  std::unique_ptr<EventLog::Subscription> sub =
      agent_->events().Subscribe({r->vm_name(), r->migration_id()}, r->since_sequence());
  // The sync API tells a handler of a client gone only when asked: look
  // every 200 ms. The log's Close (agent shutdown) ends the stream at once.
  std::vector<ferry::v1::Event> got;
  while (!ctx->IsCancelled() && sub->Next(absl::Milliseconds(200), &got)) {
    for (const ferry::v1::Event& e : got)
      if (!out->Write(e)) return grpc::Status::OK;
    got.clear();
  }
  return grpc::Status::OK;
}

grpc::Status ControlService::RecoverMigration(grpc::ServerContext* ctx,
                                              const ferry::v1::RecoverMigrationRequest* r,
                                              ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()),
                Bound(r->destination(), kMaxAddressBytes, "a destination address"));
  FERRY_AUTHORIZED(Permission::kMigrate, "recover migrations", r->destination());
  FERRY_REPLY(agent_->RecoverMigration(*r));
}

grpc::Status ControlService::SetMigrationParameters(
    grpc::ServerContext* ctx, const ferry::v1::SetMigrationParametersRequest* r,
    ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kMigrate, "steer migrations");
  FERRY_REPLY(agent_->SetMigrationParameters(*r));
}

grpc::Status ControlService::StartPostcopy(grpc::ServerContext* ctx,
                                           const ferry::v1::StartPostcopyRequest* r,
                                           ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kMigrate, "steer migrations");
  FERRY_REPLY(agent_->StartPostcopy(r->id()));
}

grpc::Status ControlService::ResumeVm(grpc::ServerContext* ctx, const ferry::v1::ResumeVmRequest* r,
                                      ferry::v1::Vm* out) {
  FERRY_BOUNDED(BoundName(r->name()));
  FERRY_AUTHORIZED(Permission::kVm, "resume VMs");
  FERRY_REPLY(agent_->ResumeVm(*r));
}

grpc::Status ControlService::SnapshotVm(grpc::ServerContext* ctx,
                                        const ferry::v1::SnapshotVmRequest* r,
                                        ferry::v1::SnapshotVmResponse* out) {
  FERRY_BOUNDED(BoundName(r->name()), NameGiven(r->name()), SnapshotDir(r->dir()));
  // Writes a new directory on the host as the VM's process: a VM right.
  FERRY_AUTHORIZED(Permission::kVm, "snapshot VMs");
  FERRY_REPLY(agent_->SnapshotVm(*r));
}

grpc::Status ControlService::RestoreVm(grpc::ServerContext* ctx,
                                       const ferry::v1::RestoreVmRequest* r, ferry::v1::Vm* out) {
  FERRY_BOUNDED(BoundName(r->name()), NameGiven(r->name()), SnapshotDir(r->dir()));
  FERRY_AUTHORIZED(Permission::kVm, "restore VMs");
  FERRY_REPLY(agent_->RestoreVm(*r));
}

grpc::Status ControlService::ChangeVmMemory(grpc::ServerContext* ctx,
                                            const ferry::v1::ChangeVmMemoryRequest* r,
                                            ferry::v1::ChangeVmMemoryResponse* out) {
  FERRY_BOUNDED(BoundName(r->name()), NameGiven(r->name()), BoundMemoryChanges(*r));
  // Changes what the guest runs on, and the host's memory: a VM right.
  FERRY_AUTHORIZED(Permission::kVm, "change VM memory");
  FERRY_REPLY(agent_->ChangeVmMemory(*r));
}

grpc::Status ControlService::CancelMigration(grpc::ServerContext* ctx,
                                             const ferry::v1::CancelMigrationRequest* r,
                                             ferry::v1::MigrationResource* out) {
  FERRY_BOUNDED(BoundId(r->id()));
  FERRY_AUTHORIZED(Permission::kMigrate, "cancel migrations");
  FERRY_REPLY(agent_->CancelMigration(r->id()));
}

}  // namespace ferry::agent
