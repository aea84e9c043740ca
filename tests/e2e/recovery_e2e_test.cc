// Failure and recovery end to end, with two ferryd processes on loopback:
// connections cut during postcopy (`ss -K`, the kernel's socket destroy),
// agents killed with SIGKILL in each phase, a destination that never comes
// back, and many migrations at once. Every migration that completes is
// checked by digest against a replay of the guest that never moved.
//
// FERRY_CUT_TRIALS sets how many random cuts CutConnectionsAtRandomPoints
// makes (default 3; the long run, `./dev test-long`, makes 20).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <cstdlib>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/net.h"
#include "base/socket_testing.h"
#include "base/status_matchers.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "base/eventually.h"
#include "base/file.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;
using ferry::v1::MigrationResource;

// A port free right now, for an agent's --fetch-listen.
int PortOf(const std::string& address) {
  return std::stoi(address.substr(address.rfind(':') + 1));
}

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fetch_port_ = FreePort();
    StartAgents();
  }

  void StartAgents() {
    auto a = agent::AgentProcess::Start(
        Ferryd(), {"--fetch-listen", absl::StrCat("127.0.0.1:", fetch_port_)},
        TempDir() + "/a.log");
    ASSERT_TRUE(a.ok()) << a.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    sa_ = Stub(a_->address());
    StartB();
  }

  void StartB() {
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/b.log");
    ASSERT_TRUE(b.ok()) << b.status();
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
    sb_ = Stub(b_->address());
  }

  MigrationResource Start(const std::string& vm, ferry::v1::MigrationMode mode, uint64_t bandwidth,
                          int64_t recovery_timeout_ms = 0, uint32_t streams = 0) {
    grpc::ClientContext ctx;
    ferry::v1::StartMigrationRequest r;
    r.set_vm_name(vm);
    r.set_destination(b_->address());
    r.set_mode(mode);
    r.set_max_bandwidth(bandwidth);
    r.set_recovery_timeout_ms(recovery_timeout_ms);
    r.set_streams(streams);
    MigrationResource out;
    grpc::Status s = sa_->StartMigration(&ctx, r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  MigrationResource Get(const std::string& id) { return GetMigration(*sa_, id); }

  MigrationResource AwaitPhase(const std::string& id, ferry::v1::MigrationPhase phase,
                               int timeout_ms = 30000) {
    return e2e::AwaitPhase(*sa_, id, phase, timeout_ms);
  }

  MigrationResource AwaitEnd(const std::string& id, int timeout_ms = 120000) {
    return AwaitPhase(id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, timeout_ms);
  }

  // Destroys every established TCP connection to or from the destination's
  // gRPC port and the source's fetch port: the migration stream and every
  // fetch lane break at once.
  void CutConnections() {
    const std::string b = absl::StrCat(PortOf(b_->address()));
    const std::string f = absl::StrCat(fetch_port_);
    CliResult r = RunCommand({"ss", "-K", "-t", "state", "established", "(", "sport", "=", ":" + b,
                              "or", "dport", "=", ":" + b, "or", "sport", "=", ":" + f, "or",
                              "dport", "=", ":" + f, ")"});
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }

  int fetch_port_ = 0;
  std::unique_ptr<agent::AgentProcess> a_, b_;
  std::unique_ptr<ferry::v1::Control::Stub> sa_, sb_;
};

// The headline: a network failure after switchover pauses the migration;
// both agents keep the VM, the source reconnects, and the migration
// completes with the right memory.
TEST_F(RecoveryTest, CutConnectionsAtRandomPoints) {
  const char* env = std::getenv("FERRY_CUT_TRIALS");
  const int trials = env ? std::atoi(env) : 3;
  std::mt19937 rng(std::random_device{}());
  for (int t = 0; t < trials; ++t) {
    SCOPED_TRACE(absl::StrCat("trial ", t));
    const std::string name = absl::StrCat("cut-", t);
    // 48 MiB at 16 MiB/s: about 2 s of postcopy push.
    CreateVm(*sa_, VmRequest(name, t % 2 ? "uniform" : "zipf", 48ull << 20));
    // Every other trial pushes over three streams: the cut breaks the
    // data streams too, and the push goes on over the main one.
    const MigrationResource m = Start(
        name, t % 3 == 2 ? ferry::v1::MIGRATION_MODE_HYBRID : ferry::v1::MIGRATION_MODE_POSTCOPY,
        16ull << 20, 0, t % 2 == 0 ? 3 : 0);
    const MigrationResource at =
        AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY, 60000);
    ASSERT_EQ(at.phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY) << at.error();
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 1500)(rng)));
    const bool in_postcopy = Get(m.id()).phase() == ferry::v1::MIGRATION_PHASE_POSTCOPY;
    CutConnections();
    // The cut broke a migration under way only if it is still in postcopy
    // after it: on a loaded machine the push may end between the look
    // above and the cut, and then there was nothing to break.
    const ferry::v1::MigrationPhase after = Get(m.id()).phase();
    const bool cut_under_way = in_postcopy && (after == ferry::v1::MIGRATION_PHASE_POSTCOPY ||
                                               after == ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED);
    const MigrationResource done = AwaitEnd(m.id());
    ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
    if (cut_under_way) {
      EXPECT_GE(done.progress().reconnects(), 1u);
    }
    EXPECT_EQ(GetVmCode(*sa_, name), grpc::StatusCode::NOT_FOUND);
    EXPECT_TRUE(VerifyVm(*sb_, name)) << "digest after a cut in postcopy";
  }
}

