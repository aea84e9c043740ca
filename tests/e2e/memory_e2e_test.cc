// Changing a running VM's memory map end to end with real processes, in
// both agent layouts: ferryd --in-process (VMs inside ferryd) and ferryd
// --state-dir (one sandboxed ferry-vmm process per VM, the default).
//
// A guest that runs until stopped has its main region grown, a region
// added, the main region shrunk and the region removed, through the CLI;
// it keeps running through each change, GetVm shows the regions after
// each, the events tell each change, and VerifyVm (the digest against a
// replay that applies each change where the guest met it) matches at the
// end. Every refusal (an unknown region, an overlap, the PC hole, past the
// VM's maximum or the agent's memory limit, removing the main region, an
// unspecified kind, too many changes, snapshotting a VM whose map changed)
// is clear and leaves the map as it was. A VM whose map changed migrates
// there and back and verifies on each side. No pass condition is a time:
// every deadline only bounds a hang.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
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

using ferry::v1::MemoryChange;
using ferry::v1::Vm;
using ::testing::HasSubstr;

constexpr absl::Duration kHangGuard = absl::Seconds(120);
constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

// The messages of the first `n` events of `kind` about VM `vm` on the
// agent behind `stub`, from its first event on (fewer if none come within
// two minutes).
std::vector<std::string> EventMessages(ferry::v1::Control::Stub& stub, const std::string& vm,
                                       ferry::v1::EventKind kind, size_t n) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  ferry::v1::WatchEventsRequest w;
  w.set_since_sequence(1);
  w.set_vm_name(vm);
  auto reader = stub.WatchEvents(&ctx, w);
  std::vector<std::string> out;
  ferry::v1::Event e;
  while (out.size() < n && reader->Read(&e))
    if (e.kind() == kind) out.push_back(e.message());
  ctx.TryCancel();
  return out;
}

// "name gpa size; ..." of a VM's regions, for comparisons that print well.
std::string Regions(const Vm& vm) {
  std::string out;
  for (const ferry::v1::MemoryRegion& r : vm.regions())
    absl::StrAppend(&out, r.name(), " ", r.gpa(), " ", r.size(), "; ");
  return out;
}

