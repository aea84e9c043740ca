// The KVM backend with real KVM: on a machine without /dev/kvm every test
// skips with the reason; ./dev test-kvm runs them inside a nested KVM guest.
// Each checks what docs/kvm.md promises: the guest image runs every
// workload to the software backend's digest, pauses at op boundaries,
// demand-pages through KVM with every page missing, moves its vCPU state,
// pre-faults, and KVM's dirty log catches every written page.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/eventually.h"
#include "base/status_macros.h"
#include "base/status_matchers.h"
#include "ferry/v1/vcpu_state.pb.h"
#include "gtest/gtest.h"
#include "migration/snapshot/snapshot.h"
#include "sys/kvm.h"
#include "vmm/guest/boot.h"
#include "vmm/vm.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

#define SKIP_WITHOUT_KVM()                                                          \
  do {                                                                              \
    absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();                                \
    if (!kvm.ok())                                                                  \
      GTEST_SKIP() << "needs /dev/kvm (" << kvm.status().message()                  \
                   << "); ./dev test-kvm runs this inside a nested KVM guest";      \
  } while (0)

constexpr uint64_t kMemory = 8 << 20;  // 2048 pages: quick under nested KVM
constexpr absl::Duration kTimeout = absl::Seconds(300);

VmConfig Config(WorkloadKind kind, uint64_t ops, int vcpus = 2) {
  VmConfig c;
  c.backend = VmBackend::kKvm;
  c.memory_bytes = kMemory;
  c.vcpus = vcpus;
  c.workload.kind = kind;
  c.workload.ops_per_vcpu = ops;
  c.workload.seed = 7;
  c.workload.zero_fraction = 0.25;
  return c;
}

std::vector<uint64_t> OpsPerVcpu(const Vm& vm) {
  std::vector<uint64_t> ops;
  for (const VcpuStats& v : vm.Stats().vcpus) ops.push_back(v.counters.ops);
  return ops;
}

// Which KVM modules the nested suite loaded (tests/kvm/init): "patched"
// (Ferry's KVM userfault patch) or "stock"; empty elsewhere.
std::string LoadedModules() {
  const char* m = std::getenv("FERRY_KVM_MODULES");
  return m == nullptr ? "" : m;
}

TEST(KvmBackend, CapabilitiesAreProbed) {
  SKIP_WITHOUT_KVM();
  ASSERT_OK_AND_ASSIGN(sys::Kvm kvm, sys::Kvm::Open());
  std::printf("KVM capabilities: %s\n", kvm.caps().ToString().c_str());
  EXPECT_EQ(kvm.caps().api_version, 12);
  EXPECT_TRUE(kvm.caps().manual_dirty_log_protect);
  // The probe must tell the patched modules from the stock ones: the
  // nested suite says which it loaded. Elsewhere (a host's own KVM) no
  // upstream kernel has exit-on-missing memslots.
  if (LoadedModules() == "patched") {
    EXPECT_TRUE(kvm.caps().exit_on_missing) << "Ferry's KVM patch is loaded but not detected";
    EXPECT_TRUE(kvm.caps().memslot_resize) << "Ferry's resize patch is loaded but not detected";
  } else {
    EXPECT_FALSE(kvm.caps().exit_on_missing) << "exit-on-missing memslots on a stock kernel";
    if (LoadedModules() == "stock")
      EXPECT_FALSE(kvm.caps().memslot_resize) << "in-place memslot resize on a stock kernel";
  }
}

class KvmWorkloadTest : public ::testing::TestWithParam<WorkloadKind> {};

TEST_P(KvmWorkloadTest, DigestEqualsTheSoftwareBackends) {
  SKIP_WITHOUT_KVM();
  const WorkloadKind kind = GetParam();
  // Paced kinds run at their rate (idle: 1 op/ms): fewer ops.
  const uint64_t ops = kind == WorkloadKind::kIdle ? 100 : kind == WorkloadKind::kDirtyRate ? 500 : 4000;
  VmConfig config = Config(kind, ops);
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(config));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitUntilHalted(kTimeout));
  EXPECT_EQ(OpsPerVcpu(*vm), std::vector<uint64_t>(2, ops));
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm->Digest());
  VmConfig soft = config;
  soft.backend = VmBackend::kSoft;
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(soft));
  EXPECT_EQ(got.digest, want.digest) << WorkloadKindName(kind);
}

