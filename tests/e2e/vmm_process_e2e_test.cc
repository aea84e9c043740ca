// One ferry-vmm process per VM (ferryd --state-dir), end to end with real
// processes: VMs and migrations outlive ferryd killed with SIGKILL and
// started again on the same state directory, in precopy and in postcopy,
// on either side; a VMM killed alone leaves its VM failed with the reason
// and touches nothing else; SIGTERM of ferryd leaves every VMM running;
// every VMM runs sandboxed.
// Every migration that completes is checked by digest against a replay of
// the guest that never moved.
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/eventually.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migration/agent/vmm_client.h"
#include "migration/agent/vmm_process.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ferry::v1::MigrationResource;
using ::testing::HasSubstr;

class VmmProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("FERRY_VMM", Runfile("migration/agent/ferry-vmm").c_str(), 1);
    // Unix socket paths are short: the state directories live under /tmp.
    char a[] = "/tmp/ferry-vmm-a-XXXXXX";
    char b[] = "/tmp/ferry-vmm-b-XXXXXX";
    ASSERT_NE(mkdtemp(a), nullptr);
    ASSERT_NE(mkdtemp(b), nullptr);
    dir_a_ = a;
    dir_b_ = b;
    StartA();
    StartB();
  }

  void TearDown() override {
    a_.reset();
    b_.reset();
    // The processes outlive ferryd by design: end them here.
    for (const std::string& dir : {dir_a_, dir_b_}) agent::EndStateDir(dir, absl::ZeroDuration());
  }

  // The pids recorded in a state directory.
  static std::vector<std::string> VmmPids(const std::string& state_dir) {
    std::vector<std::string> pids;
    auto dirs = agent::ListVmmDirs(state_dir);
    if (!dirs.ok()) return pids;
    for (const std::string& d : *dirs) {
      auto r = agent::ReadRecord(d);
      if (r.ok()) pids.push_back(absl::StrCat(r->pid));
    }
    return pids;
  }

  // Whether a thread of process `pid` runs at `nice` (/proc/PID/task/*/stat,
  // field 19).
  static bool HasThreadAtNice(const std::string& pid, int nice) {
    CliResult tasks = RunCommand({"ls", "/proc/" + pid + "/task"});
    for (absl::string_view tid : absl::StrSplit(tasks.out, '\n', absl::SkipEmpty())) {
      auto stat = ReadFileToString(absl::StrCat("/proc/", pid, "/task/", tid, "/stat"));
      if (!stat.ok()) continue;
      // After the command name's closing parenthesis: field 3 onwards.
      const size_t close = stat->rfind(')');
      if (close == std::string::npos) continue;
      std::vector<std::string> f = absl::StrSplit(stat->substr(close + 2), ' ');
      if (f.size() > 16 && f[16] == absl::StrCat(nice)) return true;
    }
    return false;
  }

  // The pid of VM `name`'s process in a state directory; 0: none.
  static pid_t VmmPid(const std::string& state_dir, const std::string& name) {
    auto dirs = agent::ListVmmDirs(state_dir);
    if (!dirs.ok()) return 0;
    for (const std::string& d : *dirs) {
      auto r = agent::ReadRecord(d);
      if (r.ok() && r->name == name) return r->pid;
    }
    return 0;
  }

  void StartA() {
    std::vector<std::string> args = {"--state-dir", dir_a_};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    auto a = agent::AgentProcess::Start(Ferryd(), args, TempDir() + "/a.log");
    ASSERT_TRUE(a.ok()) << a.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    sa_ = Stub(a_->address());
  }

  void StartB() {
    std::vector<std::string> args = {"--state-dir", dir_b_};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    auto b = agent::AgentProcess::Start(Ferryd(), args, TempDir() + "/b.log");
    ASSERT_TRUE(b.ok()) << b.status();
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
    sb_ = Stub(b_->address());
  }

  // SIGKILL, then a new ferryd on the same state directory.
  void KillAndRestart(std::unique_ptr<agent::AgentProcess>* agent, bool is_a) {
    ASSERT_TRUE((*agent)->Signal(SIGKILL));
    ASSERT_TRUE((*agent)->Wait(10000).has_value());
    agent->reset();
    if (is_a) {
      StartA();
    } else {
      StartB();
    }
  }

  uint64_t Ops(ferry::v1::Control::Stub& stub, const std::string& name) {
    ferry::v1::Vm vm;
    EXPECT_EQ(GetVmCode(stub, name, &vm), grpc::StatusCode::OK);
    return vm.guest_ops();
  }

  // The same where the VM may not run yet (a destination before its
  // switchover completed answers FAILED_PRECONDITION): 0 then.
  static uint64_t OpsIfRunning(ferry::v1::Control::Stub& stub, const std::string& name) {
    ferry::v1::Vm vm;
    return GetVmCode(stub, name, &vm) == grpc::StatusCode::OK ? vm.guest_ops() : 0;
  }

  MigrationResource Start(const std::string& vm, ferry::v1::MigrationMode mode, uint64_t bandwidth,
                          uint32_t downtime_target_ms = 0) {
    grpc::ClientContext ctx;
    ferry::v1::StartMigrationRequest r;
    r.set_vm_name(vm);
    r.set_destination(b_->address());
    r.set_mode(mode);
    r.set_max_bandwidth(bandwidth);
    r.set_downtime_target_ms(downtime_target_ms);
    MigrationResource out;
    grpc::Status s = sa_->StartMigration(&ctx, r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  std::string dir_a_, dir_b_;
  std::vector<std::string> extra_args_;  // for both agents
  std::unique_ptr<agent::AgentProcess> a_, b_;
  std::unique_ptr<ferry::v1::Control::Stub> sa_, sb_;
};

TEST_F(VmmProcessTest, EachVmRunsInItsOwnProcessOutsideFerrydsSession) {
  CreateVm(*sa_, VmRequest("one", "uniform"));
  CreateVm(*sa_, VmRequest("two", "sequential"));
  const std::vector<std::string> pids = VmmPids(dir_a_);
  ASSERT_EQ(pids.size(), 2u);
  for (const std::string& pid : pids) {
    EXPECT_NE(std::stoi(pid), a_->pid());
    // Its own session: a signal to ferryd's process group misses it.
    EXPECT_EQ(getsid(std::stoi(pid)), std::stoi(pid));
    // Sandboxed (security.md, "The VMM sandbox"): a seccomp filter, no new
    // privileges, no capability at all.
    auto status = ReadFileToString("/proc/" + pid + "/status");
    ASSERT_TRUE(status.ok()) << status.status();
    EXPECT_THAT(*status, HasSubstr("\nSeccomp:\t2\n"));
    EXPECT_THAT(*status, HasSubstr("\nNoNewPrivs:\t1\n"));
    EXPECT_THAT(*status, HasSubstr("\nCapEff:\t0000000000000000\n"));
    EXPECT_THAT(*status, HasSubstr("\nCapPrm:\t0000000000000000\n"));
    EXPECT_THAT(*status, HasSubstr("\nCapBnd:\t0000000000000000\n"));
    // ...yet its page server's thread runs at nice -10 (ferryd raised it),
    // as in ferryd: a faulting vCPU's request goes before the bulk push.
    EXPECT_TRUE(HasThreadAtNice(pid, -10)) << pid;
  }
  ferry::v1::ListVmsResponse list;
  grpc::ClientContext ctx;
  ASSERT_TRUE(sa_->ListVms(&ctx, ferry::v1::ListVmsRequest(), &list).ok());
  EXPECT_EQ(list.vms_size(), 2);
  // ferryd's metrics hold every process's, labelled with its VM, each
  // family once.
  grpc::ClientContext mctx;
  ferry::v1::GetMetricsResponse metrics;
  ASSERT_TRUE(sa_->GetMetrics(&mctx, {}, &metrics).ok());
  EXPECT_THAT(metrics.text(), HasSubstr("\nferry_vmm_processes 2\n"));
  EXPECT_THAT(metrics.text(), HasSubstr("\nferry_vmm_metrics_unavailable 0\n"));
  EXPECT_THAT(metrics.text(), HasSubstr("\nferry_vms{vm=\"one\",state=\"running\"} 1\n"));
  EXPECT_THAT(metrics.text(), HasSubstr("\nferry_vms{vm=\"two\",state=\"running\"} 1\n"));
  size_t declared = 0;
  for (size_t at = 0; (at = metrics.text().find("# TYPE ferry_vms gauge", at)) != std::string::npos;
       ++at)
    ++declared;
  EXPECT_EQ(declared, 1u) << metrics.text();
}

TEST_F(VmmProcessTest, VmKeepsRunningThroughFerrydKill9AndIsReadopted) {
  CreateVm(*sa_, VmRequest("web", "uniform"));
  const uint64_t before = Ops(*sa_, "web");
  KillAndRestart(&a_, /*is_a=*/true);
  // The guest ran while no ferryd was there, and runs on.
  const uint64_t after = Ops(*sa_, "web");
  EXPECT_GT(after, before);
  EXPECT_TRUE(Eventually([&] { return Ops(*sa_, "web") > after; }));
  EXPECT_TRUE(VerifyVm(*sa_, "web"));
  // Still one VM of that name: a second create is refused.
  grpc::ClientContext ctx;
  ferry::v1::Vm out;
  EXPECT_EQ(sa_->CreateVm(&ctx, VmRequest("web", "idle"), &out).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

// One ferryd per state directory: a second one would adopt the first
// one's processes. It is refused at start, with the holder's pid; and
// --in-process (VMs inside ferryd) takes no state directory.
TEST_F(VmmProcessTest, ASecondFerrydOnTheSameStateDirectoryIsRefused) {
  CliResult second = RunCommand({Ferryd(), "--listen", "127.0.0.1:0", "--state-dir", dir_a_});
  EXPECT_EQ(second.exit_code, 1) << second.out;
  EXPECT_THAT(second.out, HasSubstr(absl::StrCat("another ferryd (pid ", a_->pid(),
                                                 ") serves the state directory ", dir_a_)));
  CliResult both =
      RunCommand({Ferryd(), "--listen", "127.0.0.1:0", "--in-process", "--state-dir", dir_a_});
  EXPECT_EQ(both.exit_code, 2) << both.out;
  EXPECT_THAT(both.out, HasSubstr("--in-process runs VMs inside ferryd"));
  // The first one is untouched, and a ferryd started after it goes finds
  // the directory free.
  CreateVm(*sa_, VmRequest("web", "idle"));
  KillAndRestart(&a_, /*is_a=*/true);
  ferry::v1::Vm v;
  EXPECT_EQ(GetVmCode(*sa_, "web", &v), grpc::StatusCode::OK);
}

TEST_F(VmmProcessTest, SigtermLeavesEveryVmmRunning) {
  CreateVm(*sa_, VmRequest("web", "uniform"));
  const std::vector<std::string> pids = VmmPids(dir_a_);
  ASSERT_EQ(pids.size(), 1u);
  const int status = a_->Stop(5000);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(kill(std::stoi(pids[0]), 0), 0) << "the VMM went with ferryd";
  a_.reset();
  StartA();
  EXPECT_TRUE(VerifyVm(*sa_, "web"));
}

// kill -9 of ferryd, then a new one on the same state directory, on
// either side, in every phase of a migration: precopy, switchover (the
// stop-and-copy), postcopy, and postcopy paused (its destination silent):
// the guest runs on through the restart (or, in the switchover, runs on
// at the destination), the restarted agent knows the VM and the
// migration, a watch started on the source's new agent follows the
// migration to its end, and the VM that arrives matches by digest.
// (Idle: VmKeepsRunningThroughFerrydKill9AndIsReadopted.)
struct KillCase {
  const char* name;
  bool kill_source;
  ferry::v1::MigrationMode mode;
  ferry::v1::MigrationPhase phase;
};

class FerrydKillTest : public VmmProcessTest, public ::testing::WithParamInterface<KillCase> {};

TEST_P(FerrydKillTest, MigrationCompletesThroughKill9AndRestart) {
  const KillCase& c = GetParam();
  const bool precopy = c.phase == ferry::v1::MIGRATION_PHASE_PRECOPY;
  const bool switchover = c.phase == ferry::v1::MIGRATION_PHASE_SWITCHOVER;
  // Precopy: a guest that writes 1 MB/s, so that precopy converges at any
  // speed of this machine (hybrid, should it not, still completes by
  // postcopy). Postcopy: every page written once at the start.
  // Switchover: a guest that writes all its 64 MiB over and over, and a
  // downtime target of a minute: right after the first round everything is
  // stale and fits the target, so the stop-and-copy sends about 64 MiB at
  // 16 MB/s, a switchover of some four seconds at any speed of this
  // machine.
  ferry::v1::CreateVmRequest vm =
      VmRequest("web", precopy ? "dirty-rate" : "uniform", switchover ? 64ull << 20 : 128ull << 20);
  if (precopy) vm.mutable_workload()->set_dirty_bytes_per_sec(1 << 20);
  CreateVm(*sa_, vm);
  // Otherwise 8 MB/s over 128 MiB: the phase lasts long enough to kill
  // ferryd in it.
  MigrationResource m = switchover ? Start("web", c.mode, 16 << 20, /*downtime_target_ms=*/60000)
                                   : Start("web", c.mode, 8 << 20);
  ASSERT_FALSE(m.id().empty());
  // Paused: the destination's VMM stopped (SIGSTOP: its sockets stay open,
  // silent) until the source finds it silent and pauses; it runs again
  // once the restarted agent is up, and the source reconnects.
  const bool paused = c.phase == ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED;
  MigrationResource p =
      AwaitPhase(*sa_, m.id(), paused ? ferry::v1::MIGRATION_PHASE_POSTCOPY : c.phase, 60000);
  ASSERT_EQ(p.phase(), paused ? ferry::v1::MIGRATION_PHASE_POSTCOPY : c.phase) << p.error();
  // Where the guest runs after the restart: the source in precopy, the
  // destination from the switchover on.
  ferry::v1::Control::Stub* runs = precopy ? sa_.get() : sb_.get();
  const uint64_t before = switchover ? OpsIfRunning(*runs, "web") : Ops(*runs, "web");
  pid_t frozen = 0;
  if (paused) {
    frozen = VmmPid(dir_b_, "web");
    ASSERT_GT(frozen, 0);
    ASSERT_EQ(kill(frozen, SIGSTOP), 0);
    p = AwaitPhase(*sa_, m.id(), c.phase, 30000);
    if (p.phase() != c.phase) kill(frozen, SIGCONT);
    ASSERT_EQ(p.phase(), c.phase) << p.error();
  }
  // When the kill was sent: a switchover case checks at the end that the
  // switchover was still on then (both agents' clocks are this host's).
  const int64_t kill_unix_ms = absl::ToUnixMillis(absl::Now());
  if (c.kill_source) {
    KillAndRestart(&a_, /*is_a=*/true);
  } else {
    KillAndRestart(&b_, /*is_a=*/false);
  }
  if (paused) {
    EXPECT_EQ(GetMigration(*sa_, m.id()).phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED)
        << "the restarted agent reports the pause";
    ASSERT_EQ(kill(frozen, SIGCONT), 0);
  }
  runs = precopy ? sa_.get() : sb_.get();
  // The guest ran while no ferryd was there, and runs on.
  EXPECT_TRUE(Eventually([&] { return OpsIfRunning(*runs, "web") > before; }));
  // Both agents know the VM (leaving, arriving or running); the source
  // forgets it once the migration completed (after a switchover, as soon
  // as the guest runs at the destination).
  ferry::v1::Vm v;
  if (GetVmCode(*sa_, "web", &v) != grpc::StatusCode::OK) {
    EXPECT_EQ(GetMigration(*sa_, m.id()).phase(), ferry::v1::MIGRATION_PHASE_COMPLETED);
  }
  EXPECT_EQ(GetVmCode(*sb_, "web", &v), grpc::StatusCode::OK);
  // A watch on the source's agent (new or not) picks the migration up...
  grpc::ClientContext watch;
  watch.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(150));
  ferry::v1::WatchMigrationRequest w;
  w.set_id(m.id());
  auto reader = sa_->WatchMigration(&watch, w);
  MigrationResource update;
  ASSERT_TRUE(reader->Read(&update)) << "no update from the restarted agent";
  EXPECT_EQ(update.id(), m.id());
  // ...which then goes at full speed and completes (a switchover may have
  // ended by now: then the change is refused, and nothing is left to speed).
  {
    grpc::ClientContext ctx;
    ferry::v1::SetMigrationParametersRequest r;
    r.set_id(m.id());
    r.set_max_bandwidth(0);
    MigrationResource out;
    grpc::Status s = sa_->SetMigrationParameters(&ctx, r, &out);
    if (!s.ok()) {
      EXPECT_EQ(GetMigration(*sa_, m.id()).phase(), ferry::v1::MIGRATION_PHASE_COMPLETED)
          << s.error_message();
    }
  }
  MigrationResource last = update;
  while (reader->Read(&update)) last = update;
  EXPECT_EQ(last.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << last.error();
  MigrationResource done = AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 120000);
  EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  // The record the source keeps once its process is gone is the final one.
  EXPECT_EQ(done.report().outcome(), "completed");
  if (switchover) {
    // The kill landed inside the switchover: the source's switchover ended
    // after it (a stop-and-copy of 64 MiB at 16 MB/s lasts some four
    // seconds, so at any speed of this machine).
    int64_t switchover_end_ms = 0;
    for (const ferry::v1::PhaseTiming& t : done.report().phase_timings())
      if (t.phase() == ferry::v1::MIGRATION_PHASE_SWITCHOVER) switchover_end_ms = t.end_unix_ms();
    EXPECT_GT(switchover_end_ms, kill_unix_ms)
        << "the switchover ended before ferryd was killed: this case did not test a kill in it";
  }
  EXPECT_TRUE(VerifyVm(*sb_, "web"));
}

INSTANTIATE_TEST_SUITE_P(
    EitherSideEitherPhase, FerrydKillTest,
    ::testing::Values(KillCase{"SourceInPrecopy", true, ferry::v1::MIGRATION_MODE_HYBRID,
                               ferry::v1::MIGRATION_PHASE_PRECOPY},
                      KillCase{"DestinationInPrecopy", false, ferry::v1::MIGRATION_MODE_HYBRID,
                               ferry::v1::MIGRATION_PHASE_PRECOPY},
                      KillCase{"SourceInPostcopy", true, ferry::v1::MIGRATION_MODE_POSTCOPY,
                               ferry::v1::MIGRATION_PHASE_POSTCOPY},
                      KillCase{"DestinationInPostcopy", false, ferry::v1::MIGRATION_MODE_POSTCOPY,
                               ferry::v1::MIGRATION_PHASE_POSTCOPY},
                      KillCase{"SourceInSwitchover", true, ferry::v1::MIGRATION_MODE_PRECOPY,
                               ferry::v1::MIGRATION_PHASE_SWITCHOVER},
                      KillCase{"DestinationInSwitchover", false, ferry::v1::MIGRATION_MODE_PRECOPY,
                               ferry::v1::MIGRATION_PHASE_SWITCHOVER},
                      KillCase{"SourceInPostcopyPaused", true, ferry::v1::MIGRATION_MODE_POSTCOPY,
                               ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED},
                      KillCase{"DestinationInPostcopyPaused", false,
                               ferry::v1::MIGRATION_MODE_POSTCOPY,
                               ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED}),
    [](const ::testing::TestParamInfo<KillCase>& info) { return std::string(info.param.name); });

TEST_F(VmmProcessTest, KilledVmmLeavesItsVmFailedAndOthersUntouched) {
  CreateVm(*sa_, VmRequest("victim", "uniform"));
  CreateVm(*sa_, VmRequest("bystander", "uniform"));
  auto dirs = agent::ListVmmDirs(dir_a_);
  ASSERT_TRUE(dirs.ok());
  pid_t victim = 0;
  for (const std::string& d : *dirs) {
    auto r = agent::ReadRecord(d);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->name == "victim") victim = r->pid;
  }
  ASSERT_GT(victim, 0);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  ferry::v1::Vm vm;
  EXPECT_TRUE(Eventually([&] {
    return GetVmCode(*sa_, "victim", &vm) == grpc::StatusCode::OK &&
           vm.state() == ferry::v1::VM_STATE_FAILED;
  }));
  EXPECT_THAT(vm.held_reason(), HasSubstr("killed by signal 9"));
  EXPECT_THAT(vm.error(), HasSubstr("killed by signal 9"));
  const uint64_t ops = Ops(*sa_, "bystander");
  EXPECT_TRUE(Eventually([&] { return Ops(*sa_, "bystander") > ops; }));
  EXPECT_TRUE(VerifyVm(*sa_, "bystander"));
  // Deleting the failed VM forgets it; the name is free again.
  grpc::ClientContext ctx;
  ferry::v1::DeleteVmRequest d;
  d.set_name("victim");
  ferry::v1::DeleteVmResponse out;
  EXPECT_TRUE(sa_->DeleteVm(&ctx, d, &out).ok());
  EXPECT_EQ(GetVmCode(*sa_, "victim"), grpc::StatusCode::NOT_FOUND);
  CreateVm(*sa_, VmRequest("victim", "idle"));
}

// kill -9 of one VMM in a migration's precopy ends the migration as the
// failure table says (docs/operations.md) for that side and phase: the
// source's VMM killed takes the VM (failed, with the exit status) and the
// destination drops its half; the destination's VMM killed leaves the VM
// running on the source, the migration failed on both supervisors, and
// no VM at the destination. Nothing hangs.
TEST_F(VmmProcessTest, KilledVmmEndsItsMigrationAsTheFailureTableSays) {
  for (const bool kill_source : {true, false}) {
    SCOPED_TRACE(kill_source ? "source VMM killed" : "destination VMM killed");
    const std::string name = kill_source ? "leaving" : "staying";
    ferry::v1::CreateVmRequest vm = VmRequest(name, "dirty-rate", 128ull << 20);
    vm.mutable_workload()->set_dirty_bytes_per_sec(1 << 20);
    CreateVm(*sa_, vm);
    MigrationResource m = Start(name, ferry::v1::MIGRATION_MODE_PRECOPY, 4 << 20);
    ASSERT_FALSE(m.id().empty());
    MigrationResource p = AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_PRECOPY);
    ASSERT_EQ(p.phase(), ferry::v1::MIGRATION_PHASE_PRECOPY) << p.error();
    const pid_t victim = VmmPid(kill_source ? dir_a_ : dir_b_, name);
    ASSERT_GT(victim, 0);
    const pid_t receiver = VmmPid(dir_b_, name);
    const uint64_t before = kill_source ? 0 : Ops(*sa_, name);
    ASSERT_EQ(kill(victim, SIGKILL), 0);
    ferry::v1::Vm v;
    // (Asked before its supervisor noticed, the dead process would answer
    // UNAVAILABLE.)
    if (kill_source) {
      EXPECT_TRUE(Eventually([&] {
        return GetVmCode(*sa_, name, &v) == grpc::StatusCode::OK &&
               v.state() == ferry::v1::VM_STATE_FAILED;
      }));
    }
    MigrationResource done =
        AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 60000);
    EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_FAILED);
    // The destination's supervisor keeps nothing running for it.
    EXPECT_TRUE(Eventually([&] { return GetVmCode(*sb_, name) == grpc::StatusCode::NOT_FOUND; }));
    if (kill_source) {
      // Its migration failed: no VM will arrive, and the receiving process
      // is stopped without waiting out its grace.
      EXPECT_TRUE(Eventually([&] { return kill(receiver, 0) != 0; })) << receiver;
      // Its supervisor keeps the failed incoming migration, as any ended one.
      MigrationResource there = GetMigration(*sb_, m.id());
      EXPECT_EQ(there.phase(), ferry::v1::MIGRATION_PHASE_FAILED);
      EXPECT_EQ(there.direction(), "incoming");
      EXPECT_THAT(done.error(), HasSubstr("killed by signal 9"));
      // Its report ends with it (what `ferry migrate` waits for).
      EXPECT_THAT(done.report().outcome(), HasSubstr("failed: its VMM process"));
      ASSERT_EQ(GetVmCode(*sa_, name, &v), grpc::StatusCode::OK);
      EXPECT_EQ(v.state(), ferry::v1::VM_STATE_FAILED);
      EXPECT_THAT(v.held_reason(), HasSubstr("killed by signal 9"));
    } else {
      MigrationResource there = GetMigration(*sb_, m.id());
      EXPECT_EQ(there.phase(), ferry::v1::MIGRATION_PHASE_FAILED);
      EXPECT_THAT(there.error(), HasSubstr("killed by signal 9"));
      EXPECT_EQ(there.direction(), "incoming");
      ASSERT_EQ(GetVmCode(*sa_, name, &v), grpc::StatusCode::OK);
      EXPECT_EQ(v.state(), ferry::v1::VM_STATE_RUNNING);
      EXPECT_TRUE(Eventually([&] { return Ops(*sa_, name) > before; }));
      EXPECT_TRUE(VerifyVm(*sa_, name));
    }
  }
}

