#include "migration/agent/vmm_client.h"

#include <algorithm>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/grpc_status.h"
#include "grpcpp/grpcpp.h"

namespace ferry::agent {

namespace v1 = ferry::v1;

VmmClient::VmmClient(const std::string& socket_path, std::string what, absl::Duration deadline)
    : what_(std::move(what)), deadline_(deadline), events_(EventLog::Options{}) {
  grpc::ChannelArguments args;
  // Large answers (a migration's report) fit; nothing here is bulk data.
  args.SetMaxReceiveMessageSize(64 << 20);
  stub_ = v1::Control::NewStub(grpc::CreateCustomChannel(absl::StrCat("unix:", socket_path),
                                                         grpc::InsecureChannelCredentials(), args));
}

void VmmClient::Prepare(grpc::ClientContext* ctx, absl::Duration deadline) const {
  if (deadline != absl::InfiniteDuration())
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(absl::ToInt64Milliseconds(deadline)));
}

absl::Status VmmClient::Convert(const grpc::Status& s) const {
  if (s.ok()) return absl::OkStatus();
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
      s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
    return absl::UnavailableError(absl::StrCat(what_, " does not answer: ", s.error_message()));
  return FromGrpcStatus(s);
}

// One unary call: `rpc` is the stub's method, `in` the request.
#define FERRY_VMM_CALL(Out, rpc, in)               \
  do {                                             \
    grpc::ClientContext ctx;                       \
    Prepare(&ctx, deadline_);                      \
    Out out;                                       \
    grpc::Status s = stub_->rpc(&ctx, (in), &out); \
    if (!s.ok()) return Convert(s);                \
    return out;                                    \
  } while (0)

absl::StatusOr<v1::Vm> VmmClient::CreateVm(const v1::CreateVmRequest& request) {
  FERRY_VMM_CALL(v1::Vm, CreateVm, request);
}

absl::StatusOr<v1::Vm> VmmClient::GetVm(const std::string& name) {
  v1::GetVmRequest r;
  r.set_name(name);
  FERRY_VMM_CALL(v1::Vm, GetVm, r);
}

absl::StatusOr<std::vector<v1::Vm>> VmmClient::TryListVms() {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline_);
  v1::ListVmsResponse out;
  grpc::Status s = stub_->ListVms(&ctx, v1::ListVmsRequest(), &out);
  if (!s.ok()) return Convert(s);
  return std::vector<v1::Vm>(out.vms().begin(), out.vms().end());
}

std::vector<v1::Vm> VmmClient::ListVms() {
  auto vms = TryListVms();
  return vms.ok() ? *std::move(vms) : std::vector<v1::Vm>();
}

absl::Status VmmClient::DeleteVm(const std::string& name) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline_);
  v1::DeleteVmRequest r;
  r.set_name(name);
  v1::DeleteVmResponse out;
  return Convert(stub_->DeleteVm(&ctx, r, &out));
}

absl::StatusOr<v1::VmStatsResponse> VmmClient::VmStats(const std::string& name) {
  v1::VmStatsRequest r;
  r.set_name(name);
  FERRY_VMM_CALL(v1::VmStatsResponse, VmStats, r);
}

absl::StatusOr<v1::VerifyVmResponse> VmmClient::VerifyVm(const v1::VerifyVmRequest& request) {
  // VerifyVm waits for a finite workload: no deadline of ours.
  grpc::ClientContext ctx;
  v1::VerifyVmResponse out;
  grpc::Status s = stub_->VerifyVm(&ctx, request, &out);
  if (!s.ok()) return Convert(s);
  return out;
}

absl::StatusOr<v1::Vm> VmmClient::ResumeVm(const v1::ResumeVmRequest& request) {
  FERRY_VMM_CALL(v1::Vm, ResumeVm, request);
}

absl::StatusOr<v1::SnapshotVmResponse> VmmClient::SnapshotVm(const v1::SnapshotVmRequest& request) {
  grpc::ClientContext ctx;
  v1::SnapshotVmResponse out;
  grpc::Status s = stub_->SnapshotVm(&ctx, request, &out);
  if (!s.ok()) return Convert(s);
  return out;
}

absl::StatusOr<v1::Vm> VmmClient::RestoreVm(const v1::RestoreVmRequest& request) {
  grpc::ClientContext ctx;
  v1::Vm out;
  grpc::Status s = stub_->RestoreVm(&ctx, request, &out);
  if (!s.ok()) return Convert(s);
  return out;
}