INSTANTIATE_TEST_SUITE_P(AllWorkloads, KvmWorkloadTest,
                         ::testing::Values(WorkloadKind::kIdle, WorkloadKind::kSequential,
                                           WorkloadKind::kUniform, WorkloadKind::kZipf,
                                           WorkloadKind::kDirtyRate, WorkloadKind::kHotset),
                         [](const auto& info) {
                           std::string n = WorkloadKindName(info.param);
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(KvmBackend, PauseStopsAtAnOpBoundary) {
  SKIP_WITHOUT_KVM();
  VmConfig config = Config(WorkloadKind::kUniform, 0);
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(config));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  for (int round = 0; round < 3; ++round) {
    const uint64_t before = vm->Stats().total_ops;
    ASSERT_TRUE(Eventually([&] { return vm->Stats().total_ops > before; }, absl::Seconds(120)));
    ASSERT_OK(vm->Pause());
    const std::vector<uint64_t> ops = OpsPerVcpu(*vm);
    EXPECT_GT(ops[0] + ops[1], 0u);
    ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm->Digest());
    ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(config, ops));
    EXPECT_EQ(got.digest, want.digest) << "round " << round << ": paused mid-op?";
    ASSERT_OK(vm->Resume());
  }
}

// Progress lines for slow (nested) runs.
void Step(const char* what) {
  static const int64_t t0 = MonotonicNowNanos();
  std::printf("  [%8.1f ms] %s\n", (MonotonicNowNanos() - t0) / 1e6, what);
  std::fflush(stdout);
}

TEST(KvmBackend, DemandPagingThroughKvmAndStateMovesBetweenVms) {
  SKIP_WITHOUT_KVM();
  Step("A: create and run");
  VmConfig config = Config(WorkloadKind::kZipf, 0);
  ASSERT_OK_AND_ASSIGN(auto a, Vm::Create(config));
  ASSERT_OK(a->LoadInitialMemory());
  ASSERT_OK(a->Start());
  ASSERT_TRUE(Eventually([&] { return a->Stats().total_ops > 0; }, absl::Seconds(120)));
  ASSERT_OK(a->Pause());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> states, a->SaveVcpuStates());
  const std::vector<uint64_t> ops_a = OpsPerVcpu(*a);

  // B starts with every page missing and pulls each from A's memory when
  // the guest touches it: on a kernel with Ferry's KVM patch the vCPU exits
  // (KVM_EXIT_MEMORY_FAULT) and its thread installs the page; on a stock
  // one userfaultfd serves it inside KVM_RUN (blocking mode).
  Step("A paused and saved; B: create");
  ASSERT_OK_AND_ASSIGN(auto b, Vm::Create(config));
  auto source = std::make_shared<InMemoryPageSource>(&a->memory());
  ASSERT_OK(b->EnableDemandPaging(source, {FaultMode::kExit, 1}));
  ASSERT_OK_AND_ASSIGN(sys::Kvm kvm, sys::Kvm::Open());
  const bool exits = kvm.caps().exit_on_missing;
  EXPECT_EQ(b->fault_mode_choice().mode, exits ? FaultMode::kExit : FaultMode::kBlocking);
  EXPECT_THAT(b->fault_mode_choice().reason,
              HasSubstr(exits ? "memslots exit on missing pages (KVM userfault)"
                              : "exit mode unavailable on this kernel"));
  EXPECT_EQ(b->pager()->missing_pages(), kMemory / 4096);
  ASSERT_OK(b->RestoreVcpuStates(states));
  EXPECT_EQ(OpsPerVcpu(*b), ops_a) << "the status pages moved with the state";
  Step("B: start");
  ASSERT_OK(b->Start());
  // B goes on where A stopped (its first ops fault their pages in).
  const uint64_t ops_at_start = b->Stats().total_ops;
  ASSERT_TRUE(Eventually([&] { return b->Stats().total_ops > ops_at_start; },
                         absl::Seconds(120)));
  Step("B: pause");
  ASSERT_OK(b->Pause());
  Step("B: paused");
  const std::vector<uint64_t> ops_b = OpsPerVcpu(*b);
  EXPECT_GT(ops_b[0] + ops_b[1], ops_a[0] + ops_a[1]) << "B went on where A stopped";
  EXPECT_GT(b->pager()->Stats().faults, 0u);
  uint64_t exits_taken = 0;
  for (const VcpuStats& v : b->Stats().vcpus) exits_taken += v.counters.fault_exits;
  if (exits) {
    EXPECT_GT(exits_taken, 0u) << "exit mode ran no memory-fault exit";
  } else {
    EXPECT_EQ(exits_taken, 0u);
  }
  // The background push, afterwards: present pages keep B's content.
  ASSERT_OK(b->pager()->InstallPages(0, a->memory().host(), kMemory / 4096));
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, b->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(config, ops_b));
  EXPECT_EQ(got.digest, want.digest);
}

