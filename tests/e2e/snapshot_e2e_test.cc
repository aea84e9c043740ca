// Snapshots end to end with real processes (issue 22), in both agent
// layouts: ferryd --in-process (VMs inside ferryd) and ferryd --state-dir
// (one sandboxed ferry-vmm process per VM, the default).
//
// A guest that runs until stopped is snapshotted with `ferry vm snapshot
// --stop`, then restored under new names, lazily (in both fault modes)
// and eagerly, through the CLI; the restored VMs go on from the snapshot's per-vCPU op counts, and
// VerifyVm (the digest against a replay of every op each vCPU ran, before
// and after the snapshot) proves they go on with the same op stream, ending
// with the memory a VM that was never snapshotted would hold. Refusals
// (a missing snapshot, a taken name, an existing directory, a corrupt
// page) are clear and create nothing. No pass condition is a time: every
// deadline only bounds a hang.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/eventually.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migration/agent/vmm_process.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ferry::v1::Vm;
using ::testing::HasSubstr;

constexpr absl::Duration kHangGuard = absl::Seconds(120);

// The number after "key": in one line of --json output; -1 if absent.
double JsonNumber(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\":(-?[0-9.e+]+)"))) return -1;
  return std::stod(m[1]);
}

class SnapshotE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  bool vm_processes() const { return GetParam() == "vm-process"; }

  void SetUp() override {
    std::vector<std::string> args;
    if (vm_processes()) {
      setenv("FERRY_VMM", Runfile("migration/agent/ferry-vmm").c_str(), 1);
      // Unix socket paths are short: the state directory lives under /tmp.
      char state[] = "/tmp/ferry-snap-state-XXXXXX";
      ASSERT_NE(mkdtemp(state), nullptr);
      state_dir_ = state;
      args = {"--state-dir", state_dir_};
    }
    std::string snaps = TempDir() + "/snapshots-XXXXXX";
    ASSERT_NE(mkdtemp(snaps.data()), nullptr);
    snaps_ = snaps;
    std::string log = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(log.begin(), log.end(), '/', '-');
    auto a = agent::AgentProcess::Start(Ferryd(), args, TempDir() + "/ferryd-" + log + ".log");
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    stub_ = Stub(agent_->address());
  }

  void TearDown() override {
    agent_.reset();
    // VM processes outlive ferryd by design: end them here.
    if (!state_dir_.empty()) agent::EndStateDir(state_dir_, absl::ZeroDuration());
    RunCommand({"rm", "-rf", snaps_});
  }

  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--agent", agent_->address()});
    return RunCli(args);
  }

  ferry::v1::VmStatsResponse Stats(const std::string& name) {
    grpc::ClientContext ctx;
    ferry::v1::VmStatsRequest r;
    r.set_name(name);
    ferry::v1::VmStatsResponse out;
    grpc::Status s = stub_->VmStats(&ctx, r, &out);
    EXPECT_TRUE(s.ok()) << "stats of " << name << ": " << s.error_message();
    return out;
  }

  std::vector<uint64_t> VcpuOps(const std::string& name) {
    std::vector<uint64_t> ops;
    const ferry::v1::VmStatsResponse stats = Stats(name);
    for (const ferry::v1::VcpuStats& v : stats.vcpus()) ops.push_back(v.ops());
    return ops;
  }

  Vm Get(const std::string& name) {
    Vm vm;
    EXPECT_EQ(GetVmCode(*stub_, name, &vm), grpc::StatusCode::OK) << name;
    return vm;
  }

  // Waits until VM `name` has run more than `ops` guest ops in all.
  void AwaitOps(const std::string& name, uint64_t ops) {
    EXPECT_TRUE(Eventually([&] { return Get(name).guest_ops() > ops; }, kHangGuard))
        << name << " did not run past " << ops << " ops";
  }

  // The VMs the agent lists, by name; and, in the VM-process layout, the
  // processes its state directory records.
  std::vector<std::string> VmNames() {
    grpc::ClientContext ctx;
    ferry::v1::ListVmsResponse list;
    EXPECT_TRUE(stub_->ListVms(&ctx, {}, &list).ok());
    std::vector<std::string> names;
    for (const Vm& v : list.vms()) names.push_back(v.name());
    std::sort(names.begin(), names.end());
    return names;
  }
  size_t Processes() {
    if (state_dir_.empty()) return 0;
    auto dirs = agent::ListVmmDirs(state_dir_);
    return dirs.ok() ? dirs->size() : 0;
  }

  // Creates VM `name` running uniform until stopped (64 MiB, 2 vCPUs, a
  // quarter of its pages zero), lets it run, and snapshots it to `dir`
  // with --stop through the CLI. Returns the per-vCPU ops at the snapshot.
  std::vector<uint64_t> CreateAndSnapshot(const std::string& name, const std::string& dir) {
    CreateVm(*stub_, VmRequest(name, "uniform"));
    AwaitOps(name, 200'000);
    CliResult snap = Cli({"vm", "snapshot", name, "--to", dir, "--stop", "--json"});
    EXPECT_EQ(snap.exit_code, 0) << snap.out;
    EXPECT_THAT(snap.out, HasSubstr(absl::StrCat("\"dir\":\"", dir, "\"")));
    const std::vector<uint64_t> ops = VcpuOps(name);
    uint64_t total = 0;
    for (uint64_t o : ops) total += o;
    // It stayed paused: the snapshot holds exactly the ops it shows now.
    EXPECT_EQ(Get(name).state(), ferry::v1::VM_STATE_PAUSED);
    EXPECT_EQ(JsonNumber(snap.out, "guest_ops"), static_cast<double>(total)) << snap.out;
    EXPECT_EQ(JsonNumber(snap.out, "memory_bytes"), 64.0 * (1 << 20)) << snap.out;
    // Every page is one or the other (a uniform guest soon writes them all).
    EXPECT_EQ(JsonNumber(snap.out, "data_pages") + JsonNumber(snap.out, "zero_pages"), 16384.0)
        << snap.out;
    return ops;
  }

  std::string state_dir_;
  std::string snaps_;  // snapshot directories go in here
  std::unique_ptr<agent::AgentProcess> agent_;
  std::unique_ptr<ferry::v1::Control::Stub> stub_;
};