class MemoryE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  bool vm_processes() const { return GetParam() == "vm-process"; }

  void SetUp() override {
    // Room for the VMs these tests grow, and a limit one of them meets.
    std::vector<std::string> args = {"--max-memory", "320M"};
    if (vm_processes()) {
      setenv("FERRY_VMM", Runfile("migration/agent/ferry-vmm").c_str(), 1);
      // Unix socket paths are short: the state directory lives under /tmp.
      char state[] = "/tmp/ferry-mem-state-XXXXXX";
      ASSERT_NE(mkdtemp(state), nullptr);
      state_dir_ = state;
      args.insert(args.end(), {"--state-dir", state_dir_});
    }
    std::string snaps = TempDir() + "/mem-snapshots-XXXXXX";
    ASSERT_NE(mkdtemp(snaps.data()), nullptr);
    snaps_ = snaps;
    std::string log = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(log.begin(), log.end(), '/', '-');
    auto a = agent::AgentProcess::Start(Ferryd(), args, TempDir() + "/ferryd-mem-" + log + ".log");
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

  // Creates VM `name` through the CLI: a uniform guest that runs until
  // stopped, `memory` of RAM and at most `max_memory`; waits until it runs.
  void Create(const std::string& name, const std::string& memory, const std::string& max_memory) {
    CliResult c = Cli({"vm", "create", name, "--memory", memory, "--max-memory", max_memory,
                       "--workload", "uniform", "--json"});
    ASSERT_EQ(c.exit_code, 0) << c.out;
    AwaitOps(name, 50'000);
  }

  grpc::Status Change(const std::string& name, const std::vector<MemoryChange>& changes,
                      ferry::v1::ChangeVmMemoryResponse* out = nullptr) {
    grpc::ClientContext ctx;
    ferry::v1::ChangeVmMemoryRequest r;
    r.set_name(name);
    for (const MemoryChange& c : changes) *r.add_changes() = c;
    ferry::v1::ChangeVmMemoryResponse ignored;
    return stub_->ChangeVmMemory(&ctx, r, out != nullptr ? out : &ignored);
  }

  std::string state_dir_;
  std::string snaps_;
  std::unique_ptr<agent::AgentProcess> agent_;
  std::unique_ptr<ferry::v1::Control::Stub> stub_;
};

MemoryChange Resize(const std::string& region, uint64_t size) {
  MemoryChange c;
  c.set_kind(MemoryChange::KIND_RESIZE);
  c.set_region(region);
  c.set_size(size);
  return c;
}

MemoryChange Add(const std::string& region, uint64_t gpa, uint64_t size) {
  MemoryChange c;
  c.set_kind(MemoryChange::KIND_ADD);
  c.set_region(region);
  c.set_gpa(gpa);
  c.set_size(size);
  return c;
}

MemoryChange Remove(const std::string& region) {
  MemoryChange c;
  c.set_kind(MemoryChange::KIND_REMOVE);
  c.set_region(region);
  return c;
}

TEST_P(MemoryE2eTest, TheMapChangesWhileTheGuestRunsAndVerifies) {
  Create("web", "64M", "256M");
  Vm vm = Get("web");
  EXPECT_EQ(Regions(vm), absl::StrCat("ram 0 ", 64 * kMiB, "; "));
  EXPECT_EQ(vm.max_memory_bytes(), 256 * kMiB);
  EXPECT_EQ(vm.memory_changes(), 0u);

  // Grow the main region: the vCPUs were held off, and run on.
  uint64_t ops = vm.guest_ops();
  CliResult grow = Cli({"vm", "resize", "web", "--memory", "128M"});
  ASSERT_EQ(grow.exit_code, 0) << grow.out;
  EXPECT_THAT(grow.out, HasSubstr("web: resize ram to 128 MiB: done; its vCPUs were held off"));
  EXPECT_THAT(grow.out, HasSubstr("regions: ram 128 MiB at 0x0 (128 MiB in all)"));
  AwaitOps("web", ops);

  // Add a region at 1 GiB, above the main region, below the hole.
  ops = Get("web").guest_ops();
  CliResult add = Cli({"vm", "memory", "add", "web", "--region", "dimm0", "--gpa", "0x40000000",
                       "--size", "64M", "--json"});
  ASSERT_EQ(add.exit_code, 0) << add.out;
  EXPECT_THAT(add.out, HasSubstr("\"regions\":[{\"name\":\"dimm0\",\"gpa\":1073741824,"
                                 "\"size_bytes\":67108864},{\"name\":\"ram\",\"gpa\":0,"
                                 "\"size_bytes\":134217728}]"));
  EXPECT_THAT(add.out, HasSubstr("\"memory_bytes\":201326592"));
  EXPECT_THAT(add.out, HasSubstr("\"held_off_us\":"));
  AwaitOps("web", ops);
  vm = Get("web");
  EXPECT_EQ(Regions(vm),
            absl::StrCat("dimm0 ", kGiB, " ", 64 * kMiB, "; ram 0 ", 128 * kMiB, "; "));
  EXPECT_EQ(vm.layout().memory_bytes(), 192 * kMiB);
  EXPECT_EQ(vm.memory_changes(), 2u);
  EXPECT_EQ(vm.state(), ferry::v1::VM_STATE_RUNNING);

  // Shrink the main region below its first size, then remove the region.
  ops = vm.guest_ops();
  CliResult shrink = Cli({"vm", "resize", "web", "--memory", "32M"});
  ASSERT_EQ(shrink.exit_code, 0) << shrink.out;
  AwaitOps("web", ops);
  ops = Get("web").guest_ops();
  CliResult remove = Cli({"vm", "memory", "remove", "web", "--region", "dimm0"});
  ASSERT_EQ(remove.exit_code, 0) << remove.out;
  EXPECT_THAT(remove.out, HasSubstr("web: remove dimm0: done"));
  EXPECT_THAT(remove.out, HasSubstr("regions: ram 32 MiB at 0x0 (32 MiB in all)"));
  AwaitOps("web", ops);

  vm = Get("web");
  EXPECT_EQ(Regions(vm), absl::StrCat("ram 0 ", 32 * kMiB, "; "));
  EXPECT_EQ(vm.layout().memory_bytes(), 32 * kMiB);
  EXPECT_EQ(vm.memory_changes(), 4u);
  CliResult get = Cli({"vm", "get", "web"});
  EXPECT_THAT(get.out, HasSubstr("memory 32 MiB of at most 256 MiB: ram 32 MiB at 0x0 (4 changes"))
      << get.out;
  CliResult list = Cli({"vm", "list", "--json"});
  EXPECT_THAT(list.out, HasSubstr("\"memory_changes\":4")) << list.out;
  EXPECT_THAT(list.out, HasSubstr("\"max_memory_bytes\":268435456")) << list.out;

  // The replay applies each change where the guest met it: the same memory.
  EXPECT_TRUE(VerifyVm(*stub_, "web"));
  // Verified, it runs on (it was paused for the digest), and changes again.
  AwaitOps("web", Get("web").guest_ops());
  ASSERT_TRUE(Change("web", {Resize("ram", 48 * kMiB)}).ok());
  AwaitOps("web", Get("web").guest_ops());
  EXPECT_TRUE(VerifyVm(*stub_, "web"));

  // The agent's events tell each change, with the time the vCPUs waited.
  const std::vector<std::string> changes =
      EventMessages(*stub_, "web", ferry::v1::EVENT_KIND_VM_MEMORY_CHANGED, 5);
  ASSERT_EQ(changes.size(), 5u);
  EXPECT_THAT(changes[0], HasSubstr("resize ram to 128 MiB: now ram 128 MiB at 0x0"));
  EXPECT_THAT(changes[1], HasSubstr("add dimm0 (64 MiB at 0x40000000)"));
  EXPECT_THAT(changes[3], HasSubstr("remove dimm0"));
  for (const std::string& m : changes) EXPECT_THAT(m, HasSubstr("vCPUs held off"));
}

TEST_P(MemoryE2eTest, RefusalsAreClearAndLeaveTheMapAsItWas) {
  Create("web", "64M", "256M");
  ASSERT_TRUE(Change("web", {Resize("ram", 128 * kMiB), Add("dimm0", kGiB, 64 * kMiB)}).ok());
  // Another VM (idle: the machine's cores are web's) takes 96 MiB of the
  // agent's 320: web can grow by 32 MiB more.
  CreateVm(*stub_, VmRequest("other", "idle", 96 * kMiB));
  const Vm before = Get("web");
  ASSERT_EQ(before.memory_changes(), 1u);
  ASSERT_EQ(before.layout().memory_bytes(), 192 * kMiB);

  struct Case {
    std::vector<std::string> argv;
    int exit_code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"vm", "memory", "remove", "web", "--region", "nope"}, 2, "there is no region nope"},
      {{"vm", "memory", "add", "web", "--region", "dimm1", "--gpa", "0x40000000", "--size", "64M"},
       2,
       "overlaps region \"dimm0\""},
      {{"vm", "memory", "add", "web", "--region", "dimm1", "--gpa", "3G", "--size", "64M"},
       2,
       "overlaps the hole"},
      {{"vm", "memory", "add", "web", "--region", "Bad Name", "--gpa", "2G", "--size", "64M"},
       2,
       "Bad Name"},
      {{"vm", "resize", "web", "--memory", "512M"}, 6, "this VM's maximum is 256 MiB"},
      {{"vm", "resize", "web", "--memory", "176M"}, 6, "--max-memory"},
      {{"vm", "memory", "remove", "web", "--region", "ram"}, 2, "cannot be removed"},
      {{"vm", "resize", "web", "--memory", "128M"}, 2, "has that size"},
      {{"vm", "resize", "nope", "--memory", "128M"}, 4, "nope"},
      {{"vm", "resize", "web"}, 2, "--memory is needed"},
      {{"vm", "memory", "add", "web", "--region", "dimm1", "--gpa", "0xzz", "--size", "64M"},
       2,
       "--gpa: '0xzz'"},
  };
  for (const Case& c : cases) {
    CliResult r = Cli(c.argv);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.argv[1] << ": " << r.out;
    EXPECT_THAT(r.out, HasSubstr(c.says)) << r.out;
  }
  // The Control API: an UNSPECIFIED kind, too many changes, none at all.
  {
    MemoryChange unspecified = Resize("ram", 64 * kMiB);
    unspecified.set_kind(MemoryChange::KIND_UNSPECIFIED);
    grpc::Status s = Change("web", {Resize("dimm0", 32 * kMiB), unspecified});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("change 2 (region ram): the kind is unspecified"));
  }
  {
    grpc::Status s = Change("web", std::vector<MemoryChange>(65, Resize("ram", 64 * kMiB)));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("65 memory changes in one request; at most 64"));
  }
  EXPECT_EQ(Change("web", {}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A transaction is whole or nothing: its first change fits, its second
  // does not.
  {
    grpc::Status s = Change("web", {Resize("ram", 96 * kMiB), Resize("dimm9", 2 * kMiB)});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("change 2"));
  }
  // A VM can never be made to grow past the agent's limit.
  CliResult big = Cli({"vm", "create", "big", "--memory", "64M", "--max-memory", "1G"});
  EXPECT_EQ(big.exit_code, 6) << big.out;
  EXPECT_THAT(big.out, HasSubstr("--max-memory")) << big.out;

  const Vm after = Get("web");
  EXPECT_EQ(Regions(after), Regions(before));
  EXPECT_EQ(after.memory_changes(), before.memory_changes());
  EXPECT_EQ(after.layout().memory_bytes(), before.layout().memory_bytes());
  EXPECT_EQ(after.state(), ferry::v1::VM_STATE_RUNNING);
  grpc::ClientContext ctx;
  ferry::v1::ListMigrationsResponse migrations;
  ASSERT_TRUE(stub_->ListMigrations(&ctx, {}, &migrations).ok());
  EXPECT_EQ(migrations.migrations_size(), 0);

  // The grow the limit refused fits once the other VM shrinks: what a
  // shrink gives back is admitted again.
  ASSERT_TRUE(Change("other", {Resize("ram", 64 * kMiB)}).ok());
  ferry::v1::ChangeVmMemoryResponse grown;
  grpc::Status s = Change("web", {Resize("ram", 176 * kMiB)}, &grown);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(grown.memory_bytes(), 240 * kMiB);
  AwaitOps("web", after.guest_ops());
  EXPECT_TRUE(VerifyVm(*stub_, "web"));
  EXPECT_TRUE(VerifyVm(*stub_, "other"));
}