// Exit mode on KVM (Ferry's KVM patch): every page of B starts missing; each
// one the guest touches exits KVM_RUN with KVM_EXIT_MEMORY_FAULT, and the
// vCPU's own thread fetches it, installs it (clearing its bit) and
// re-enters. Every fault is an exit on a vCPU thread (none reaches the
// userfaultfd backstop), no page is installed twice, and the workload ends
// with the reference digest. The pushed rest clears its bits, and leaving
// demand paging takes the flag off the memslots.
TEST(KvmBackend, ExitModeResolvesEveryMissingPageOnTheVcpuThread) {
  SKIP_WITHOUT_KVM();
  ASSERT_OK_AND_ASSIGN(sys::Kvm kvm, sys::Kvm::Open());
  if (!kvm.caps().exit_on_missing)
    GTEST_SKIP() << "this kernel's memslots do not exit on missing pages (no KVM userfault "
                    "patch loaded); ./dev test-kvm runs this on Ferry's patched modules";
  VmConfig config = Config(WorkloadKind::kUniform, 3000);
  ASSERT_OK_AND_ASSIGN(auto a, Vm::Create(config));
  ASSERT_OK(a->LoadInitialMemory());  // A: the source's memory, not run
  ASSERT_OK_AND_ASSIGN(auto b, Vm::Create(config));
  auto source = std::make_shared<InMemoryPageSource>(&a->memory());
  ASSERT_OK(b->EnableDemandPaging(source, {FaultMode::kExit, 1}));
  ASSERT_EQ(b->fault_mode_choice().mode, FaultMode::kExit);
  EXPECT_THAT(b->DemandPagingPaths(), HasSubstr("memslot userfault bitmap"));
  ASSERT_OK(b->Start());
  ASSERT_OK(b->WaitUntilHalted(kTimeout));
  uint64_t exits_taken = 0;
  for (const VcpuStats& v : b->Stats().vcpus) exits_taken += v.counters.fault_exits;
  const DemandPagerStats s = b->pager()->Stats();
  std::printf("exit mode: %lu exits, %lu faults, %lu installed, %lu missing\n",
              (unsigned long)exits_taken, (unsigned long)s.faults,
              (unsigned long)s.pages_installed, (unsigned long)s.missing_pages);
  EXPECT_GT(exits_taken, 0u);
  EXPECT_EQ(s.faults, exits_taken) << "a fault reached the userfaultfd backstop";
  EXPECT_EQ(s.already_present, 0u) << "a page was installed twice";
  EXPECT_EQ(s.pages_installed, kMemory / 4096 - s.missing_pages);
  // The push brings the rest; then demand paging ends (flag off).
  for (uint64_t p = 0; p < kMemory / 4096; ++p)
    if (!b->pager()->IsPresent(p))
      ASSERT_OK(b->pager()->InstallPages(p * 4096, a->memory().host() + p * 4096, 1));
  ASSERT_OK(b->FinishDemandPaging());
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, b->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(config));
  EXPECT_EQ(got.digest, want.digest);
}