TEST_P(SnapshotE2eTest, RestoredVmsGoOnWithTheSameOpStream) {
  const std::string dir = snaps_ + "/web-1";
  const std::vector<uint64_t> at_snapshot = CreateAndSnapshot("web", dir);
  ASSERT_EQ(at_snapshot.size(), 2u);

  // The directory holds all of guest memory: the owner's alone.
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  for (const char* file : {"snapshot.ferry", "memory"}) {
    ASSERT_EQ(stat((dir + "/" + file).c_str(), &st), 0) << file;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
  // The source, paused since, is what the snapshot holds.
  EXPECT_TRUE(VerifyVm(*stub_, "web"));

  // Lazily: it runs at once, reading its memory in as it goes.
  CliResult lazy = Cli({"vm", "restore", "web-lazy", "--from", dir, "--lazy"});
  ASSERT_EQ(lazy.exit_code, 0) << lazy.out;
  EXPECT_THAT(lazy.out, HasSubstr("restored from " + dir + " (lazy, fault mode exit"));
  // Lazily with handler threads resolving the faults (blocking mode).
  CliResult blocking = Cli({"vm", "restore", "web-blocking", "--from", dir, "--lazy",
                            "--fault-mode", "blocking", "--json"});
  ASSERT_EQ(blocking.exit_code, 0) << blocking.out;
  EXPECT_THAT(blocking.out, HasSubstr("\"restore_fault_mode\":\"blocking")) << blocking.out;
  // Eagerly, named by a path relative to the CLI's working directory.
  CliResult eager =
      RunCommand({"sh", "-c",
                  absl::StrCat("cd '", snaps_, "' && '", Ferry(), "' --agent ", agent_->address(),
                               " vm restore web-eager --from ./web-1/ --json")});
  ASSERT_EQ(eager.exit_code, 0) << eager.out;
  EXPECT_THAT(eager.out, HasSubstr(absl::StrCat("\"restored_from\":\"", dir, "\"")));
  EXPECT_THAT(eager.out, HasSubstr("\"restore_mode\":\"eager\""));

  for (const char* name : {"web-lazy", "web-blocking", "web-eager"}) {
    // Each vCPU goes on from its count at the snapshot...
    const std::vector<uint64_t> ops = VcpuOps(name);
    ASSERT_EQ(ops.size(), at_snapshot.size()) << name;
    for (size_t v = 0; v < ops.size(); ++v) EXPECT_GE(ops[v], at_snapshot[v]) << name << v;
    uint64_t total = 0;
    for (uint64_t o : at_snapshot) total += o;
    AwaitOps(name, total + 200'000);
  }
  // ...the lazy one's memory fills (no page is missing, and the fill's
  // time is reported)...
  for (const char* name : {"web-lazy", "web-blocking"}) {
    EXPECT_TRUE(Eventually(
        [&] {
          const Vm v = Get(name);
          return v.pages_missing() == 0 && v.restore_ms() > 0;
        },
        kHangGuard))
        << name;
  }
  const Vm lazy_vm = Get("web-lazy");
  EXPECT_EQ(lazy_vm.state(), ferry::v1::VM_STATE_RUNNING);
  EXPECT_EQ(lazy_vm.restored_from(), dir);
  EXPECT_EQ(lazy_vm.restore_mode(), "lazy");
  CliResult get = Cli({"vm", "get", "web-lazy"});
  EXPECT_THAT(get.out, HasSubstr("every page read")) << get.out;
  // ...and each, stopped by a snapshot of its own (a restored VM is
  // snapshotted like any other; stopped, its replay stays short), holds
  // the digest of a replay of every op its vCPUs ran, the source's before
  // the first snapshot included.
  for (const char* name : {"web-lazy", "web-blocking", "web-eager"}) {
    CliResult again = Cli({"vm", "snapshot", name, "--to", snaps_ + "/" + name, "--stop"});
    EXPECT_EQ(again.exit_code, 0) << again.out;
    EXPECT_THAT(again.out, HasSubstr("stays paused")) << again.out;
  }
  for (const char* name : {"web-lazy", "web-blocking", "web-eager"}) {
    EXPECT_TRUE(VerifyVm(*stub_, name)) << name;
    const std::vector<uint64_t> ops = VcpuOps(name);
    for (size_t v = 0; v < ops.size(); ++v) EXPECT_GT(ops[v], at_snapshot[v]) << name << v;
  }
  // The source resumes where it stopped.
  CliResult resume = Cli({"vm", "resume", "web"});
  EXPECT_EQ(resume.exit_code, 0) << resume.out;
  AwaitOps("web", Get("web").guest_ops());
  EXPECT_TRUE(VerifyVm(*stub_, "web"));

  // The agent's events tell the snapshot, both restores and the fill.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  ferry::v1::WatchEventsRequest w;
  w.set_since_sequence(1);
  auto reader = stub_->WatchEvents(&ctx, w);
  bool snapshot = false, restored_lazy = false, restored_eager = false, filled = false;
  ferry::v1::Event e;
  while (!(snapshot && restored_lazy && restored_eager && filled) && reader->Read(&e)) {
    snapshot |= e.kind() == ferry::v1::EVENT_KIND_VM_SNAPSHOT && e.vm_name() == "web" &&
                e.message().find(dir) != std::string::npos;
    restored_lazy |= e.kind() == ferry::v1::EVENT_KIND_VM_CREATED && e.vm_name() == "web-lazy" &&
                     e.message().find("restored from " + dir + " (lazy)") != std::string::npos;
    restored_eager |= e.kind() == ferry::v1::EVENT_KIND_VM_CREATED && e.vm_name() == "web-eager" &&
                      e.message().find("restored from " + dir + " (eager)") != std::string::npos;
    filled |= e.kind() == ferry::v1::EVENT_KIND_VM_RESTORE_FILLED && e.vm_name() == "web-lazy";
  }
  ctx.TryCancel();
  EXPECT_TRUE(snapshot && restored_lazy && restored_eager && filled)
      << snapshot << restored_lazy << restored_eager << filled;
}

TEST_P(SnapshotE2eTest, RefusalsAreClearAndCreateNothing) {
  const std::string dir = snaps_ + "/web-1";
  CreateAndSnapshot("web", dir);
  CliResult resume = Cli({"vm", "resume", "web"});
  ASSERT_EQ(resume.exit_code, 0) << resume.out;
  const std::vector<std::string> vms = VmNames();
  const size_t processes = Processes();

  // A snapshot that is not there: not found, nothing started.
  CliResult missing = Cli({"vm", "restore", "web-2", "--from", snaps_ + "/nothing-here"});
  EXPECT_EQ(missing.exit_code, 4) << missing.out;
  EXPECT_THAT(missing.out, HasSubstr(snaps_ + "/nothing-here"));
  // A name that is taken: a conflict; the VM of that name runs on.
  CliResult taken = Cli({"vm", "restore", "web", "--from", dir, "--lazy"});
  EXPECT_EQ(taken.exit_code, 6) << taken.out;
  EXPECT_THAT(taken.out, HasSubstr("web"));
  EXPECT_THAT(taken.out, HasSubstr("exists"));
  // A directory that exists: a conflict; it is left as it was, and the VM
  // runs on.
  CliResult exists = Cli({"vm", "snapshot", "web", "--to", dir});
  EXPECT_EQ(exists.exit_code, 6) << exists.out;
  EXPECT_THAT(exists.out, HasSubstr(dir));
  struct stat st;
  EXPECT_EQ(stat((dir + "/memory").c_str(), &st), 0);
  // A parent that is not there: not found.
  CliResult no_parent = Cli({"vm", "snapshot", "web", "--to", snaps_ + "/no/such/parent"});
  EXPECT_EQ(no_parent.exit_code, 4) << no_parent.out;
  EXPECT_NE(stat((snaps_ + "/no").c_str(), &st), 0);
  // The Control API takes only absolute paths and named VMs.
  {
    grpc::ClientContext ctx;
    ferry::v1::RestoreVmRequest r;
    r.set_name("web-2");
    r.set_dir("web-1");
    Vm out;
    grpc::Status s = stub_->RestoreVm(&ctx, r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("absolute path"));
  }
  {
    grpc::ClientContext ctx;
    ferry::v1::SnapshotVmRequest r;
    r.set_dir(snaps_ + "/unnamed");
    ferry::v1::SnapshotVmResponse out;
    EXPECT_EQ(stub_->SnapshotVm(&ctx, r, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // A fault mode is for a lazy restore.
  CliResult fault_mode = Cli({"vm", "restore", "web-2", "--from", dir, "--fault-mode", "blocking"});
  EXPECT_EQ(fault_mode.exit_code, 2) << fault_mode.out;

  EXPECT_EQ(VmNames(), vms);
  EXPECT_EQ(Processes(), processes);
  EXPECT_EQ(Get("web").state(), ferry::v1::VM_STATE_RUNNING);
  EXPECT_TRUE(VerifyVm(*stub_, "web"));
}

// A snapshot whose memory file was damaged: an eager restore refuses it
// and creates nothing; a lazy one runs until it meets a page that does not
// check, then stops for good, failed with the reason.
TEST_P(SnapshotE2eTest, ACorruptPageFailsTheRestoreWithTheReason) {
  const std::string dir = snaps_ + "/web-1";
  CreateAndSnapshot("web", dir);
  const std::string bad = snaps_ + "/bad";
  CliResult copy = RunCommand({"cp", "-a", "--sparse=always", dir, bad});
  ASSERT_EQ(copy.exit_code, 0) << copy.out;
  {
    // One byte flipped in every page: every data page fails its checksum.
    const int fd = open((bad + "/memory").c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    const off_t size = lseek(fd, 0, SEEK_END);
    for (off_t at = 100; at < size; at += 4096) {
      unsigned char b = 0;
      ASSERT_EQ(pread(fd, &b, 1, at), 1);
      b ^= 0xff;
      ASSERT_EQ(pwrite(fd, &b, 1, at), 1);
    }
    close(fd);
  }
  const std::vector<std::string> vms = VmNames();
  const size_t processes = Processes();
  CliResult eager = Cli({"vm", "restore", "web-eager", "--from", bad});
  EXPECT_EQ(eager.exit_code, 3) << eager.out;  // data loss
  EXPECT_EQ(VmNames(), vms);
  EXPECT_EQ(Processes(), processes);

  CliResult lazy = Cli({"vm", "restore", "web-lazy", "--from", bad, "--lazy"});
  ASSERT_EQ(lazy.exit_code, 0) << lazy.out;
  EXPECT_TRUE(Eventually([&] { return Get("web-lazy").state() == ferry::v1::VM_STATE_FAILED; },
                         kHangGuard));
  const Vm failed = Get("web-lazy");
  EXPECT_THAT(failed.error(), HasSubstr("page")) << failed.error();
  CliResult get = Cli({"vm", "get", "web-lazy"});
  EXPECT_THAT(get.out, HasSubstr("failed: ")) << get.out;
  // A failed VM is neither snapshotted nor resumed; it is deleted.
  CliResult snap = Cli({"vm", "snapshot", "web-lazy", "--to", snaps_ + "/of-failed"});
  EXPECT_EQ(snap.exit_code, 6) << snap.out;
  EXPECT_THAT(snap.out, HasSubstr("failed")) << snap.out;
  CliResult resume = Cli({"vm", "resume", "web-lazy"});
  EXPECT_EQ(resume.exit_code, 6) << resume.out;
  EXPECT_EQ(Get("web-lazy").state(), ferry::v1::VM_STATE_FAILED);
  CliResult del = Cli({"vm", "delete", "web-lazy"});
  EXPECT_EQ(del.exit_code, 0) << del.out;
  EXPECT_EQ(VmNames(), vms);
}

// A live snapshot: the guest runs while its memory is written and only
// pauses for the last pass; it runs on after. The snapshot restores to a VM
// that goes on from it by replay; a paused VM is refused a live snapshot.
TEST_P(SnapshotE2eTest, ALiveSnapshotKeepsTheGuestRunning) {
  CreateVm(*stub_, VmRequest("web", "uniform"));
  AwaitOps("web", 200'000);
  const std::string dir = snaps_ + "/live";
  CliResult snap = Cli({"vm", "snapshot", "web", "--to", dir, "--live", "--json"});
  ASSERT_EQ(snap.exit_code, 0) << snap.out;
  EXPECT_THAT(snap.out, HasSubstr("\"live\":true")) << snap.out;
  EXPECT_GE(JsonNumber(snap.out, "rounds"), 2.0) << snap.out;
  EXPECT_GE(JsonNumber(snap.out, "pages_written"), JsonNumber(snap.out, "data_pages")) << snap.out;
  const double at_snapshot = JsonNumber(snap.out, "guest_ops");
  // It runs on.
  EXPECT_EQ(Get("web").state(), ferry::v1::VM_STATE_RUNNING);
  AwaitOps("web", static_cast<uint64_t>(at_snapshot));
  CliResult restore = Cli({"vm", "restore", "web-live", "--from", dir, "--lazy"});
  ASSERT_EQ(restore.exit_code, 0) << restore.out;
  AwaitOps("web-live", static_cast<uint64_t>(at_snapshot));
  EXPECT_TRUE(Eventually([&] { return Get("web-live").pages_missing() == 0; }, kHangGuard));
  CliResult stop = Cli({"vm", "snapshot", "web-live", "--to", snaps_ + "/stop", "--stop"});
  EXPECT_EQ(stop.exit_code, 0) << stop.out;
  EXPECT_TRUE(VerifyVm(*stub_, "web-live"));
  CliResult paused = Cli({"vm", "snapshot", "web-live", "--to", snaps_ + "/again", "--live"});
  EXPECT_EQ(paused.exit_code, 6) << paused.out;
  EXPECT_THAT(paused.out, HasSubstr("a live snapshot is of a running VM"));
}

INSTANTIATE_TEST_SUITE_P(Layouts, SnapshotE2eTest, ::testing::Values("in-process", "vm-process"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return p.param == "in-process" ? "InProcess" : "VmProcess";
                         });

}  // namespace
}  // namespace ferry::e2e
