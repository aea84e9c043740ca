#include "bench/migrate.h"

#include <signal.h>
#include <stdlib.h>

#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "migration/agent/agent_process.h"
#include "migration/agent/vmm_process.h"
#include "migration/cli/client.h"
#include "migration/convert.h"

namespace ferry::bench {

namespace {

// A temporary state directory whose VMM processes are gone when it goes
// (after the agents, which leave them running): a moment for those the
// agents were stopping, then SIGKILL.
absl::StatusOr<std::unique_ptr<agent::ScopedStateDir>> MakeStateDir(const std::string& prefix) {
  std::string t = absl::StrCat("/tmp/", prefix, "-XXXXXX");
  if (mkdtemp(t.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  return std::make_unique<agent::ScopedStateDir>(t, absl::Seconds(5));
}

void DeleteVm(ferry::v1::Control::Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  ferry::v1::DeleteVmRequest d;
  d.set_name(name);
  ferry::v1::DeleteVmResponse out;
  (void)stub.DeleteVm(&ctx, d, &out);
}

}  // namespace

absl::StatusOr<migration::MigrationReport> RunMigrate(const MigrateOptions& o) {
  ASSIGN_OR_RETURN(MigrateRun run, RunMigrateTimed(o));
  return std::move(run.report);
}

absl::StatusOr<MigrateRun> RunMigrateTimed(const MigrateOptions& o) {
  const std::string ferryd = agent::FindFerryd();
  std::unique_ptr<agent::ScopedStateDir> dir_a, dir_b;
  std::vector<std::string> flags_a = {"--in-process"}, flags_b = {"--in-process"};
  if (o.vmm_processes) {
    ASSIGN_OR_RETURN(dir_a, MakeStateDir("ferry-bench-a"));
    ASSIGN_OR_RETURN(dir_b, MakeStateDir("ferry-bench-b"));
    flags_a = {"--state-dir", dir_a->path()};
    flags_b = {"--state-dir", dir_b->path()};
  }
  ASSIGN_OR_RETURN(agent::AgentProcess a,
                   agent::AgentProcess::Start({ferryd}, "127.0.0.1:0", flags_a,
                                              "/tmp/ferry-bench-a.log", o.own_sessions));
  ASSIGN_OR_RETURN(agent::AgentProcess b,
                   agent::AgentProcess::Start({ferryd}, "127.0.0.1:0", flags_b,
                                              "/tmp/ferry-bench-b.log", o.own_sessions));
  cli::ConnectOptions co;
  ASSIGN_OR_RETURN(auto sa, cli::Connect(a.address(), co));
  ASSIGN_OR_RETURN(auto sb, cli::Connect(b.address(), co));

  ferry::v1::CreateVmRequest create;
  create.set_name("bench-vm");
  create.set_memory_bytes(o.vm.memory_bytes);
  create.set_vcpus(o.vm.vcpus);
  *create.mutable_workload() = migration::ToWorkload(o.vm.workload);
  MigrateRun run;
  {
    grpc::ClientContext ctx;
    ferry::v1::Vm vm;
    const absl::Time t0 = absl::Now();
    grpc::Status s = sa->CreateVm(&ctx, create, &vm);
    run.create_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    if (!s.ok()) return cli::CallError(s, "create the VM", a.address());
  }
  // The VM is deleted wherever it is when this returns, so that its
  // process (vmm_processes) exits with the run.
  struct Cleanup {
    ferry::v1::Control::Stub* a;
    ferry::v1::Control::Stub* b;
    ~Cleanup() {
      DeleteVm(*a, "bench-vm");
      DeleteVm(*b, "bench-vm");
    }
  } cleanup{sa.get(), sb.get()};
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
  run.report = migration::ReportOf(last);
  migration::MigrationReport& report = run.report;
  if (last.phase() != ferry::v1::MIGRATION_PHASE_COMPLETED) return run;

  if (o.vm.workload.ops_per_vcpu == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the guest runs on
  ferry::v1::VerifyVmRequest verify;
  verify.set_name("bench-vm");
  verify.set_timeout_ms(600'000);
  ferry::v1::VerifyVmResponse v;
  grpc::ClientContext vctx;
  grpc::Status vs = sb->VerifyVm(&vctx, verify, &v);
  if (!vs.ok()) return cli::CallError(vs, "verify the VM", b.address());
  report.set_digest_match(v.match());
  return run;
}

}  // namespace ferry::bench