TEST(KvmBackend, ForeignVcpuStateIsRefused) {
  SKIP_WITHOUT_KVM();
  ASSERT_OK_AND_ASSIGN(auto a, Vm::Create(Config(WorkloadKind::kZipf, 0)));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> states, a->SaveVcpuStates());
  ASSERT_OK_AND_ASSIGN(auto other, Vm::Create(Config(WorkloadKind::kUniform, 0)));
  EXPECT_THAT(other->RestoreVcpuStates(states),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another workload")));
  std::swap(states[0], states[1]);
  ASSERT_OK_AND_ASSIGN(auto same, Vm::Create(Config(WorkloadKind::kZipf, 0)));
  EXPECT_THAT(same->RestoreVcpuStates(states),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("belongs to vcpu 1")));
  EXPECT_THAT(same->RestoreVcpuStates({"garbage", "garbage"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Sizes from the peer are checked before the kernel reads them.
  std::swap(states[0], states[1]);
  ferry::v1::KvmVcpuState st;
  ASSERT_TRUE(st.ParseFromString(states[0]));
  st.mutable_xsave()->resize(st.xsave().size() / 2);
  std::vector<std::string> short_xsave = {st.SerializeAsString(), states[1]};
  EXPECT_THAT(same->RestoreVcpuStates(short_xsave),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("XSAVE state of")));
  ASSERT_TRUE(st.ParseFromString(states[0]));
  ASSERT_GT(st.msrs_size(), 0);
  st.mutable_msrs(0)->set_index(0xc0000080);  // EFER: not one this VMM moves as an MSR
  std::vector<std::string> odd_msr = {st.SerializeAsString(), states[1]};
  EXPECT_THAT(same->RestoreVcpuStates(odd_msr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not one this VMM moves")));
  for (int i = 0; i < 20; ++i) st.add_msrs()->set_index(0x10);
  std::vector<std::string> many_msrs = {st.SerializeAsString(), states[1]};
  EXPECT_THAT(same->RestoreVcpuStates(many_msrs),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("saves at most")));
  ASSERT_TRUE(st.ParseFromString(states[0]));
  st.mutable_area()->append("x");
  std::vector<std::string> big_area = {st.SerializeAsString(), states[1]};
  EXPECT_THAT(same->RestoreVcpuStates(big_area),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("firmware area")));
}

// KVM's global count of stage-2 faults it fixed (debugfs).
absl::StatusOr<uint64_t> StageTwoFaults() {
  std::ifstream f("/sys/kernel/debug/kvm/pf_fixed");
  uint64_t n;
  if (!(f >> n)) return absl::UnavailableError("/sys/kernel/debug/kvm/pf_fixed is not readable");
  return n;
}

// Runs a sequential workload that touches every page once and returns the
// stage-2 faults it took.
absl::StatusOr<uint64_t> FaultsOfOnePass(bool pre_fault) {
  VmConfig config = Config(WorkloadKind::kSequential, kMemory / 4096 / 2);
  config.workload.zero_fraction = 0;
  ASSIGN_OR_RETURN(auto vm, Vm::Create(config));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  if (pre_fault) {
    RETURN_IF_ERROR(vm->PreFault(0, kMemory));
    RETURN_IF_ERROR(vm->PreFault(guest::kFirmwareGpa, guest::FirmwareBytes(2)));
    if (vm->PreFaultedPages() != (kMemory + guest::FirmwareBytes(2)) / 4096)
      return absl::InternalError("pre-fault did not count every page");
  }
  ASSIGN_OR_RETURN(uint64_t before, StageTwoFaults());
  RETURN_IF_ERROR(vm->Start());
  RETURN_IF_ERROR(vm->WaitUntilHalted(kTimeout));
  ASSIGN_OR_RETURN(uint64_t after, StageTwoFaults());
  return after - before;
}

TEST(KvmBackend, PreFaultLeavesNoStageTwoFaults) {
  SKIP_WITHOUT_KVM();
  if (!sys::Kvm::Open()->caps().pre_fault_memory)
    GTEST_SKIP() << "this KVM lacks KVM_CAP_PRE_FAULT_MEMORY (236): it needs two-dimensional "
                    "paging; ./dev test-kvm runs this under nested SVM with NPT";
  if (absl::Status s = StageTwoFaults().status(); !s.ok())
    GTEST_SKIP() << s.message() << " (mount debugfs to count stage-2 faults)";
  ASSERT_OK_AND_ASSIGN(uint64_t without, FaultsOfOnePass(false));
  ASSERT_OK_AND_ASSIGN(uint64_t with, FaultsOfOnePass(true));
  std::printf("stage-2 faults touching every page once: %llu without pre-fault, %llu with\n",
              static_cast<unsigned long long>(without), static_cast<unsigned long long>(with));
  EXPECT_GE(without, kMemory / 4096 / 2) << "the control run should fault on its pages";
  EXPECT_EQ(with, 0u);
}

class KvmDirtyLogTest : public ::testing::TestWithParam<bool> {};

TEST_P(KvmDirtyLogTest, CatchesEveryWrittenPage) {
  SKIP_WITHOUT_KVM();
  const bool ring = GetParam();
  VmConfig config = Config(WorkloadKind::kUniform, 3000);
  config.workload.write_fraction = 0.5;
  config.kvm_dirty_ring = ring;
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(config));
  ASSERT_OK(vm->LoadInitialMemory());
  std::vector<uint8_t> initial(vm->memory().host(), vm->memory().host() + kMemory);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DirtyLog> log, vm->StartDirtyLog());
  EXPECT_THAT(log->Name(), HasSubstr(ring ? "dirty rings" : "dirty bitmap"));
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitUntilHalted(kTimeout));
  std::vector<uint64_t> dirty;
  ASSERT_OK(log->Collect(&dirty));
  const std::set<uint64_t> seen(dirty.begin(), dirty.end());
  uint64_t written = 0;
  for (uint64_t p = 0; p < kMemory / 4096; ++p) {
    if (std::memcmp(initial.data() + p * 4096, vm->memory().host() + p * 4096, 4096) == 0)
      continue;
    ++written;
    EXPECT_TRUE(seen.count(p)) << "page " << p << " was written but not logged";
  }
  EXPECT_GT(written, 100u);
  std::printf("dirty log (%s): %zu pages reported, %llu written (KVM may also report read "
              "pages)\n",
              ring ? "rings" : "bitmap", seen.size(), static_cast<unsigned long long>(written));
  ASSERT_OK(log->Collect(&dirty));
  EXPECT_TRUE(dirty.empty()) << "the guest halted: nothing written since";
}

