// End to end with two ferryd processes on loopback, driven through the gRPC
// control API and through the ferry CLI.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "base/status_matchers.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migration/convert.h"
#include "base/eventually.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;
using ferry::v1::MigrationResource;

class AgentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
    sa_ = Stub(a_->address());
    sb_ = Stub(b_->address());
  }

  grpc::Status Start(const std::string& vm, ferry::v1::MigrationMode mode, MigrationResource* out,
                     uint64_t bandwidth = 0, const std::string& request_id = "",
                     const std::string& to = "", int64_t downtime_target_ms = 100) {
    grpc::ClientContext ctx;
    ferry::v1::StartMigrationRequest r;
    r.set_vm_name(vm);
    r.set_destination(to.empty() ? b_->address() : to);
    r.set_mode(mode);
    r.set_max_bandwidth(bandwidth);
    r.set_downtime_target_ms(downtime_target_ms);
    r.set_request_id(request_id);
    return sa_->StartMigration(&ctx, r, out);
  }

  // Watches until the end; returns the last state and counts phases seen.
  MigrationResource Watch(const std::string& id, std::set<int>* phases = nullptr) {
    grpc::ClientContext ctx;
    ferry::v1::WatchMigrationRequest r;
    r.set_id(id);
    r.set_interval_ms(50);
    auto reader = sa_->WatchMigration(&ctx, r);
    MigrationResource m, last;
    while (reader->Read(&m)) {
      last = m;
      if (phases) phases->insert(m.phase());
    }
    EXPECT_TRUE(reader->Finish().ok());
    return last;
  }

  std::unique_ptr<agent::AgentProcess> a_, b_;
  std::unique_ptr<ferry::v1::Control::Stub> sa_, sb_;
};

TEST_F(AgentsTest, MigrateInEachModeThroughTheApi) {
  struct Case {
    ferry::v1::MigrationMode mode;
    const char* workload;
  } cases[] = {{ferry::v1::MIGRATION_MODE_PRECOPY, "dirty-rate"},
               {ferry::v1::MIGRATION_MODE_POSTCOPY, "zipf"},
               {ferry::v1::MIGRATION_MODE_HYBRID, "uniform"}};
  int i = 0;
  for (const Case& c : cases) {
    const std::string name = "vm-" + std::to_string(i++);
    CreateVm(*sa_, VmRequest(name, c.workload));
    MigrationResource m;
    // Pure precopy must fit the guest's last dirty set into its pause, and
    // whether 100 ms does depends on the machine's speed (a loaded or
    // sanitized build moves 20 MB/s): a target that fits anywhere keeps
    // the outcome independent of it.
    const int64_t downtime_ms = c.mode == ferry::v1::MIGRATION_MODE_PRECOPY ? 60'000 : 100;
    ASSERT_TRUE(Start(name, c.mode, &m, 0, "", "", downtime_ms).ok());
    std::set<int> phases;
    MigrationResource done = Watch(m.id(), &phases);
    ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
    EXPECT_TRUE(phases.count(ferry::v1::MIGRATION_PHASE_COMPLETED));
    EXPECT_EQ(done.report().outcome(), "completed");
    EXPECT_GT(done.report().total_ms(), 0);
    EXPECT_EQ(GetVmCode(*sa_, name), grpc::StatusCode::NOT_FOUND) << "the source released it";
    EXPECT_EQ(GetVmCode(*sb_, name), grpc::StatusCode::OK) << "it arrived under its name";
    EXPECT_TRUE(VerifyVm(*sb_, name)) << ferry::v1::MigrationMode_Name(c.mode);
  }
}