// The events of every process reach ferryd's own stream (ferry events):
// the VM's creation, published by its ferry-vmm, is replayed to a watcher
// of ferryd, and so is a migration's end on both supervisors.
TEST_F(VmmProcessTest, EventsOfEachVmmReachFerrydsStream) {
  CreateVm(*sa_, VmRequest("web", "idle"));
  const MigrationResource m = Start("web", ferry::v1::MIGRATION_MODE_PRECOPY, 0);
  const MigrationResource done =
      AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 120000);
  ASSERT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
  auto kinds_of = [](ferry::v1::Control::Stub& stub, const std::string& vm) {
    std::vector<ferry::v1::EventKind> kinds;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    ferry::v1::WatchEventsRequest r;
    r.set_vm_name(vm);
    r.set_since_sequence(1);
    auto reader = stub.WatchEvents(&ctx, r);
    ferry::v1::Event e;
    while (reader->Read(&e)) {
      kinds.push_back(e.kind());
      if (e.kind() == ferry::v1::EVENT_KIND_MIGRATION_ENDED) break;
    }
    ctx.TryCancel();
    return kinds;
  };
  using ::testing::Contains;
  const auto source = kinds_of(*sa_, "web");
  EXPECT_THAT(source, Contains(ferry::v1::EVENT_KIND_VM_CREATED));
  EXPECT_THAT(source, Contains(ferry::v1::EVENT_KIND_MIGRATION_ENDED));
  const auto destination = kinds_of(*sb_, "web");
  EXPECT_THAT(destination, Contains(ferry::v1::EVENT_KIND_MIGRATION_ADMITTED));
  EXPECT_THAT(destination, Contains(ferry::v1::EVENT_KIND_MIGRATION_ENDED));
}