// More pages than a ring holds (4096 entries): ring-full exits are
// harvested on the vCPU thread and nothing is lost.
TEST(KvmBackend, DirtyRingFullExitsLoseNoPage) {
  SKIP_WITHOUT_KVM();
  VmConfig config = Config(WorkloadKind::kSequential, 0, 1);
  config.memory_bytes = 64 << 20;  // 16384 pages, one vCPU writing each
  config.workload.ops_per_vcpu = 16384;
  config.workload.zero_fraction = 0;
  config.kvm_dirty_ring = true;
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(config));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DirtyLog> log, vm->StartDirtyLog());
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitUntilHalted(kTimeout));
  std::vector<uint64_t> dirty;
  ASSERT_OK(log->Collect(&dirty));
  EXPECT_EQ(dirty.size(), 16384u) << "every page was written once";
}

INSTANTIATE_TEST_SUITE_P(BitmapAndRing, KvmDirtyLogTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ring" : "bitmap"; });

// Snapshots of a KVM VM (migration/snapshot/): the paused guest written to
// a directory, then restored eagerly and lazily (exit mode where Ferry's
// KVM patch is loaded, else blocking mode), each going on with the same op
// stream to the digest of a VM that was never snapshotted.
TEST(KvmBackend, SnapshotRestoresEagerAndLazyByDigest) {
  SKIP_WITHOUT_KVM();
  ASSERT_OK_AND_ASSIGN(sys::Kvm kvm, sys::Kvm::Open());
  const FaultMode lazy_mode = kvm.caps().exit_on_missing ? FaultMode::kExit : FaultMode::kBlocking;
  VmConfig config = Config(WorkloadKind::kUniform, 0);
  ASSERT_OK_AND_ASSIGN(auto a, Vm::Create(config));
  ASSERT_OK(a->LoadInitialMemory());
  ASSERT_OK(a->Start());
  ASSERT_TRUE(Eventually([&] { return a->Stats().total_ops > 2000; }, kTimeout));
  ASSERT_OK(a->Pause());
  const std::vector<uint64_t> at_snapshot = OpsPerVcpu(*a);
  char tmpl[] = "/tmp/kvm-snapXXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = std::string(tmpl) + "/snap";
  ASSERT_OK(snapshot::WriteSnapshot(*a, "a", dir).status());
  a->Stop();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const snapshot::Snapshot> snap,
                       snapshot::Snapshot::Open(dir));
  auto run_on_and_check = [&](Vm& vm) {
    ASSERT_TRUE(Eventually(
        [&] {
          std::vector<uint64_t> now = OpsPerVcpu(vm);
          return now[0] > at_snapshot[0] + 1000 && now[1] > at_snapshot[1] + 1000;
        },
        kTimeout));
    ASSERT_OK(vm.Pause());
    ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm.Digest());
    ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(config, OpsPerVcpu(vm)));
    EXPECT_EQ(got.digest, want.digest);
  };
  {
    ASSERT_OK_AND_ASSIGN(auto eager, snapshot::RestoreEager(*snap));
    ASSERT_OK(eager->Start());
    run_on_and_check(*eager);
  }
  std::unique_ptr<Vm> lazy;
  ASSERT_OK_AND_ASSIGN(auto restore, snapshot::LazyRestore::Start(snap, lazy_mode, &lazy));
  EXPECT_EQ(lazy->fault_mode_choice().mode, lazy_mode);
  ASSERT_OK(restore->Wait());
  const snapshot::LazyRestoreStats st = restore->Stats();
  std::printf("lazy restore (%s faults): %lu faults, %lu pages by the reader, %lu pre-faulted\n",
              FaultModeName(lazy_mode), (unsigned long)st.pager.faults,
              (unsigned long)st.pages_background, (unsigned long)lazy->PreFaultedPages());
  run_on_and_check(*lazy);
  restore.reset();  // before the VM
  unlink((dir + "/snapshot.ferry").c_str());
  unlink((dir + "/memory").c_str());
  rmdir(dir.c_str());
  rmdir(tmpl);
}