// A VM whose map changed is snapshotted (format version 2: its regions,
// creation size and memory history in the manifest) and restored, eagerly
// and lazily, with the same map; each copy verifies by replaying every
// change, and changes again.
TEST_P(MemoryE2eTest, AVmWhoseMapChangedIsSnapshottedAndRestoresWithItsMap) {
  Create("web", "64M", "256M");
  ASSERT_TRUE(Change("web", {Resize("ram", 96 * kMiB), Add("dimm0", kGiB, 32 * kMiB)}).ok());
  AwaitOps("web", Get("web").guest_ops());
  ASSERT_TRUE(Change("web", {Resize("dimm0", 16 * kMiB)}).ok());
  AwaitOps("web", Get("web").guest_ops());
  const std::string dir = snaps_ + "/web-1";
  CliResult snap = Cli({"vm", "snapshot", "web", "--to", dir, "--stop", "--json"});
  ASSERT_EQ(snap.exit_code, 0) << snap.out;
  EXPECT_THAT(snap.out, HasSubstr("\"memory_bytes\":117440512")) << snap.out;  // 96 + 16 MiB
  for (const char* mode : {"eager", "lazy"}) {
    SCOPED_TRACE(mode);
    const std::string name = absl::StrCat("web-", mode);
    std::vector<std::string> argv = {"vm", "restore", name, "--from", dir};
    if (std::string(mode) == "lazy") argv.push_back("--lazy");
    CliResult restored = Cli(argv);
    ASSERT_EQ(restored.exit_code, 0) << restored.out;
    const Vm copy = Get(name);
    EXPECT_EQ(Regions(copy), "dimm0 1073741824 16777216; ram 0 100663296; ");
    EXPECT_EQ(copy.memory_changes(), 2u);
    AwaitOps(name, copy.guest_ops());
    // Once every page is read (a lazy copy), it changes again and verifies.
    grpc::Status s;
    EXPECT_TRUE(Eventually(
        [&] {
          s = Change(name, {Remove("dimm0")});
          return s.ok();
        },
        kHangGuard))
        << s.error_message();
    EXPECT_EQ(Get(name).memory_changes(), 3u);
    AwaitOps(name, Get(name).guest_ops());
    EXPECT_TRUE(VerifyVm(*stub_, name));
    // The agent's 320 MiB hold web (paused) and one copy at a time.
    CliResult del = Cli({"vm", "delete", name});
    EXPECT_EQ(del.exit_code, 0) << del.out;
  }
}

