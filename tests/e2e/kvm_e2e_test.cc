// Two ferryd agents move a KVM VM in each mode, and the destination's
// memory digest matches a replay of the guest (docs/kvm.md). Needs
// /dev/kvm: skips with the reason elsewhere; ./dev test-kvm runs it inside
// a nested KVM guest.
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/eventually.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/agent/vmm_process.h"
#include "sys/kvm.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;

class KvmAgentsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();
    if (!kvm.ok())
      GTEST_SKIP() << "needs /dev/kvm (" << kvm.status().message()
                   << "); ./dev test-kvm runs this inside a nested KVM guest";
    // With Ferry's KVM patch loaded the destination runs exit mode; on a
    // stock kernel, blocking mode (and the report says why).
    exits_ = kvm->caps().exit_on_missing;
    fetch_port_ = FreePort();
    auto a = agent::AgentProcess::Start(
        Ferryd(), {"--fetch-listen", absl::StrCat("127.0.0.1:", fetch_port_)},
        TempDir() + "/kvm-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/kvm-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }

  // What the report must say of the destination's fault path.
  void ExpectFaultPath(const std::string& json) {
    if (exits_) {
      EXPECT_THAT(json, HasSubstr("\"fault_mode\":\"exit\""));
      EXPECT_THAT(json, HasSubstr("memslots exit on missing pages (KVM userfault)"));
      EXPECT_THAT(json, HasSubstr("\"destination_paths\":\"kvm vCPUs, exit faults"));
    } else {
      EXPECT_THAT(json, HasSubstr("\"fault_mode\":\"blocking\""));
      EXPECT_THAT(json, HasSubstr("exit mode unavailable on this kernel"));
      EXPECT_THAT(json, HasSubstr("\"destination_paths\":\"kvm vCPUs, blocking faults"));
    }
  }

  bool exits_ = false;
  int fetch_port_ = 0;
  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_P(KvmAgentsTest, MovesAKvmVmAndTheDigestMatches) {
  const std::string mode = GetParam();
  const std::string vm = "kvm-" + mode;
  // Precopy must converge, also at the few MB/s of nested KVM under TCG:
  // a paced writer there; a free-running one in the modes that go postcopy.
  const bool precopy = mode == "precopy";
  CliResult create = RunCli({"vm", "create", vm, "--agent", a_->address(), "--backend", "kvm",
                             "--memory", "16M", "--vcpus", "2", "--workload",
                             precopy ? "dirty-rate" : "uniform", "--dirty-rate", "256K",
                             "--zero-fraction", "0.25"});
  ASSERT_EQ(create.exit_code, 0) << create.out;
  EXPECT_THAT(create.out, HasSubstr(" kvm "));
  CliResult get = RunCli({"vm", "get", vm, "--agent", a_->address()});
  EXPECT_THAT(get.out, HasSubstr("backend kvm (as asked): api 12"));
  CliResult migrate = RunCli({"migrate", vm, "--from", a_->address(), "--to", b_->address(),
                              "--mode", mode, "--fault-mode", "exit", "--json"});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.out;
  EXPECT_THAT(migrate.out, HasSubstr("\"outcome\":\"completed\""));
  EXPECT_THAT(migrate.out, HasSubstr("\"backend\":\"kvm\""));
  if (mode != "postcopy")
    EXPECT_THAT(migrate.out, HasSubstr("\"dirty_log\":\"KVM dirty bitmap"));
  // Exit mode was asked: it ran where the kernel's memslots exit on
  // missing pages, blocking mode elsewhere, and the report says which.
  if (!precopy) ExpectFaultPath(migrate.out);
  CliResult verify = RunCli({"vm", "verify", vm, "--agent", b_->address()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_THAT(verify.out, HasSubstr("MATCH"));
  CliResult gone = RunCli({"vm", "get", vm, "--agent", a_->address()});
  EXPECT_NE(gone.exit_code, 0) << "the source released the VM";
}

// Postcopy recovery with KVM vCPUs: every connection between the agents is
// destroyed (`ss -K`) while the destination runs the VM on missing pages;
// the migration pauses, the source reconnects, and it completes with the
// replay's digest. Slowed by a bandwidth cap so that the cut lands in
// postcopy even under TCG.
TEST_F(KvmAgentsTest, ACutInPostcopyRecovers) {
  CliResult create = RunCli({"vm", "create", "kvm-cut", "--agent", a_->address(), "--backend",
                             "kvm", "--memory", "16M", "--vcpus", "2", "--workload", "uniform",
                             "--zero-fraction", "0.25"});
  ASSERT_EQ(create.exit_code, 0) << create.out;
  CliResult start = RunCli({"migrate", "kvm-cut", "--from", a_->address(), "--to",
                            b_->address(), "--mode", "postcopy", "--fault-mode", "exit",
                            "--max-bandwidth", "2M", "--detach"});
  ASSERT_EQ(start.exit_code, 0) << start.out;
  const std::string id(absl::StripAsciiWhitespace(start.out));  // --detach: the id alone
  ASSERT_FALSE(id.empty()) << start.out;
  // Wait for postcopy (the VM runs at the destination), then cut.
  std::string phase;
  for (int i = 0; i < 600 && phase != "postcopy"; ++i) {
    CliResult get = RunCli({"migration", "get", id, "--agent", a_->address(), "--json"});
    phase = absl::StrContains(get.out, "\"phase\":\"postcopy\"") ? "postcopy" : "";
    ASSERT_FALSE(absl::StrContains(get.out, "\"phase\":\"completed\""))
        << "completed before the cut: " << get.out;
    if (phase.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(phase, "postcopy");
  const std::string b = absl::StrCat(b_->address().substr(b_->address().rfind(':') + 1));
  const std::string f = absl::StrCat(fetch_port_);
  CliResult cut = RunCommand({"ss", "-K", "-t", "state", "established", "(", "sport", "=",
                              ":" + b, "or", "dport", "=", ":" + b, "or", "sport", "=", ":" + f,
                              "or", "dport", "=", ":" + f, ")"});
  ASSERT_EQ(cut.exit_code, 0) << cut.out;
  CliResult watch = RunCli({"migration", "watch", id, "--agent", a_->address(), "--json"});
  ASSERT_EQ(watch.exit_code, 0) << watch.out;
  EXPECT_THAT(watch.out, HasSubstr("\"outcome\":\"completed\""));
  EXPECT_THAT(watch.out, ::testing::ContainsRegex("\"reconnects\":[1-9]"));
  ExpectFaultPath(watch.out);
  CliResult verify = RunCli({"vm", "verify", "kvm-cut", "--agent", b_->address()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_THAT(verify.out, HasSubstr("MATCH"));
}

// Memory map changes through the agent on a KVM VM: the CLI shows what the
// memslots went through. Growing `ram` keeps its slot where it is (resized
// in place on a kernel with Ferry's second KVM patch, recreated on a stock
// one) and moves `top` above it in RAM offset space (recreated).
TEST_F(KvmAgentsTest, AResizeThroughTheAgentShowsWhatTheMemslotsWentThrough) {
  CliResult create = RunCli({"vm", "create", "kvm-mem", "--agent", a_->address(), "--backend",
                             "kvm", "--memory", "16M", "--vcpus", "2", "--workload", "uniform"});
  ASSERT_EQ(create.exit_code, 0) << create.out;
  CliResult add = RunCli({"vm", "memory", "add", "kvm-mem", "--agent", a_->address(), "--region",
                          "top", "--gpa", "1G", "--size", "4M"});
  ASSERT_EQ(add.exit_code, 0) << add.out;
  EXPECT_THAT(add.out, HasSubstr("memslots: 1 kept, 0 resized in place, 0 recreated, 1 created"));
  CliResult grow =
      RunCli({"vm", "resize", "kvm-mem", "--agent", a_->address(), "--memory", "32M", "--json"});
  ASSERT_EQ(grow.exit_code, 0) << grow.out;
  if (sys::Kvm::Open()->caps().memslot_resize) {
    EXPECT_THAT(grow.out, HasSubstr("\"slots_recreated\":1,"));
    EXPECT_THAT(grow.out, HasSubstr("\"stage2_bytes_dropped\":4194304,"));  // top's
    EXPECT_THAT(grow.out, HasSubstr("\"slots_resized\":1}"));
  } else {
    EXPECT_THAT(grow.out, HasSubstr("\"slots_recreated\":2,"));
    EXPECT_THAT(grow.out, HasSubstr("\"stage2_bytes_dropped\":20971520,"));  // ram's and top's
    EXPECT_THAT(grow.out, HasSubstr("\"slots_resized\":0}"));
  }
  CliResult verify = RunCli({"vm", "verify", "kvm-mem", "--agent", a_->address()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_THAT(verify.out, HasSubstr("MATCH"));
}

// ferryd --state-dir with KVM: the VM runs in a sandboxed ferry-vmm process
// (the seccomp filter on, no capability), and a postcopy migration between
// two such processes completes with the replay's digest: the filter lets
// every KVM, userfaultfd and dirty-log call the VMM makes through.
TEST(KvmVmmProcessTest, ASandboxedVmmMovesAKvmVm) {
  absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();
  if (!kvm.ok())
    GTEST_SKIP() << "needs /dev/kvm (" << kvm.status().message()
                 << "); ./dev test-kvm runs this inside a nested KVM guest";
  const bool exits = kvm->caps().exit_on_missing;
  char a_dir[] = "/tmp/ferry-kvm-a-XXXXXX";
  char b_dir[] = "/tmp/ferry-kvm-b-XXXXXX";
  ASSERT_NE(mkdtemp(a_dir), nullptr);
  ASSERT_NE(mkdtemp(b_dir), nullptr);
  auto a = agent::AgentProcess::Start(Ferryd(), {"--state-dir", a_dir}, TempDir() + "/kvm-va.log");
  auto b = agent::AgentProcess::Start(Ferryd(), {"--state-dir", b_dir}, TempDir() + "/kvm-vb.log");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  CliResult create = RunCli({"vm", "create", "kvm-vmm", "--agent", a->address(), "--backend",
                             "kvm", "--memory", "16M", "--vcpus", "2", "--workload", "uniform",
                             "--zero-fraction", "0.25"});
  ASSERT_EQ(create.exit_code, 0) << create.out;
  auto pid_in = [](const std::string& dir) {
    auto dirs = agent::ListVmmDirs(dir);
    if (!dirs.ok() || dirs->empty()) return 0;
    auto r = agent::ReadRecord(dirs->front());
    return r.ok() ? static_cast<int>(r->pid) : 0;
  };
  const int pid = pid_in(a_dir);
  ASSERT_GT(pid, 0);
  auto status = ReadFileToString(absl::StrCat("/proc/", pid, "/status"));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, HasSubstr("\nSeccomp:\t2\n"));
  EXPECT_THAT(*status, HasSubstr("\nCapEff:\t0000000000000000\n"));
  CliResult migrate = RunCli({"migrate", "kvm-vmm", "--from", a->address(), "--to",
                              b->address(), "--mode", "postcopy", "--fault-mode", "exit", "--json"});
  EXPECT_EQ(migrate.exit_code, 0) << migrate.out;
  EXPECT_THAT(migrate.out, HasSubstr("\"outcome\":\"completed\""));
  EXPECT_THAT(migrate.out, HasSubstr("\"backend\":\"kvm\""));
  EXPECT_THAT(migrate.out, HasSubstr(exits ? "\"fault_mode\":\"exit\""
                                           : "\"fault_mode\":\"blocking\""));
  CliResult verify = RunCli({"vm", "verify", "kvm-vmm", "--agent", b->address()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_THAT(verify.out, HasSubstr("MATCH"));
  // Every process ended by its own ferryd, which waits for it: the KVM
  // modules are free again for the next suite (the nested guest reloads
  // them). The source's ended with its VM's departure; the destination's
  // ends with the VM.
  CliResult del = RunCli({"vm", "delete", "kvm-vmm", "--agent", b->address()});
  EXPECT_EQ(del.exit_code, 0) << del.out;
  EXPECT_TRUE(Eventually([&] { return pid_in(a_dir) == 0 && pid_in(b_dir) == 0; }));
  a->Stop();
  b->Stop();
  RunCommand({"rm", "-rf", a_dir, b_dir});
}

// ferryd --vmm-user nobody: the VMM opens /dev/kvm as root before it
// becomes nobody (who is in no kvm group) and keeps it, so a KVM VM is
// created and runs, by digest.
TEST(KvmVmmProcessTest, AVmmRunningAsAnotherUserRunsAKvmVm) {
  absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();
  if (!kvm.ok())
    GTEST_SKIP() << "needs /dev/kvm (" << kvm.status().message()
                 << "); ./dev test-kvm runs this inside a nested KVM guest";
  struct stat dev {};
  ASSERT_EQ(stat("/dev/kvm", &dev), 0);
  std::printf("/dev/kvm: mode %o, owner %u:%u\n", dev.st_mode & 07777, dev.st_uid, dev.st_gid);
  char dir[] = "/tmp/ferry-kvm-u-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  auto a = agent::AgentProcess::Start(Ferryd(), {"--state-dir", dir, "--vmm-user", "nobody"},
                                      TempDir() + "/kvm-u.log");
  ASSERT_TRUE(a.ok()) << a.status();
  CliResult create = RunCli({"vm", "create", "kvm-user", "--agent", a->address(), "--backend",
                             "kvm", "--memory", "16M", "--vcpus", "2", "--workload", "uniform"});
  ASSERT_EQ(create.exit_code, 0) << create.out;
  auto dirs = agent::ListVmmDirs(dir);
  ASSERT_TRUE(dirs.ok() && dirs->size() == 1u);
  auto record = agent::ReadRecord(dirs->front());
  ASSERT_TRUE(record.ok()) << record.status();
  auto status = ReadFileToString(absl::StrCat("/proc/", record->pid, "/status"));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, HasSubstr("\nUid:\t65534\t65534\t65534\t65534\n"));
  EXPECT_THAT(*status, HasSubstr("\nCapEff:\t0000000000000000\n"));
  CliResult get = RunCli({"vm", "get", "kvm-user", "--agent", a->address(), "--json"});
  EXPECT_THAT(get.out, HasSubstr("\"backend\":\"kvm\""));
  CliResult verify = RunCli({"vm", "verify", "kvm-user", "--agent", a->address()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_THAT(verify.out, HasSubstr("MATCH"));
  CliResult del = RunCli({"vm", "delete", "kvm-user", "--agent", a->address()});
  EXPECT_EQ(del.exit_code, 0) << del.out;
  EXPECT_TRUE(Eventually([&] {  // its process ended, its record gone
    auto left = agent::ListVmmDirs(dir);
    return left.ok() && (left->empty() || !agent::ReadRecord(left->front()).ok());
  }));
  a->Stop();
  RunCommand({"rm", "-rf", dir});
}

INSTANTIATE_TEST_SUITE_P(Modes, KvmAgentsTest,
                         ::testing::Values("precopy", "postcopy", "hybrid"));

}  // namespace
}  // namespace ferry::e2e