// Memory map transactions on KVM while the guest runs: grow, a region
// added below another (which moves it in RAM offset space: its slot is
// recreated), shrink, remove; the guest uses the new memory (its op stream
// spans the map) and the digest is the replay's.
TEST(KvmBackend, MemoryMapChangesWhileTheGuestRunsMatchTheReplay) {
  SKIP_WITHOUT_KVM();
  VmConfig config = Config(WorkloadKind::kUniform, 0);
  config.max_memory_bytes = 32 << 20;
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(config));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  const std::vector<std::vector<MemoryChange>> steps = {
      {MemoryChange::Add("top", 1ull << 30, 4 << 20)},
      {MemoryChange::Resize("ram", 12 << 20)},  // moves "top" up in RAM offset space
      {MemoryChange::Add("mid", 512 << 20, 2 << 20)},
      {MemoryChange::Resize("ram", 6 << 20), MemoryChange::Remove("top")},
      {MemoryChange::Resize("mid", 8 << 20)},
  };
  for (const auto& step : steps) {
    const uint64_t before = vm->Stats().total_ops;
    ASSERT_TRUE(Eventually([&] { return vm->Stats().total_ops > before + 2000; }, kTimeout));
    ASSERT_OK_AND_ASSIGN(MemoryChangeResult r, vm->ChangeMemory(MemoryTransaction{step}));
    std::printf(
        "%-40s held off %.2f ms (apply %.2f ms): slots kept %d resized %d recreated %d "
        "created %d deleted %d, %llu KiB of stage-2 dropped\n",
        ChangeString(step[0]).c_str(), r.held_off_ns / 1e6, r.apply_ns / 1e6, r.slots_kept,
        r.slots_resized, r.slots_recreated, r.slots_created, r.slots_deleted,
        static_cast<unsigned long long>(r.stage2_bytes_dropped >> 10));
    ASSERT_OK(vm->Health());
  }
  const uint64_t before = vm->Stats().total_ops;
  ASSERT_TRUE(Eventually([&] { return vm->Stats().total_ops > before + 2000; }, kTimeout));
  ASSERT_OK(vm->Pause());
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want,
                       ReferenceDigest(config, OpsPerVcpu(*vm), vm->MemoryHistory()));
  EXPECT_EQ(got.digest, want.digest) << DifferingPages(got, want).size() << " pages differ";
  // KVM's alignment: a 2 MiB multiple, refused whole otherwise.
  EXPECT_THAT(vm->ChangeMemory({{MemoryChange::Resize("ram", (6 << 20) + 4096)}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 MiB")));
}

// What growing, then shrinking, region "top" (whose slot stays at its gpa
// and host address) did to the VM's stage-2 mappings, with the slot
// resized in place or deleted and created. The shrink runs on the paused
// VM, so the mappings counted before and after it differ by what the
// change dropped alone.
struct ResizeRun {
  MemoryChangeResult grow, shrink;
  uint64_t mapped_before_shrink = 0;  // 4 KiB pages (KVM's stats)
  uint64_t mapped_after_shrink = 0;
  uint64_t faults_after_shrink = 0;  // KVM's pf_fixed, until every vCPU ran 2 ops per page
};

absl::StatusOr<ResizeRun> GrowAndShrinkTop(bool in_place) {
  VmConfig config = Config(WorkloadKind::kUniform, 0);
  config.max_memory_bytes = 32 << 20;
  config.kvm_resize_in_place = in_place;
  ASSIGN_OR_RETURN(auto vm, Vm::Create(config));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  RETURN_IF_ERROR(vm->Start());
  // Every vCPU runs `per_page` ops per page of its share of memory, so a
  // uniform guest touches nearly all of its pages whatever the scheduling.
  auto run_ops = [&](uint64_t per_page) -> absl::Status {
    const std::vector<uint64_t> before = OpsPerVcpu(*vm);
    const uint64_t want = per_page * vm->memory().num_pages() / before.size();
    auto done = [&] {
      const std::vector<uint64_t> now = OpsPerVcpu(*vm);
      for (size_t v = 0; v < now.size(); ++v)
        if (now[v] < before[v] + want) return false;
      return true;
    };
    if (!Eventually(done, kTimeout)) return absl::DeadlineExceededError("a vCPU stopped running");
    return vm->Health();
  };
  RETURN_IF_ERROR(vm->ChangeMemory({{MemoryChange::Add("top", 1ull << 30, 4 << 20)}}).status());
  RETURN_IF_ERROR(run_ops(4));  // every page mapped, nearly
  ResizeRun r;
  ASSIGN_OR_RETURN(r.grow, vm->ChangeMemory({{MemoryChange::Resize("top", 8 << 20)}}));
  RETURN_IF_ERROR(run_ops(4));
  RETURN_IF_ERROR(vm->Pause());
  ASSIGN_OR_RETURN(r.mapped_before_shrink, vm->StageTwoMappedPages());
  ASSIGN_OR_RETURN(uint64_t faults0, StageTwoFaults());
  ASSIGN_OR_RETURN(r.shrink, vm->ChangeMemory({{MemoryChange::Resize("top", 4 << 20)}}));
  ASSIGN_OR_RETURN(r.mapped_after_shrink, vm->StageTwoMappedPages());
  RETURN_IF_ERROR(vm->Resume());
  RETURN_IF_ERROR(run_ops(2));
  ASSIGN_OR_RETURN(uint64_t faults1, StageTwoFaults());
  r.faults_after_shrink = faults1 >= faults0 ? faults1 - faults0 : 0;  // other VMs' may go
  RETURN_IF_ERROR(vm->Pause());
  ASSIGN_OR_RETURN(MemoryDigest got, vm->Digest());
  ASSIGN_OR_RETURN(MemoryDigest want,
                   ReferenceDigest(config, OpsPerVcpu(*vm), vm->MemoryHistory()));
  if (got.digest != want.digest)
    return absl::DataLossError(
        absl::StrCat(DifferingPages(got, want).size(), " pages differ from the replay"));
  return r;
}

// Ferry's in-place memslot resize (kernel/kvm-userfault/0002-*): a slot that
// only changes size keeps the stage-2 mappings of the pages that stay, and
// a shrink drops only its tail's; the same change with in-place resize off
// deletes and creates the slot, dropping the mappings of all of it. Counted
// from KVM's stats on the paused VM; both runs end on the replay's digest.
TEST(KvmBackend, ResizeInPlaceKeepsTheStageTwoMappingsOfThePagesThatStay) {
  SKIP_WITHOUT_KVM();
  if (!sys::Kvm::Open()->caps().memslot_resize)
    GTEST_SKIP() << "this kernel cannot resize a memslot in place (no Ferry KVM patch); "
                    "./dev test-kvm runs this on Ferry's patched modules";
  if (absl::Status s = StageTwoFaults().status(); !s.ok())
    GTEST_SKIP() << s.message() << " (mount debugfs to count stage-2 faults)";
  ASSERT_OK_AND_ASSIGN(ResizeRun in_place, GrowAndShrinkTop(true));
  ASSERT_OK_AND_ASSIGN(ResizeRun recreate, GrowAndShrinkTop(false));
  const auto dropped = [](const ResizeRun& r) {
    return static_cast<int64_t>(r.mapped_before_shrink) -
           static_cast<int64_t>(r.mapped_after_shrink);
  };
  std::printf(
      "top 4 -> 8 -> 4 MiB: in place: resized %d+%d, stage-2 dropped %llu+%llu KiB, the shrink "
      "unmapped %lld of %llu mapped pages, %llu faults after it; delete+create: recreated %d+%d, "
      "dropped %llu+%llu KiB, unmapped %lld of %llu, %llu faults\n",
      in_place.grow.slots_resized, in_place.shrink.slots_resized,
      static_cast<unsigned long long>(in_place.grow.stage2_bytes_dropped >> 10),
      static_cast<unsigned long long>(in_place.shrink.stage2_bytes_dropped >> 10),
      static_cast<long long>(dropped(in_place)),
      static_cast<unsigned long long>(in_place.mapped_before_shrink),
      static_cast<unsigned long long>(in_place.faults_after_shrink), recreate.grow.slots_recreated,
      recreate.shrink.slots_recreated,
      static_cast<unsigned long long>(recreate.grow.stage2_bytes_dropped >> 10),
      static_cast<unsigned long long>(recreate.shrink.stage2_bytes_dropped >> 10),
      static_cast<long long>(dropped(recreate)),
      static_cast<unsigned long long>(recreate.mapped_before_shrink),
      static_cast<unsigned long long>(recreate.faults_after_shrink));
  EXPECT_EQ(in_place.grow.slots_resized, 1);
  EXPECT_EQ(in_place.grow.slots_recreated, 0);
  EXPECT_EQ(in_place.grow.stage2_bytes_dropped, 0u);
  EXPECT_EQ(in_place.shrink.slots_resized, 1);
  EXPECT_EQ(in_place.shrink.slots_recreated, 0);
  EXPECT_EQ(in_place.shrink.stage2_bytes_dropped, 4u << 20);  // the tail only
  EXPECT_EQ(recreate.grow.slots_resized, 0);
  EXPECT_EQ(recreate.grow.slots_recreated, 1);
  EXPECT_EQ(recreate.shrink.slots_recreated, 1);
  EXPECT_EQ(recreate.shrink.stage2_bytes_dropped, 8u << 20);
  // The tail is 1,024 pages: an in-place shrink unmaps no more. Delete and
  // create unmap the rest of "top" too, most of its 1,024 pages (each vCPU
  // ran 4 ops per page of its share, so nearly every page was mapped).
  EXPECT_GE(dropped(in_place), 0);
  EXPECT_LE(dropped(in_place), 1024);
  EXPECT_GT(dropped(recreate), 1024 + 512);
}

// 1,000 transactions against running vCPUs: no guest failure, no hang, and
// the replay still matches.
TEST(KvmBackend, AThousandMemoryTransactionsAgainstRunningVcpus) {
  SKIP_WITHOUT_KVM();
  VmConfig config = Config(WorkloadKind::kUniform, 0);
  config.max_memory_bytes = 32 << 20;
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(config));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  int64_t held_total = 0, held_max = 0;
  for (int i = 0; i < 1000; ++i) {
    MemoryTransaction t;
    switch (i % 4) {
      case 0:
        t.changes = {MemoryChange::Add("x", 256 << 20, 2 << 20)};
        break;
      case 1:
        t.changes = {MemoryChange::Resize("ram", 10 << 20)};
        break;
      case 2:
        t.changes = {MemoryChange::Remove("x")};
        break;
      default:
        t.changes = {MemoryChange::Resize("ram", 8 << 20)};
        break;
    }
    absl::StatusOr<MemoryChangeResult> changed = vm->ChangeMemory(t);
    ASSERT_OK(changed.status()) << "transaction " << i;
    const MemoryChangeResult& r = *changed;
    held_total += r.held_off_ns;
    held_max = std::max(held_max, r.held_off_ns);
    if (i % 100 == 0) {
      const uint64_t before = vm->Stats().total_ops;
      ASSERT_TRUE(Eventually([&] { return vm->Stats().total_ops > before; }, kTimeout));
    }
  }
  ASSERT_OK(vm->Health());
  std::printf("1000 transactions: vCPUs held off %.3f ms on average, %.3f ms at most\n",
              held_total / 1000 / 1e6, held_max / 1e6);
  ASSERT_OK(vm->Pause());
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want,
                       ReferenceDigest(config, OpsPerVcpu(*vm), vm->MemoryHistory()));
  EXPECT_EQ(got.digest, want.digest);
}

}  // namespace
}  // namespace ferry::vmm