// Guest impact in a real two-agent migration's report: present, and
// consistent with the other figures and with itself.
TEST_F(AgentsTest, GuestImpactFiguresAreConsistent) {
  // An endless guest that ran long enough for a baseline: the report's
  // baseline is the last second before the migration after a 250 ms
  // warm-up, a span of time the guest must have run (not an ordering).
  CreateVm(*sa_, VmRequest("impact", "zipf", 64 << 20, 0));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  MigrationResource m;
  ASSERT_TRUE(Start("impact", ferry::v1::MIGRATION_MODE_POSTCOPY, &m).ok());
  MigrationResource done = Watch(m.id());
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  const ferry::v1::MigrationReport& r = done.report();
  ASSERT_TRUE(r.impact_measured()) << r.impact_note();
  EXPECT_GT(r.baseline_ops_per_sec(), 0);
  EXPECT_GE(r.baseline_window_ms(), 100);
  EXPECT_LE(r.baseline_window_ms(), 1000);
  // Blocktime: per vCPU, summing to the total, never more than every vCPU
  // waiting the whole postcopy phase.
  // (A loaded machine may let the push win every page before a vCPU runs:
  // then no fault and no blocktime, never one without the other.)
  EXPECT_EQ(r.faults() > 0, r.blocktime_ms() > 0) << r.faults() << " faults";
  ASSERT_EQ(r.blocktime_ms_per_vcpu_size(), 2);
  EXPECT_NEAR(r.blocktime_ms_per_vcpu(0) + r.blocktime_ms_per_vcpu(1), r.blocktime_ms(), 1e-6);
  EXPECT_LE(r.blocktime_ms(), 2 * r.postcopy_ms());
  // Utilization in [0, 1], and a longer window is never worse (each is a
  // whole number of the shorter ones).
  for (double u : {r.mgu_10ms(), r.mgu_100ms(), r.mgu_1s(), r.precopy_mgu_10ms(),
                   r.baseline_mgu_10ms(), r.baseline_mgu_100ms()}) {
    EXPECT_GE(u, 0);
    EXPECT_LE(u, 1);
  }
  EXPECT_LE(r.mgu_10ms(), r.mgu_100ms() + 1e-9);
  EXPECT_LE(r.mgu_100ms(), r.mgu_1s() + 1e-9);
  EXPECT_GE(r.below_half_ms(), 0);
  EXPECT_LE(r.below_half_ms(), r.total_ms());
  EXPECT_LE(r.baseline_below_half_ms(), r.baseline_window_ms());
  // The curve: every window of kMguCurveWindowsMs, non-decreasing where a
  // window is a multiple of the one before.
  ASSERT_EQ(r.mgu_curve_size(), r.mgu_curve_window_ms_size());
  ASSERT_GE(r.mgu_curve_size(), 3);
  for (int i = 0; i < r.mgu_curve_size(); ++i) {
    EXPECT_GE(r.mgu_curve(i), 0);
    EXPECT_LE(r.mgu_curve(i), 1);
  }
  EXPECT_TRUE(VerifyVm(*sb_, "impact"));
}