absl::StatusOr<v1::ChangeVmMemoryResponse> VmmClient::ChangeVmMemory(
    const v1::ChangeVmMemoryRequest& request) {
  // Holds the vCPUs off for an op at most: the usual deadline.
  FERRY_VMM_CALL(v1::ChangeVmMemoryResponse, ChangeVmMemory, request);
}

absl::StatusOr<v1::MigrationResource> VmmClient::StartMigration(
    const v1::StartMigrationRequest& request) {
  FERRY_VMM_CALL(v1::MigrationResource, StartMigration, request);
}

v1::CheckMigrationResponse VmmClient::CheckMigration(const v1::StartMigrationRequest& request) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline_);
  v1::CheckMigrationResponse out;
  grpc::Status s = stub_->CheckMigration(&ctx, request, &out);
  if (!s.ok()) {
    out.Clear();
    v1::CheckItem* item = out.add_checks();
    item->set_name("source VMM");
    item->set_ok(false);
    item->set_detail(std::string(Convert(s).message()));
  }
  return out;
}

absl::StatusOr<std::string> VmmClient::Metrics() {
  grpc::ClientContext ctx;
  Prepare(&ctx, std::min(deadline_, absl::Seconds(2)));
  v1::GetMetricsResponse out;
  grpc::Status s = stub_->GetMetrics(&ctx, v1::GetMetricsRequest(), &out);
  if (!s.ok()) return Convert(s);
  return std::move(*out.mutable_text());
}

absl::StatusOr<v1::MigrationResource> VmmClient::GetMigration(const std::string& id) {
  v1::GetMigrationRequest r;
  r.set_id(id);
  FERRY_VMM_CALL(v1::MigrationResource, GetMigration, r);
}

absl::StatusOr<std::vector<v1::MigrationResource>> VmmClient::TryListMigrations() {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline_);
  v1::ListMigrationsResponse out;
  grpc::Status s = stub_->ListMigrations(&ctx, v1::ListMigrationsRequest(), &out);
  if (!s.ok()) return Convert(s);
  return std::vector<v1::MigrationResource>(out.migrations().begin(), out.migrations().end());
}

std::vector<v1::MigrationResource> VmmClient::ListMigrations() {
  auto ms = TryListMigrations();
  return ms.ok() ? *std::move(ms) : std::vector<v1::MigrationResource>();
}

absl::StatusOr<v1::MigrationResource> VmmClient::CancelMigration(const std::string& id) {
  v1::CancelMigrationRequest r;
  r.set_id(id);
  FERRY_VMM_CALL(v1::MigrationResource, CancelMigration, r);
}

absl::StatusOr<v1::MigrationResource> VmmClient::RecoverMigration(
    const v1::RecoverMigrationRequest& request) {
  FERRY_VMM_CALL(v1::MigrationResource, RecoverMigration, request);
}

absl::StatusOr<v1::MigrationResource> VmmClient::SetMigrationParameters(
    const v1::SetMigrationParametersRequest& request) {
  FERRY_VMM_CALL(v1::MigrationResource, SetMigrationParameters, request);
}

absl::StatusOr<v1::MigrationResource> VmmClient::StartPostcopy(const std::string& id) {
  v1::StartPostcopyRequest r;
  r.set_id(id);
  FERRY_VMM_CALL(v1::MigrationResource, StartPostcopy, r);
}

#undef FERRY_VMM_CALL

absl::Status VmmClient::WatchMigration(
    const std::string& id, absl::Duration interval,
    const std::function<bool(const v1::MigrationResource&)>& write) {
  grpc::ClientContext ctx;
  v1::WatchMigrationRequest r;
  r.set_id(id);
  r.set_interval_ms(absl::ToInt64Milliseconds(interval));
  std::unique_ptr<grpc::ClientReader<v1::MigrationResource>> reader =
      stub_->WatchMigration(&ctx, r);
  v1::MigrationResource m;
  while (reader->Read(&m)) {
    if (!write(m)) {
      ctx.TryCancel();
      (void)reader->Finish();
      return absl::OkStatus();
    }
  }
  return Convert(reader->Finish());
}

absl::Status VmmClient::WatchEvents(uint64_t since, grpc::ClientContext* ctx,
                                    const std::function<bool(const v1::Event&)>& on_event) {
  v1::WatchEventsRequest r;
  r.set_since_sequence(since);
  std::unique_ptr<grpc::ClientReader<v1::Event>> reader = stub_->WatchEvents(ctx, r);
  v1::Event e;
  while (reader->Read(&e)) {
    if (!on_event(e)) {
      ctx->TryCancel();
      break;
    }
  }
  return Convert(reader->Finish());
}

}  // namespace ferry::agent