// `ferry migrate --check` between two agents that run VMs in processes:
// the source's process asks the destination's ferryd, which answers every
// check (the name, its limits, its port range among them) and starts no
// process; a name taken at the destination fails the check.
TEST_F(VmmProcessTest, PreflightCheckIsAnsweredByTheDestinationsSupervisor) {
  CreateVm(*sa_, VmRequest("web", "idle"));
  CreateVm(*sa_, VmRequest("taken", "idle"));
  CreateVm(*sb_, VmRequest("taken", "idle"));
  auto check = [&](const std::string& vm) {
    grpc::ClientContext ctx;
    ferry::v1::StartMigrationRequest r;
    r.set_vm_name(vm);
    r.set_destination(b_->address());
    r.set_mode(ferry::v1::MIGRATION_MODE_POSTCOPY);
    ferry::v1::CheckMigrationResponse out;
    grpc::Status s = sa_->CheckMigration(&ctx, r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  };
  auto item = [](const ferry::v1::CheckMigrationResponse& r, const std::string& name) {
    for (const ferry::v1::CheckItem& i : r.checks())
      if (i.name() == name) return i;
    return ferry::v1::CheckItem();
  };
  const ferry::v1::CheckMigrationResponse ok = check("web");
  std::string all;
  for (const ferry::v1::CheckItem& i : ok.checks())
    absl::StrAppend(&all, i.name(), ": ", i.ok() ? "ok" : "FAILED", " ", i.detail(), "\n");
  EXPECT_TRUE(ok.ok()) << all;
  EXPECT_TRUE(item(ok, "vm name").ok()) << all;
  EXPECT_TRUE(item(ok, "migration ports").ok()) << all;
  EXPECT_TRUE(item(ok, "fetch channel").ok()) << all;
  const ferry::v1::CheckMigrationResponse taken = check("taken");
  EXPECT_FALSE(taken.ok());
  EXPECT_FALSE(item(taken, "vm name").ok());
  EXPECT_THAT(item(taken, "vm name").detail(), HasSubstr("exists on this host"));
  // A check starts no process and leaves no migration behind.
  EXPECT_EQ(VmmPids(dir_b_).size(), 1u);
  ferry::v1::ListMigrationsResponse ms;
  grpc::ClientContext ctx;
  ASSERT_TRUE(sb_->ListMigrations(&ctx, {}, &ms).ok());
  EXPECT_EQ(ms.migrations_size(), 0);
}

// ferryd --vmm-user: each process runs as that user, with no capability,
// and still does all a VMM does: a postcopy migration (userfaultfd through
// the device it opened as root, its dirty log through the pagemap it kept)
// completes and matches by digest.
TEST_F(VmmProcessTest, VmmsRunAsTheVmmUser) {
  a_.reset();
  b_.reset();
  extra_args_ = {"--vmm-user", "nobody"};
  StartA();
  StartB();
  CreateVm(*sa_, VmRequest("web", "zipf", 64ull << 20));
  const pid_t pid = VmmPid(dir_a_, "web");
  ASSERT_GT(pid, 0);
  auto status = ReadFileToString(absl::StrCat("/proc/", pid, "/status"));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, HasSubstr("\nUid:\t65534\t65534\t65534\t65534\n"));
  EXPECT_THAT(*status, HasSubstr("\nCapEff:\t0000000000000000\n"));
  EXPECT_THAT(*status, HasSubstr("\nCapPrm:\t0000000000000000\n"));
  EXPECT_THAT(*status, HasSubstr("\nSeccomp:\t2\n"));
  // Its record and log stay root's; only its run directory is the user's.
  auto dirs = agent::ListVmmDirs(dir_a_);
  ASSERT_TRUE(dirs.ok() && dirs->size() == 1u);
  struct stat key {}, run {};
  ASSERT_EQ(stat(dirs->front().c_str(), &key), 0);
  ASSERT_EQ(stat(agent::VmmRunDir(dirs->front()).c_str(), &run), 0);
  EXPECT_EQ(key.st_uid, 0u);
  EXPECT_EQ(run.st_uid, 65534u);
  // Postcopy: the destination's userfaultfd. Precopy of a writing guest:
  // the source's dirty log (the pages written during the copy are found
  // by it, or the digest would not match).
  ferry::v1::CreateVmRequest db = VmRequest("db", "dirty-rate", 64ull << 20);
  db.mutable_workload()->set_dirty_bytes_per_sec(1 << 20);
  CreateVm(*sa_, db);
  const MigrationResource m = Start("web", ferry::v1::MIGRATION_MODE_POSTCOPY, 0);
  const MigrationResource n = Start("db", ferry::v1::MIGRATION_MODE_PRECOPY, 0);
  for (const MigrationResource& x : {m, n}) {
    const MigrationResource done =
        AwaitPhase(*sa_, x.id(), ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 120000);
    EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << done.error();
    EXPECT_TRUE(VerifyVm(*sb_, done.vm_name()));
  }
  const pid_t there = VmmPid(dir_b_, "web");
  ASSERT_GT(there, 0);
  status = ReadFileToString(absl::StrCat("/proc/", there, "/status"));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, HasSubstr("\nUid:\t65534\t65534\t65534\t65534\n"));
}