TEST_F(AgentsTest, IdempotentStartAndAlreadyMigrating) {
  CreateVm(*sa_, VmRequest("vm", "dirty-rate"));
  CreateVm(*sa_, VmRequest("other", "idle"));
  MigrationResource first, again, other;
  ASSERT_TRUE(Start("vm", ferry::v1::MIGRATION_MODE_PRECOPY, &first, 4ull << 20, "req-1").ok());
  ASSERT_TRUE(Start("vm", ferry::v1::MIGRATION_MODE_PRECOPY, &again, 4ull << 20, "req-1").ok());
  EXPECT_EQ(first.id(), again.id()) << "the same request id must not start a second migration";
  // The same id with other parameters is another request: refused, naming
  // what differs, never attached to the first migration.
  grpc::Status s = Start("other", ferry::v1::MIGRATION_MODE_PRECOPY, &other, 0, "req-1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(s.error_message(), HasSubstr("already used"));
  EXPECT_THAT(s.error_message(), HasSubstr("vm vm (now other)"));
  s = Start("vm", ferry::v1::MIGRATION_MODE_POSTCOPY, &other, 4ull << 20, "req-1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(s.error_message(), HasSubstr("mode precopy (now postcopy)"));
  s = Start("vm", ferry::v1::MIGRATION_MODE_PRECOPY, &other, 8ull << 20, "req-1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(s.error_message(), HasSubstr("max bandwidth 4194304 (now 8388608)"));
  s = Start("vm", ferry::v1::MIGRATION_MODE_PRECOPY, &other, 0, "req-2");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("already being migrated"));
  grpc::ClientContext ctx;
  ferry::v1::DeleteVmRequest del;
  del.set_name("vm");
  ferry::v1::DeleteVmResponse unused;
  EXPECT_EQ(sa_->DeleteVm(&ctx, del, &unused).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  grpc::ClientContext cctx;
  ferry::v1::CancelMigrationRequest cancel;
  cancel.set_id(first.id());
  MigrationResource cancelled;
  ASSERT_TRUE(sa_->CancelMigration(&cctx, cancel, &cancelled).ok());
}

TEST_F(AgentsTest, CancelInEachPhase) {
  // Setup / early precopy: cancel right after the start.
  CreateVm(*sa_, VmRequest("early", "dirty-rate"));
  MigrationResource m;
  ASSERT_TRUE(Start("early", ferry::v1::MIGRATION_MODE_PRECOPY, &m, 4ull << 20).ok());
  {
    grpc::ClientContext ctx;
    ferry::v1::CancelMigrationRequest r;
    r.set_id(m.id());
    MigrationResource out;
    ASSERT_TRUE(sa_->CancelMigration(&ctx, r, &out).ok());
  }
  EXPECT_EQ(Watch(m.id()).phase(), ferry::v1::MIGRATION_PHASE_CANCELLED);
  EXPECT_EQ(GetVmCode(*sa_, "early"), grpc::StatusCode::OK) << "the VM stays at the source";
  // The destination lets go of its reservation when it sees the stream end,
  // which may come a moment after the source reports the cancel.
  EXPECT_TRUE(Eventually([&] { return GetVmCode(*sb_, "early") == grpc::StatusCode::NOT_FOUND; }))
      << "the destination is empty";

  // Precopy, well under way (4 MiB/s: 64 MiB take 16 s).
  CreateVm(*sa_, VmRequest("mid", "dirty-rate"));
  ASSERT_TRUE(Start("mid", ferry::v1::MIGRATION_MODE_PRECOPY, &m, 4ull << 20).ok());
  {
    // Under way: in precopy with pages sent (16 s at this cap).
    MigrationResource out = AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_PRECOPY);
    ASSERT_EQ(out.phase(), ferry::v1::MIGRATION_PHASE_PRECOPY);
    ASSERT_TRUE(Eventually([&] {
      out = GetMigration(*sa_, m.id());
      return out.progress().pages_transferred() > 0;
    }));
    EXPECT_EQ(out.phase(), ferry::v1::MIGRATION_PHASE_PRECOPY);
  }
  EXPECT_EQ(RunCli({"migration", "cancel", m.id(), "--agent", a_->address()}).exit_code, 0);
  EXPECT_EQ(Watch(m.id()).phase(), ferry::v1::MIGRATION_PHASE_CANCELLED);
  ASSERT_TRUE(VerifyVm(*sa_, "mid")) << "the source VM ran on, intact";

  // Postcopy: past switchover the destination runs the VM; cancel is refused.
  CreateVm(*sa_, VmRequest("late", "zipf"));
  ASSERT_TRUE(Start("late", ferry::v1::MIGRATION_MODE_POSTCOPY, &m, 8ull << 20).ok());
  ASSERT_EQ(AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  {
    grpc::ClientContext ctx;
    ferry::v1::CancelMigrationRequest r;
    r.set_id(m.id());
    MigrationResource out;
    grpc::Status s = sa_->CancelMigration(&ctx, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("can no longer be cancelled"));
  }
  EXPECT_EQ(Watch(m.id()).phase(), ferry::v1::MIGRATION_PHASE_COMPLETED);
  EXPECT_TRUE(VerifyVm(*sb_, "late"));
}

// The destination shows what arrives while it arrives: the VM (its layout,
// backend, workload, the guest's ops as it runs there in postcopy), its
// stats, and the incoming migration by its id, with the source agent's
// Control address as the peer (not its fetch port) and the mode asked.
TEST_F(AgentsTest, TheDestinationShowsAnArrivingVmAndItsMigration) {
  // A finite guest (20M ops per vCPU), so that verifying it at the end
  // replays a bounded run whatever the machine's speed.
  CreateVm(*sa_, VmRequest("arriving", "zipf", 128ull << 20, 20'000'000));
  MigrationResource m;
  ASSERT_TRUE(Start("arriving", ferry::v1::MIGRATION_MODE_POSTCOPY, &m, 8ull << 20).ok());
  ASSERT_EQ(AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  ferry::v1::Vm vm;
  ASSERT_TRUE(Eventually([&] {
    return GetVmCode(*sb_, "arriving", &vm) == grpc::StatusCode::OK && vm.guest_ops() > 0;
  })) << vm.DebugString();
  EXPECT_EQ(vm.state(), ferry::v1::VM_STATE_INCOMING);
  EXPECT_EQ(vm.migration_id(), m.id());
  EXPECT_EQ(vm.layout().backend(), ferry::v1::VM_BACKEND_SOFT);
  EXPECT_EQ(vm.layout().workload().kind(), ferry::v1::WORKLOAD_KIND_ZIPF);
  EXPECT_EQ(vm.layout().memory_bytes(), 128ull << 20);
  EXPECT_EQ(vm.source(), a_->address()) << "the peer is the source agent, not its fetch port";
  {
    grpc::ClientContext ctx;
    ferry::v1::VmStatsRequest r;
    r.set_name("arriving");
    ferry::v1::VmStatsResponse stats;
    grpc::Status s = sb_->VmStats(&ctx, r, &stats);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(stats.vcpus_size(), 2);
    EXPECT_EQ(stats.vm().state(), ferry::v1::VM_STATE_INCOMING);
  }
  const MigrationResource in = GetMigration(*sb_, m.id());
  EXPECT_EQ(in.direction(), "incoming");
  EXPECT_EQ(in.vm_name(), "arriving");
  EXPECT_EQ(in.source(), a_->address());
  EXPECT_EQ(in.mode(), ferry::v1::MIGRATION_MODE_POSTCOPY);
  EXPECT_NE(in.phase(), ferry::v1::MIGRATION_PHASE_UNSPECIFIED);
  EXPECT_EQ(AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_UNSPECIFIED).phase(),
            ferry::v1::MIGRATION_PHASE_COMPLETED);
  EXPECT_TRUE(VerifyVm(*sb_, "arriving"));
}

TEST_F(AgentsTest, BadRequestsGetClearErrors) {
  MigrationResource m;
  grpc::Status s = Start("nope", ferry::v1::MIGRATION_MODE_HYBRID, &m);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("no VM named 'nope'"));
  ferry::v1::CreateVmRequest bad = VmRequest("bad", "zipf");
  bad.set_memory_bytes(12345);
  grpc::ClientContext ctx;
  ferry::v1::Vm vm;
  s = sa_->CreateVm(&ctx, bad, &vm);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  CreateVm(*sa_, VmRequest("dup", "idle"));
  grpc::ClientContext ctx2;
  s = sa_->CreateVm(&ctx2, VmRequest("dup", "idle"), &vm);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  // An unreachable destination: the migration fails, the VM stays.
  ASSERT_TRUE(Start("dup", ferry::v1::MIGRATION_MODE_HYBRID, &m, 0, "", "127.0.0.1:1").ok());
  MigrationResource done = Watch(m.id());
  EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_FAILED);
  EXPECT_THAT(done.error(), HasSubstr("127.0.0.1:1"));
  EXPECT_EQ(GetVmCode(*sa_, "dup"), grpc::StatusCode::OK);
  // A VM name already taken at the destination.
  CreateVm(*sb_, VmRequest("taken", "idle"));
  CreateVm(*sa_, VmRequest("taken", "idle"));
  ASSERT_TRUE(Start("taken", ferry::v1::MIGRATION_MODE_HYBRID, &m).ok());
  done = Watch(m.id());
  EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_FAILED);
  EXPECT_THAT(done.error(), HasSubstr("already hosts a VM named 'taken'"));
}