// A VM whose map changed migrates: its regions and the transactions that
// made them travel in the Hello, the destination builds the same map, and
// VerifyVm there replays from the creation size through every change. Then
// the map changes again on the destination (once every page is in) and the
// VM migrates back, carrying both changes.
TEST_P(MemoryE2eTest, AVmWhoseMapChangedMigratesThereAndBackAndVerifies) {
  std::vector<std::string> args = {"--max-memory", "320M"};
  std::string state_b;
  if (vm_processes()) {
    char state[] = "/tmp/ferry-mem-state-b-XXXXXX";
    ASSERT_NE(mkdtemp(state), nullptr);
    state_b = state;
    args.insert(args.end(), {"--state-dir", state_b});
  }
  auto started = agent::AgentProcess::Start(Ferryd(), args, TempDir() + "/ferryd-mem-b.log");
  ASSERT_TRUE(started.ok()) << started.status();
  auto b = std::make_unique<agent::AgentProcess>(std::move(*started));
  auto stub_b = Stub(b->address());

  Create("mover", "64M", "256M");
  ASSERT_TRUE(Change("mover", {Resize("ram", 96 * kMiB), Add("dimm0", kGiB, 32 * kMiB)}).ok());
  AwaitOps("mover", Get("mover").guest_ops());
  CliResult there = RunCli({"migrate", "mover", "--from", agent_->address(), "--to", b->address(),
                            "--mode", "postcopy", "--json"});
  ASSERT_EQ(there.exit_code, 0) << there.out;
  // The source lets go of the VM once the destination has all of it.
  EXPECT_TRUE(Eventually(
      [&] {
        Vm gone;
        return GetVmCode(*stub_, "mover", &gone) == grpc::StatusCode::NOT_FOUND;
      },
      kHangGuard));
  Vm arrived;
  ASSERT_EQ(GetVmCode(*stub_b, "mover", &arrived), grpc::StatusCode::OK);
  EXPECT_EQ(Regions(arrived), "dimm0 1073741824 33554432; ram 0 100663296; ");
  EXPECT_EQ(arrived.memory_changes(), 1u);
  EXPECT_TRUE(VerifyVm(*stub_b, "mover"));

  // On the destination, once it owns every page: another change, then back.
  {
    grpc::ClientContext ctx;
    ferry::v1::ChangeVmMemoryRequest r;
    r.set_name("mover");
    *r.add_changes() = Remove("dimm0");
    ferry::v1::ChangeVmMemoryResponse out;
    grpc::Status s;
    // Demand paging ends once the last page is in: until then it is refused.
    ASSERT_TRUE(Eventually(
        [&] {
          grpc::ClientContext c;
          s = stub_b->ChangeVmMemory(&c, r, &out);
          return s.ok();
        },
        kHangGuard))
        << s.error_message();
    EXPECT_EQ(out.memory_bytes(), 96 * kMiB);
  }
  // Postcopy again: a uniform guest can out-dirty this link, so precopy
  // might never converge on a loaded machine.
  // The first source told that the VM left (VM_DELETED): from that event on
  // its name is free there, with VM processes too (where the released
  // process may still be winding down), and the migration back is admitted
  // at once.
  ASSERT_EQ(EventMessages(*stub_, "mover", ferry::v1::EVENT_KIND_VM_DELETED, 1).size(), 1u)
      << "no VM_DELETED event for mover on the first source";
  const CliResult back = RunCli({"migrate", "mover", "--from", b->address(), "--to",
                                 agent_->address(), "--mode", "postcopy", "--json"});
  ASSERT_EQ(back.exit_code, 0) << back.out;
  const Vm home = Get("mover");
  EXPECT_EQ(Regions(home), "ram 0 100663296; ");
  EXPECT_EQ(home.memory_changes(), 2u);
  AwaitOps("mover", home.guest_ops());
  EXPECT_TRUE(VerifyVm(*stub_, "mover"));
  b.reset();
  if (!state_b.empty()) agent::EndStateDir(state_b, absl::ZeroDuration());
}

INSTANTIATE_TEST_SUITE_P(Layouts, MemoryE2eTest, ::testing::Values("in-process", "vm-process"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return p.param == "in-process" ? "InProcess" : "VmProcess";
                         });

}  // namespace
}  // namespace ferry::e2e