// Samples the guest op counter of VMs straight from their VMM processes'
// sockets every 50 ms: the guests' speed, seen without ferryd (which a test
// stops and starts meanwhile).
class OpSampler {
 public:
  struct Sample {
    absl::Time at;
    uint64_t ops;
  };

  // `vms`: VM name to its VMM's Control socket.
  explicit OpSampler(const std::map<std::string, std::string>& vms) {
    for (const auto& [name, socket] : vms)
      clients_[name] = std::make_unique<agent::VmmClient>(socket, name, absl::Seconds(2));
    thread_ = std::thread([this] { Run(); });
  }
  ~OpSampler() { Stop(); }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  // The time VM `name` ran below half its median speed of [from, until)
  // during [window_from, window_until): each interval between two samples
  // counts wholly when its speed was below half. (A stalled guest does not
  // catch up: a paced workload drops a backlog over 10 ms.)
  absl::Duration BelowHalfSpeed(const std::string& name, absl::Time baseline_from,
                                absl::Time baseline_until, absl::Time window_from,
                                absl::Time window_until) {
    absl::MutexLock lock(&mu_);
    const std::vector<Sample>& s = samples_[name];
    std::vector<double> rates;
    for (size_t i = 1; i < s.size(); ++i)
      if (s[i - 1].at >= baseline_from && s[i].at <= baseline_until)
        rates.push_back(Rate(s[i - 1], s[i]));
    if (rates.empty()) return absl::InfiniteDuration();
    std::nth_element(rates.begin(), rates.begin() + rates.size() / 2, rates.end());
    const double median = rates[rates.size() / 2];
    absl::Duration below;
    for (size_t i = 1; i < s.size(); ++i) {
      if (s[i].at <= window_from || s[i - 1].at >= window_until) continue;
      if (Rate(s[i - 1], s[i]) < median / 2) below += s[i].at - s[i - 1].at;
    }
    return below;
  }