TEST_F(AgentsTest, TheCliDrivesEverythingWithMeaningfulExitCodes) {
  CliResult r = RunCli({"vm", "create", "cli-vm", "--agent", a_->address(), "--memory", "64M",
                        "--workload", "uniform"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("cli-vm"));
  r = RunCli({"vm", "list", "--agent", a_->address(), "--json"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("\"name\":\"cli-vm\""));
  r = RunCli({"vm", "stats", "cli-vm", "--agent", a_->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = RunCli({"migrate", "cli-vm", "--from", a_->address(), "--to", b_->address(), "--mode",
              "postcopy", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* field : {"\"mode\":\"postcopy\"", "\"fault_mode\":\"exit\"", "\"total_ms\"",
                            "\"downtime_ms\"", "\"precopy_rounds\"", "\"precopy_gbps\"",
                            "\"bytes_sent\"", "\"pages_sent\"", "\"pages_resent\"",
                            "\"zero_pages\"", "\"faults\"", "\"fault_p50_us\"",
                            "\"fault_p99_us\"", "\"fault_max_us\"", "\"max_vcpu_stall_ms\"",
                            "\"memory_bytes\"", "\"vcpus\"", "\"workload\""})
    EXPECT_THAT(r.out, HasSubstr(field));
  r = RunCli({"vm", "verify", "cli-vm", "--agent", b_->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("MATCH"));
  r = RunCli({"migration", "list", "--agent", a_->address()});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("completed"));
  // Plain progress lines when not on a terminal, then the report.
  RunCli({"vm", "create", "cli-2", "--agent", a_->address(), "--memory", "64M"});
  r = RunCli({"migrate", "cli-2", "--from", a_->address(), "--to", b_->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("precopy"));
  EXPECT_THAT(r.out, HasSubstr("completed"));
  // Exit codes.
  EXPECT_EQ(RunCli({"vm", "get", "missing", "--agent", a_->address()}).exit_code, 4);
  r = RunCli({"vm", "create", "x", "--agent", a_->address(), "--memory", "12Q"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("unknown unit"));
  EXPECT_EQ(RunCli({"vm", "list", "--agent", "127.0.0.1:1", "--connect-timeout-ms", "500"}).exit_code,
            5);
  EXPECT_EQ(RunCli({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunCli({"migrate", "--help"}).exit_code, 0);
  RunCli({"vm", "create", "dup", "--agent", a_->address(), "--memory", "64M"});
  EXPECT_EQ(RunCli({"vm", "create", "dup", "--agent", a_->address(), "--memory", "64M"}).exit_code, 6);
}

TEST_F(AgentsTest, ServesTheGrpcHealthService) {
  auto channel = grpc::CreateChannel(a_->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  grpc::ByteBuffer request;  // HealthCheckRequest{service: ""}: no bytes
  grpc::ByteBuffer response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> l(mu);
                   status = s;
                   done = true;
                   cv.notify_all();
                 });
  std::unique_lock<std::mutex> l(mu);
  cv.wait_for(l, std::chrono::seconds(10), [&] { return done; });
  ASSERT_TRUE(done);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << "status SERVING";
}

TEST_F(AgentsTest, SigtermCancelsPrecopyButWaitsForPostcopy) {
  // A precopy migration is cancelled by the source's SIGTERM; nothing arrives.
  CreateVm(*sa_, VmRequest("pre", "dirty-rate"));
  MigrationResource m;
  ASSERT_TRUE(Start("pre", ferry::v1::MIGRATION_MODE_PRECOPY, &m, 4ull << 20).ok());
  ASSERT_EQ(AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_PRECOPY).phase(),
            ferry::v1::MIGRATION_PHASE_PRECOPY);
  int status = a_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(Eventually([&] { return GetVmCode(*sb_, "pre") == grpc::StatusCode::NOT_FOUND; }));

  // A postcopy migration holds the source's exit until it completes.
  auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/a2.log");
  ASSERT_TRUE(a.ok()) << a.status();
  a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
  sa_ = Stub(a_->address());
  // Finite: verifying replays the guest's ops, and an endless guest's replay
  // grows with the machine's load.
  CreateVm(*sa_, VmRequest("post", "zipf", 64ull << 20, 20'000'000));
  ASSERT_TRUE(Start("post", ferry::v1::MIGRATION_MODE_POSTCOPY, &m, 16ull << 20).ok());
  ASSERT_EQ(AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  status = a_->Stop(60000);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // The source exited only after the destination had every page.
  EXPECT_EQ(GetVmCode(*sb_, "post"), grpc::StatusCode::OK);
  EXPECT_TRUE(VerifyVm(*sb_, "post"));
}

}  // namespace
}  // namespace ferry::e2e

namespace ferry::e2e {
namespace {

TEST(AgentsTls, MutualTlsBetweenAgentsAndTheCli) {
  if (RunCommand({"openssl", "version"}).exit_code != 0)
    GTEST_SKIP() << "the openssl tool is not installed: cannot make test certificates";
  const std::string d = TempDir() + "/tls";
  ASSERT_EQ(RunCommand({"mkdir", "-p", d}).exit_code, 0);
  const std::string ec = "ec:" + d + "/ecparams";
  std::vector<std::vector<std::string>> steps = {
      {"openssl", "ecparam", "-name", "prime256v1", "-out", d + "/ecparams"},
      {"openssl", "req", "-x509", "-newkey", ec, "-nodes", "-keyout", d + "/ca.key", "-out",
       d + "/ca.pem", "-days", "1", "-subj", "/CN=ferry-test-ca"},
      {"openssl", "req", "-newkey", ec, "-nodes", "-keyout", d + "/agent.key", "-out",
       d + "/agent.csr", "-subj", "/CN=ferry-agent"},
      {"openssl", "x509", "-req", "-in", d + "/agent.csr", "-CA", d + "/ca.pem", "-CAkey",
       d + "/ca.key", "-CAcreateserial", "-out", d + "/agent.pem", "-days", "1", "-extfile",
       d + "/ext.cnf"}};
  std::ofstream(d + "/ext.cnf") << "subjectAltName=IP:127.0.0.1\n"
                                 << "extendedKeyUsage=serverAuth,clientAuth\n";
  for (const auto& step : steps) {
    CliResult r = RunCommand(step);
    ASSERT_EQ(r.exit_code, 0) << step[1] << ": " << r.out;
  }
  const std::vector<std::string> tls = {"--tls-cert", d + "/agent.pem", "--tls-key",
                                        d + "/agent.key", "--tls-ca", d + "/ca.pem"};
  auto a = agent::AgentProcess::Start(Ferryd(), tls, TempDir() + "/tls-a.log");
  auto b = agent::AgentProcess::Start(Ferryd(), tls, TempDir() + "/tls-b.log");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  auto with_tls = [&](std::vector<std::string> args) {
    args.insert(args.end(), tls.begin(), tls.end());
    return RunCli(args);
  };
  CliResult r = with_tls({"vm", "create", "s", "--agent", a->address(), "--memory", "32M"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = with_tls({"migrate", "s", "--from", a->address(), "--to", b->address(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = with_tls({"vm", "verify", "s", "--agent", b->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // Postcopy between TLS agents: demand pages come sealed on the fetch
  // channel (Hello.fetch_encrypted), and the VM arrives intact.
  r = with_tls({"vm", "create", "p", "--agent", a->address(), "--memory", "32M"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = with_tls({"migrate", "p", "--from", a->address(), "--to", b->address(), "--mode",
                "postcopy", "--max-bandwidth", "32M"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = with_tls({"vm", "verify", "p", "--agent", b->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // Without TLS, or with the CA but no client certificate, the agent refuses.
  EXPECT_EQ(
      RunCli({"vm", "list", "--agent", a->address(), "--connect-timeout-ms", "1000"}).exit_code,
      5);
  EXPECT_EQ(RunCli({"vm", "list", "--agent", a->address(), "--tls-ca", d + "/ca.pem",
                    "--connect-timeout-ms", "1000"})
                .exit_code,
            5);
}

}  // namespace
}  // namespace ferry::e2e