// Forcing a reconnection (`ferry migration recover`) works while the
// stream looks healthy too, and the migration completes.
TEST_F(RecoveryTest, RecoverOnDemand) {
  CreateVm(*sa_, VmRequest("forced", "zipf", 48ull << 20));
  const MigrationResource m = Start("forced", ferry::v1::MIGRATION_MODE_POSTCOPY, 16ull << 20);
  ASSERT_EQ(AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  CliResult r = RunCli({"migration", "recover", m.id(), "--agent", a_->address(), "--to",
                        b_->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const MigrationResource done = AwaitEnd(m.id());
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  EXPECT_GE(done.progress().reconnects(), 1u);
  EXPECT_TRUE(VerifyVm(*sb_, "forced"));
  // Before switchover there is nothing to recover.
  CreateVm(*sa_, VmRequest("early", "dirty-rate", 64ull << 20));
  const MigrationResource e = Start("early", ferry::v1::MIGRATION_MODE_PRECOPY, 4ull << 20);
  r = RunCli({"migration", "recover", e.id(), "--agent", a_->address()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("only a migration after switchover can be recovered"));
}

// `ferry migrate` survives a broken connection to its agent: its progress
// stream reconnects and the command ends with the migration's outcome.
TEST_F(RecoveryTest, TheCliWatchStreamReconnects) {
  CreateVm(*sa_, VmRequest("watched", "zipf", 48ull << 20));
  CliResult r;
  std::thread cli([&] {
    r = RunCli({"migrate", "watched", "--from", a_->address(), "--to", b_->address(), "--mode",
                "postcopy", "--max-bandwidth", "16M"});
  });
  // Once it runs in postcopy, cut every connection to the source agent's
  // control port (the CLI's, and this test's own).
  bool cut = false;
  for (int i = 0; i < 3000 && !cut; ++i) {
    grpc::ClientContext ctx;
    ferry::v1::ListMigrationsResponse ms;
    if (sa_->ListMigrations(&ctx, {}, &ms).ok() && ms.migrations_size() > 0 &&
        ms.migrations(0).phase() == ferry::v1::MIGRATION_PHASE_POSTCOPY) {
      const std::string port = absl::StrCat(":", PortOf(a_->address()));
      CliResult k = RunCommand({"ss", "-K", "-t", "state", "established", "(", "sport", "=", port,
                                "or", "dport", "=", port, ")"});
      ASSERT_EQ(k.exit_code, 0) << k.out;
      cut = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  cli.join();
  ASSERT_TRUE(cut);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("reconnecting"));
  EXPECT_THAT(r.out, HasSubstr(": completed"));
  EXPECT_TRUE(VerifyVm(*sb_, "watched"));
}

// A destination that stops answering (SIGSTOP: its sockets stay open, so
// TCP alone would wait forever) is found silent within seconds; the
// migration pauses, and once the destination runs again the source
// reconnects and the migration completes with the right memory.
TEST_F(RecoveryTest, ASilentDestinationPausesTheMigrationUntilItAnswers) {
  CreateVm(*sa_, VmRequest("silent", "zipf", 48ull << 20));
  const MigrationResource m = Start("silent", ferry::v1::MIGRATION_MODE_POSTCOPY, 8ull << 20);
  ASSERT_EQ(AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  kill(b_->pid(), SIGSTOP);
  const MigrationResource paused =
      AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED, 20000);
  kill(b_->pid(), SIGCONT);
  ASSERT_EQ(paused.phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED) << paused.error();
  EXPECT_THAT(paused.progress().paused_reason(), HasSubstr("sent nothing"));
  const MigrationResource done = AwaitEnd(m.id());
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  EXPECT_GE(done.progress().reconnects(), 1u);
  EXPECT_TRUE(VerifyVm(*sb_, "silent"));
}

// A flood of connections that never speak on the agent's gRPC port: the
// agent keeps serving during it, closes each after the 10 s handshake
// timeout, and serves as before once it ends.
TEST_F(RecoveryTest, AConnectionFloodOnTheGrpcPortIsSurvived) {
  ::ferry::testing::ScopedFdLimit fds(4096);
  if (!fds.ok()) GTEST_SKIP() << "needs 4096 file descriptors";
  std::vector<UniqueFd> flood;
  for (int i = 0; i < 1500; ++i) {
    auto fd = ConnectTcp(a_->address(), 2000);
    ASSERT_TRUE(fd.ok()) << i << ": " << fd.status();
    flood.push_back(*std::move(fd));
  }
  {
    grpc::ClientContext ctx;
    ferry::v1::ListVmsResponse vms;
    EXPECT_TRUE(sa_->ListVms(&ctx, {}, &vms).ok()) << "the agent serves during the flood";
  }
  // Each silent connection is closed by the handshake timeout (what the
  // server sent first, its HTTP/2 settings, is read and dropped).
  int closed = 0;
  for (int i = 0; i < 1500; i += 100)
    closed += ::ferry::testing::ClosedWithin(flood[i].get(), 15000) ? 1 : 0;
  EXPECT_EQ(closed, 15) << "silent connections are closed by the agent";
  flood.clear();
  CreateVm(*sa_, VmRequest("after-flood", "zipf", 32ull << 20));
  const MigrationResource m = Start("after-flood", ferry::v1::MIGRATION_MODE_HYBRID, 0);
  EXPECT_EQ(AwaitEnd(m.id()).phase(), ferry::v1::MIGRATION_PHASE_COMPLETED);
}

// The destination agent dies after switchover and never comes back: the
// source gives up after the recovery timeout, reports the failure, and
// keeps its paused VM with all of its memory; it is not migrated again by
// mistake, and resumes only when forced.
TEST_F(RecoveryTest, DestinationLostAfterSwitchover) {
  CreateVm(*sa_, VmRequest("orphan", "zipf", 48ull << 20));
  const MigrationResource m =
      Start("orphan", ferry::v1::MIGRATION_MODE_POSTCOPY, 4ull << 20, /*recovery_timeout_ms=*/2000);
  ASSERT_EQ(AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  kill(b_->pid(), SIGKILL);
  EXPECT_EQ(AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED, 20000).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED);
  const MigrationResource done = AwaitEnd(m.id(), 60000);
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_FAILED);
  EXPECT_THAT(done.error(), HasSubstr("recovery timeout"));
  EXPECT_THAT(done.report().outcome(), HasSubstr("kept paused with all of its memory"));
  ferry::v1::Vm vm;
  ASSERT_EQ(GetVmCode(*sa_, "orphan", &vm), grpc::StatusCode::OK) << "the source keeps it";
  EXPECT_EQ(vm.state(), ferry::v1::VM_STATE_PAUSED);
  EXPECT_EQ(vm.held_by(), m.id());
  // Not offered for migration again, and not resumed without --force.
  StartB();
  {
    grpc::ClientContext ctx;
    ferry::v1::StartMigrationRequest r;
    r.set_vm_name("orphan");
    r.set_destination(b_->address());
    MigrationResource out;
    grpc::Status s = sa_->StartMigration(&ctx, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("held paused by migration"));
  }
  CliResult r = RunCli({"vm", "resume", "orphan", "--agent", a_->address()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--force"));
  // A paused VM can still be checked as it is.
  EXPECT_TRUE(VerifyVm(*sa_, "orphan"));
  r = RunCli({"vm", "resume", "orphan", "--force", "--agent", a_->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  ASSERT_EQ(GetVmCode(*sa_, "orphan", &vm), grpc::StatusCode::OK);
  EXPECT_EQ(vm.state(), ferry::v1::VM_STATE_RUNNING);
  EXPECT_TRUE(vm.held_by().empty());
}

// SIGKILL of the destination agent before switchover: the migration fails
// and the source VM runs on, intact.
TEST_F(RecoveryTest, DestinationKilledBeforeSwitchover) {
  CreateVm(*sa_, VmRequest("stay", "dirty-rate", 64ull << 20));
  const MigrationResource m = Start("stay", ferry::v1::MIGRATION_MODE_PRECOPY, 4ull << 20);
  ASSERT_EQ(AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_PRECOPY).phase(),
            ferry::v1::MIGRATION_PHASE_PRECOPY);
  // Well under way: pages have crossed (16 s at this cap).
  ASSERT_TRUE(Eventually([&] { return Get(m.id()).progress().pages_transferred() > 0; }));
  kill(b_->pid(), SIGKILL);
  const MigrationResource done = AwaitEnd(m.id(), 30000);
  EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_FAILED);
  EXPECT_THAT(done.report().outcome(), HasSubstr("the source VM keeps running"));
  ferry::v1::Vm vm;
  ASSERT_EQ(GetVmCode(*sa_, "stay", &vm), grpc::StatusCode::OK);
  EXPECT_EQ(vm.state(), ferry::v1::VM_STATE_RUNNING);
  EXPECT_TRUE(VerifyVm(*sa_, "stay"));
}

// SIGTERM of a source agent whose migration is paused in postcopy: the
// destination runs the VM and this agent's page server holds the rest of
// its memory, so the agent does not stop (it used to skip the wait, stop
// its gRPC server and block for the whole recovery timeout). It keeps
// serving (the migration can be watched and recovered), and once the
// migration completes it exits by itself, with nothing lost.
TEST_F(RecoveryTest, SigtermWaitsForAMigrationPausedInPostcopy) {
  CreateVm(*sa_, VmRequest("held", "zipf", 48ull << 20, 20'000'000));  // finite: verifiable
  const MigrationResource m = Start("held", ferry::v1::MIGRATION_MODE_POSTCOPY, 8ull << 20);
  ASSERT_EQ(AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);
  kill(b_->pid(), SIGSTOP);
  const MigrationResource paused =
      AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED, 20000);
  ASSERT_EQ(paused.phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED) << paused.error();
  ASSERT_TRUE(a_->Signal(SIGTERM));
  // Still there, still serving, still paused, however long we look.
  EXPECT_FALSE(a_->Wait(2000).has_value()) << "the source agent exited with a migration paused";
  EXPECT_TRUE(Eventually([&] {
    return ReadFileToString(TempDir() + "/a.log").value_or("").find("agent.waiting") !=
           std::string::npos;
  }));
  EXPECT_EQ(Get(m.id()).phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED);
  // The destination answers again: the migration completes and the agent
  // exits on its own, cleanly.
  // (The source's own record goes with it: the destination's is read.)
  kill(b_->pid(), SIGCONT);
  std::optional<int> status = a_->Wait(120000);
  ASSERT_TRUE(status.has_value()) << "the source agent did not exit after the migration ended";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  // It exited once the migration completed: the VM is the destination's.
  ferry::v1::Vm arrived;
  EXPECT_TRUE(Eventually([&] {
    grpc::ClientContext ctx;
    ferry::v1::GetVmRequest r;
    r.set_name("held");
    return sb_->GetVm(&ctx, r, &arrived).ok() && arrived.state() != ferry::v1::VM_STATE_INCOMING;
  }));
  EXPECT_NE(arrived.state(), ferry::v1::VM_STATE_FAILED);
  EXPECT_TRUE(VerifyVm(*sb_, "held"));
}

// SIGKILL of the source agent before switchover: the destination discards
// its half (no VM, no incoming migration) within seconds.
TEST_F(RecoveryTest, SourceKilledBeforeSwitchover) {
  CreateVm(*sa_, VmRequest("half", "dirty-rate", 64ull << 20));
  const MigrationResource m = Start("half", ferry::v1::MIGRATION_MODE_PRECOPY, 4ull << 20);
  ASSERT_EQ(AwaitPhase(m.id(), ferry::v1::MIGRATION_PHASE_PRECOPY).phase(),
            ferry::v1::MIGRATION_PHASE_PRECOPY);
  ASSERT_TRUE(Eventually([&] { return Get(m.id()).progress().pages_transferred() > 0; }));
  kill(a_->pid(), SIGKILL);
  // Within seconds (keepalive): the bound is a hang's, not a speed goal.
  EXPECT_TRUE(Eventually(
      [&] {
        grpc::ClientContext ctx;
        ferry::v1::ListVmsResponse vms;
        grpc::ClientContext ctx2;
        ferry::v1::ListMigrationsResponse ms;
        return sb_->ListVms(&ctx, {}, &vms).ok() && sb_->ListMigrations(&ctx2, {}, &ms).ok() &&
               vms.vms_size() == 0 && ms.migrations_size() == 0;
      },
      absl::Seconds(60)))
      << "the destination still holds part of the VM";
  // And it takes migrations again.
  a_.reset();
  StartAgents();
  CreateVm(*sa_, VmRequest("half", "zipf", 32ull << 20));
  const MigrationResource again = Start("half", ferry::v1::MIGRATION_MODE_HYBRID, 0);
  EXPECT_EQ(AwaitEnd(again.id()).phase(), ferry::v1::MIGRATION_PHASE_COMPLETED);
}

// Eight migrations at once between the same two agents: all complete, all
// digests match.
TEST_F(RecoveryTest, EightConcurrentMigrations) {
  a_.reset();
  auto a = agent::AgentProcess::Start(
      Ferryd(), {"--fetch-listen", absl::StrCat("127.0.0.1:", fetch_port_), "--max-migrations", "8"},
      TempDir() + "/a8.log");
  ASSERT_TRUE(a.ok()) << a.status();
  a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
  sa_ = Stub(a_->address());
  // Each workload with a mode that suits it (a guest writing faster than
  // the link cannot precopy), finite so that the replays stay short.
  struct Kind {
    const char* workload;
    ferry::v1::MigrationMode mode;
  } kinds[] = {{"zipf", ferry::v1::MIGRATION_MODE_HYBRID},
               {"uniform", ferry::v1::MIGRATION_MODE_POSTCOPY},
               {"dirty-rate", ferry::v1::MIGRATION_MODE_HYBRID},
               {"sequential", ferry::v1::MIGRATION_MODE_POSTCOPY}};
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    const std::string name = absl::StrCat("many-", i);
    const Kind& k = kinds[i % 4];
    const bool paced = std::string(k.workload) == "dirty-rate";
    CreateVm(*sa_, VmRequest(name, k.workload, 32ull << 20, paced ? 0 : 20'000'000));
    ids.push_back(Start(name, k.mode, 0).id());
  }
  for (int i = 0; i < 8; ++i) {
    const MigrationResource done = AwaitEnd(ids[i]);
    EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << i << ": " << done.error();
  }
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(VerifyVm(*sb_, absl::StrCat("many-", i))) << i;
}

}  // namespace
}  // namespace ferry::e2e
