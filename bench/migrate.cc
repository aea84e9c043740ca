#include "bench/migrate.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "migration/api/report_proto.h"
#include "migration/agent/agent_process.h"
#include "migration/cli/client.h"
#include "migration/convert.h"

namespace ferry::bench {

absl::StatusOr<migration::MigrationReport> RunMigrate(const MigrateOptions& o) {
  const std::string ferryd = agent::FindFerryd();
  ASSIGN_OR_RETURN(agent::AgentProcess a, agent::AgentProcess::Start(ferryd, {}, "/tmp/ferry-bench-a.log"));
  ASSIGN_OR_RETURN(agent::AgentProcess b, agent::AgentProcess::Start(ferryd, {}, "/tmp/ferry-bench-b.log"));
  cli::ConnectOptions co;
  ASSIGN_OR_RETURN(auto sa, cli::Connect(a.address(), co));
  ASSIGN_OR_RETURN(auto sb, cli::Connect(b.address(), co));

  ferry::v1::CreateVmRequest create;
  create.set_name("bench-vm");
  create.set_memory_bytes(o.vm.memory_bytes);
  create.set_vcpus(o.vm.vcpus);
  *create.mutable_workload() = migration::ToWorkload(o.vm.workload);
  {
    grpc::ClientContext ctx;
    ferry::v1::Vm vm;
    grpc::Status s = sa->CreateVm(&ctx, create, &vm);
    if (!s.ok()) return cli::CallError(s, "create the VM", a.address());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(o.warmup_ms));

  ferry::v1::StartMigrationRequest start;
  start.set_vm_name("bench-vm");
  start.set_destination(b.address());
  start.set_mode(migration::ToProto(o.migration.mode));
  start.set_fault_mode(migration::ToProto(o.migration.fault_mode));
  start.set_downtime_target_ms(o.migration.downtime_target_ms);
  start.set_max_bandwidth(o.migration.max_bandwidth);
  start.set_max_rounds(o.migration.max_rounds);
  start.set_streams(static_cast<uint32_t>(o.migration.streams));
  ferry::v1::MigrationResource m;
  {
    grpc::ClientContext ctx;
    grpc::Status s = sa->StartMigration(&ctx, start, &m);
    if (!s.ok()) return cli::CallError(s, "start the migration", a.address());
  }
  grpc::ClientContext wctx;
  ferry::v1::WatchMigrationRequest watch;
  watch.set_id(m.id());
  watch.set_interval_ms(500);
  auto reader = sa->WatchMigration(&wctx, watch);
  ferry::v1::MigrationResource last;
  while (reader->Read(&last)) {
  }
  grpc::Status ws = reader->Finish();
  if (!ws.ok()) return cli::CallError(ws, "watch the migration", a.address());
  migration::MigrationReport report = api::FromProto(last.report(), last.id());
  if (last.phase() != ferry::v1::MIGRATION_PHASE_COMPLETED) return report;

  if (o.vm.workload.ops_per_vcpu == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the guest runs on
  ferry::v1::VerifyVmRequest verify;
  verify.set_name("bench-vm");
  verify.set_timeout_ms(600'000);
  ferry::v1::VerifyVmResponse v;
  grpc::ClientContext vctx;
  grpc::Status vs = sb->VerifyVm(&vctx, verify, &v);
  if (!vs.ok()) return cli::CallError(vs, "verify the VM", b.address());
  report.digest_match = v.match();
  return report;
}

}  // namespace ferry::bench