  size_t Count(const std::string& name) {
    absl::MutexLock lock(&mu_);
    return samples_[name].size();
  }

 private:
  static double Rate(const Sample& a, const Sample& b) {
    return static_cast<double>(b.ops - a.ops) / absl::ToDoubleSeconds(b.at - a.at);
  }

  void Run() {
    while (true) {
      for (auto& [name, client] : clients_) {
        absl::StatusOr<ferry::v1::Vm> vm = client->GetVm(name);
        if (!vm.ok()) continue;
        absl::MutexLock lock(&mu_);
        samples_[name].push_back({absl::Now(), vm->guest_ops()});
      }
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Milliseconds(50))) return;
    }
  }

  std::map<std::string, std::unique_ptr<agent::VmmClient>> clients_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::vector<Sample>> samples_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// An agent upgrade under load (operations.md, "Upgrading agents"): 8 VMs
// on the source host, two of them migrating (one in precopy, one in
// postcopy); ferryd stopped with SIGTERM on both hosts in turn and started
// again from a new binary (a copy: another inode, as a package upgrade
// leaves it) on the same state directory. No VM stops, both migrations
// complete with matching digests. Printed: each staying guest's time below
// half its own speed across the restarts (the goal is none; a measurement,
// not a pass condition: a loaded machine may slow a guest by itself).
TEST_F(VmmProcessTest, AgentUpgradeUnderLoadStopsNoVmAndFailsNoMigration) {
  const std::string upgraded = TempDir() + "/ferryd-upgraded";
  ASSERT_EQ(RunCommand({"cp", Ferryd(), upgraded}).exit_code, 0);
  std::vector<std::string> staying;
  for (int i = 0; i < 6; ++i) {
    ferry::v1::CreateVmRequest vm = VmRequest(absl::StrCat("stay", i), "dirty-rate", 32ull << 20);
    // Paced at 1 MB/s: a stall shows as lost ops, not as a busy core.
    vm.mutable_workload()->set_dirty_bytes_per_sec(1 << 20);
    CreateVm(*sa_, vm);
    staying.push_back(vm.name());
  }
  ferry::v1::CreateVmRequest pre = VmRequest("moving-pre", "dirty-rate", 64ull << 20);
  pre.mutable_workload()->set_dirty_bytes_per_sec(1 << 20);
  CreateVm(*sa_, pre);
  // Paced: its faults cannot pull all of its memory in before the restarts.
  ferry::v1::CreateVmRequest post = VmRequest("moving-post", "dirty-rate", 64ull << 20);
  post.mutable_workload()->set_dirty_bytes_per_sec(1 << 20);
  CreateVm(*sa_, post);
  // 2 MB/s: both migrations are still running across both restarts.
  const MigrationResource mp = Start("moving-pre", ferry::v1::MIGRATION_MODE_HYBRID, 2 << 20);
  const MigrationResource mq = Start("moving-post", ferry::v1::MIGRATION_MODE_POSTCOPY, 2 << 20);
  ASSERT_FALSE(mp.id().empty());
  ASSERT_FALSE(mq.id().empty());
  ASSERT_EQ(AwaitPhase(*sa_, mp.id(), ferry::v1::MIGRATION_PHASE_PRECOPY).phase(),
            ferry::v1::MIGRATION_PHASE_PRECOPY);
  ASSERT_EQ(AwaitPhase(*sa_, mq.id(), ferry::v1::MIGRATION_PHASE_POSTCOPY).phase(),
            ferry::v1::MIGRATION_PHASE_POSTCOPY);

  std::map<std::string, std::string> sockets;
  for (const std::string& name : staying) {
    auto dirs = agent::ListVmmDirs(dir_a_);
    ASSERT_TRUE(dirs.ok()) << dirs.status();
    for (const std::string& d : *dirs) {
      auto r = agent::ReadRecord(d);
      if (r.ok() && r->name == name) sockets[name] = agent::ControlSocket(d);
    }
  }
  ASSERT_EQ(sockets.size(), staying.size());
  OpSampler sampler(sockets);
  std::map<std::string, uint64_t> before;
  for (const std::string& name : staying) before[name] = Ops(*sa_, name);
  const uint64_t before_post = Ops(*sb_, "moving-post");
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the guests' own speed

  const absl::Time restart_from = absl::Now();
  for (const bool source : {true, false}) {
    std::unique_ptr<agent::AgentProcess>& agent = source ? a_ : b_;
    const int status = agent->Stop(10000);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    agent.reset();
    auto next = agent::AgentProcess::Start(upgraded, {"--state-dir", source ? dir_a_ : dir_b_},
                                           TempDir() + (source ? "/a2.log" : "/b2.log"));
    ASSERT_TRUE(next.ok()) << next.status();
    agent = std::make_unique<agent::AgentProcess>(std::move(*next));
    (source ? sa_ : sb_) = Stub(agent->address());
  }
  // Both new agents answer for every VM and both migrations.
  for (const std::string& name : staying) {
    EXPECT_TRUE(Eventually([&] { return Ops(*sa_, name) > before[name]; })) << name;
  }
  EXPECT_TRUE(Eventually([&] { return Ops(*sb_, "moving-post") > before_post; }));
  const absl::Time restart_until = absl::Now();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  sampler.Stop();

  // Full speed for what is left. (On a fast machine a migration may have
  // ended by now: then there is nothing to change.)
  for (const MigrationResource& m : {mp, mq}) {
    grpc::ClientContext ctx;
    ferry::v1::SetMigrationParametersRequest r;
    r.set_id(m.id());
    r.set_max_bandwidth(0);
    MigrationResource out;
    grpc::Status s = sa_->SetMigrationParameters(&ctx, r, &out);
    if (!s.ok()) {
      const MigrationResource now = GetMigration(*sa_, m.id());
      EXPECT_EQ(now.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << s.error_message();
    }
  }
  for (const MigrationResource& m : {mp, mq}) {
    const MigrationResource done =
        AwaitPhase(*sa_, m.id(), ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 120000);
    EXPECT_EQ(done.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << m.vm_name() << done.error();
  }
  EXPECT_TRUE(VerifyVm(*sb_, "moving-pre"));
  EXPECT_TRUE(VerifyVm(*sb_, "moving-post"));
  for (const std::string& name : staying) {
    EXPECT_TRUE(VerifyVm(*sa_, name)) << name;
    const absl::Duration below =
        sampler.BelowHalfSpeed(name, restart_from - absl::Seconds(2), restart_from, restart_from,
                               restart_until + absl::Seconds(1));
    printf("upgrade: %s below half speed for %s across the restarts (%s, %zu samples)\n",
           name.c_str(), absl::FormatDuration(below).c_str(),
           absl::FormatDuration(restart_until - restart_from).c_str(), sampler.Count(name));
  }
}

}  // namespace
}  // namespace ferry::e2e
