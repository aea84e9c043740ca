#include "vmm/vm.h"

#include <thread>
#include <tuple>

#include "base/eventually.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/fault_injecting_page_source.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kMemory = 16ull << 20;  // 4096 pages

VmConfig Config(WorkloadKind kind, uint64_t ops, int vcpus = 2) {
  VmConfig c;
  c.memory_bytes = kMemory;
  c.vcpus = vcpus;
  c.workload.kind = kind;
  c.workload.ops_per_vcpu = ops;
  c.workload.seed = 7;
  c.workload.zero_fraction = 0.25;
  c.workload.dirty_bytes_per_sec = 256ull << 20;  // 65536 ops/s
  return c;
}

uint64_t OpsFor(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::kIdle:
      return 30;  // 30 ticks of 1 ms
    case WorkloadKind::kDirtyRate:
      return 3000;
    case WorkloadKind::kSequential:
      return 2 * (kMemory / 4096 / 2) + 100;  // every page of the region, twice and more
    default:
      return 20000;
  }
}

// The image the source would hold: the workload's initial memory.
std::unique_ptr<Vm> SourceImage(const VmConfig& config) {
  auto vm = Vm::Create(config);
  EXPECT_TRUE(vm.ok()) << vm.status();
  EXPECT_TRUE((*vm)->LoadInitialMemory().ok());
  return std::move(vm).value();
}

class VmDemandPagingTest
    : public ::testing::TestWithParam<std::tuple<FaultMode, WorkloadKind>> {};

// Every workload, every page initially missing, in each fault mode: the
// memory after K ops per vCPU is the reference run's, to the digest.
TEST_P(VmDemandPagingTest, DigestEqualsTheReferenceRun) {
  auto [mode, kind] = GetParam();
  VmConfig config = Config(kind, OpsFor(kind));
  auto image = SourceImage(config);
  auto source = std::make_shared<InMemoryPageSource>(&image->memory());
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(config));
  ASSERT_OK(vm->EnableDemandPaging(source, {mode, 1}));
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitUntilHalted(absl::Seconds(60)));

  DemandPagerStats ps = vm->pager()->Stats();
  EXPECT_GT(ps.faults, 0u);
  VmStats stats = vm->Stats();
  EXPECT_EQ(stats.total_ops, config.workload.ops_per_vcpu * config.vcpus);
  if (mode == FaultMode::kExit) {
    uint64_t exits = 0;
    for (const VcpuStats& v : stats.vcpus) exits += v.counters.fault_exits;
    EXPECT_EQ(exits, ps.faults);
  }
  // Fill in what the workload never touched, then compare.
  for (uint64_t p = 0; p < vm->memory().num_pages(); ++p)
    if (!vm->pager()->IsPresent(p))
      ASSERT_OK(vm->pager()->ResolveFault({vm->memory().map().OffsetToGpa(p * 4096), 4096,
                                           kFaultRead, 0}));
  ASSERT_OK(vm->pager()->Finish());
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(config));
  EXPECT_EQ(got.digest, want.digest)
      << DifferingPages(got, want).size() << " pages differ";
}

INSTANTIATE_TEST_SUITE_P(
    AllModesAllWorkloads, VmDemandPagingTest,
    ::testing::Combine(::testing::Values(FaultMode::kExit, FaultMode::kBlocking),
                       ::testing::Values(WorkloadKind::kIdle, WorkloadKind::kSequential,
                                         WorkloadKind::kUniform, WorkloadKind::kZipf,
                                         WorkloadKind::kDirtyRate, WorkloadKind::kHotset)),
    [](const auto& info) {
      std::string name = std::string(FaultModeName(std::get<0>(info.param))) + "_" +
                         WorkloadKindName(std::get<1>(info.param));
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

TEST(Vm, WithoutMigrationTheDigestEqualsTheReference) {
  VmConfig config = Config(WorkloadKind::kUniform, 50000, 3);
  auto vm = SourceImage(config);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitUntilHalted(absl::Seconds(60)));
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(config));
  EXPECT_EQ(got.digest, want.digest);
}

TEST(Vm, AGuestPausedMidRunEqualsItsReplayPerVcpu) {
  VmConfig config = Config(WorkloadKind::kZipf, 0);  // runs until stopped
  config.workload.write_fraction = 1;  // every op changes memory
  auto vm = SourceImage(config);
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(Eventually([&] {
    VmStats st = vm->Stats();
    return st.vcpus[0].counters.ops > 1000 && st.vcpus[1].counters.ops > 1000;
  })) << "the vCPUs made no progress";
  ASSERT_OK(vm->Pause());
  std::vector<uint64_t> ops;
  for (const VcpuStats& v : vm->Stats().vcpus) ops.push_back(v.counters.ops);
  EXPECT_NE(ops[0], ops[1]) << "the vCPUs ran exactly in step: suspicious";
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(config, ops));
  EXPECT_EQ(got.digest, want.digest);
  ops[1] += 1;  // one op more on one vCPU is a different memory
  ASSERT_OK_AND_ASSIGN(MemoryDigest other, ReferenceDigest(config, ops));
  EXPECT_NE(got.digest, other.digest);
}

// Fail(): the VM is failed for good: every vCPU leaves guest code and
// stays out, Health() and WaitUntilHalted() give the reason, Resume()
// refuses.
TEST(Vm, FailStopsEveryVcpuForGood) {
  VmConfig config = Config(WorkloadKind::kUniform, 0);
  auto vm = SourceImage(config);
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(Eventually([&] { return vm->Stats().total_ops > 1000; }));
  vm->Fail(absl::DataLossError("page 7 does not match its checksum"));
  EXPECT_THAT(vm->Health(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("page 7")));
  for (VcpuRunState s : vm->States()) EXPECT_EQ(s, VcpuRunState::kFailed);
  // No vCPU runs on: the count settles.
  uint64_t before = vm->Stats().total_ops;
  ASSERT_TRUE(Eventually([&] {
    absl::SleepFor(absl::Milliseconds(20));
    const uint64_t now = vm->Stats().total_ops;
    const bool settled = now == before;
    before = now;
    return settled;
  })) << "a failed vCPU still runs";
  EXPECT_THAT(vm->Resume(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("failed")));
}

// A VM whose vCPUs had all halted before Fail() is failed too: its Health()
// says so, though no vCPU was running to mark.
TEST(Vm, FailAfterTheGuestHaltedStillFailsTheVm) {
  VmConfig config = Config(WorkloadKind::kUniform, 2000);
  auto vm = SourceImage(config);
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitUntilHalted(absl::Seconds(60)));
  vm->Fail(absl::DataLossError("page 9 could not be read"));
  EXPECT_THAT(vm->Health(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("page 9")));
  EXPECT_THAT(vm->WaitUntilHalted(absl::Seconds(1)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("page 9")));
}

// The ops meter samples every vCPU's count from Start() on: evenly spaced,
// never going backwards, the last sample the VM's final count.
TEST(Vm, TheOpsMeterSamplesEveryVcpuWhileTheVmRuns) {
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(Config(WorkloadKind::kUniform, 0, 2)));
  ASSERT_OK(vm->LoadInitialMemory());
  EXPECT_EQ(vm->ops_meter().first_sample_ns(), 0);
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(Eventually([&] { return vm->ops_meter().Since(0).rows() >= 20; }));
  vm->Stop();
  vmm::OpsTrace t = vm->ops_meter().Since(0);
  ASSERT_EQ(t.vcpus, 2);
  ASSERT_EQ(t.ops.size(), t.rows() * 2);
  EXPECT_EQ(t.t_ns.front(), vm->ops_meter().first_sample_ns());
  for (size_t i = 1; i < t.rows(); ++i) {
    EXPECT_GE(t.t_ns[i], t.t_ns[i - 1]);
    for (int v = 0; v < 2; ++v) EXPECT_GE(t.ops[i * 2 + v], t.ops[(i - 1) * 2 + v]);
  }
  EXPECT_EQ(t.total(t.rows() - 1), vm->Stats().total_ops);
  EXPECT_GT(t.total(t.rows() - 1), 0u);
  // Since() leaves out what came before the time asked for.
  EXPECT_EQ(vm->ops_meter().Since(t.t_ns.back()).rows(), 1u);
}

TEST(Vm, PauseStopsGuestCodeUntilResume) {
  VmConfig config = Config(WorkloadKind::kUniform, 0);  // runs until stopped
  auto vm = SourceImage(config);
  EXPECT_THAT(vm->Pause(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("cannot pause a VM that is created")));
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(Eventually([&] { return vm->Stats().total_ops > 0; }));  // guest code ran
  ASSERT_OK(vm->Pause());
  for (VcpuRunState s : vm->States()) EXPECT_EQ(s, VcpuRunState::kPaused);
  uint64_t ops = vm->Stats().total_ops;
  ASSERT_OK_AND_ASSIGN(MemoryDigest d1, vm->Digest());
  // A span in which running vCPUs would have moved on: nothing may change.
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(vm->Stats().total_ops, ops);
  ASSERT_OK_AND_ASSIGN(MemoryDigest d2, vm->Digest());
  EXPECT_EQ(d1.digest, d2.digest) << "memory changed while paused";
  EXPECT_THAT(vm->Pause(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("is paused")));
  ASSERT_OK(vm->Resume());
  EXPECT_THAT(vm->Resume(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                     HasSubstr("is running")));
  EXPECT_TRUE(Eventually([&] { return vm->Stats().total_ops > ops; }))
      << "no progress after resume";
  EXPECT_THAT(vm->WaitUntilHalted(absl::Seconds(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("never halts")));
  vm->Stop();
  EXPECT_THAT(vm->Start(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("is stopped")));
}

TEST(Vm, VcpuStateMovesBetweenVms) {
  // Run half the ops on one VM, move memory image and vCPU state to another,
  // run the rest: the result is the reference's.
  VmConfig config = Config(WorkloadKind::kZipf, 0);
  auto a = SourceImage(config);
  ASSERT_OK(a->Start());
  ASSERT_TRUE(Eventually([&] { return a->Stats().vcpus[0].counters.ops > 0; }))
      << "vcpu 0 made no progress";
  ASSERT_OK(a->Pause());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> states, a->SaveVcpuStates());
  uint64_t done = a->Stats().vcpus[0].counters.ops;
  ASSERT_GT(done, 0u);

  auto source = std::make_shared<InMemoryPageSource>(&a->memory());
  VmConfig bounded = config;
  bounded.workload.ops_per_vcpu = done + a->Stats().vcpus[1].counters.ops + 1000;
  ASSERT_OK_AND_ASSIGN(auto b, Vm::Create(bounded));
  ASSERT_OK(b->EnableDemandPaging(source, {FaultMode::kExit, 1}));
  ASSERT_OK(b->RestoreVcpuStates(states));
  EXPECT_THAT(b->RestoreVcpuStates({states[0]}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 vCPUs")));
  ASSERT_OK(b->Start());
  ASSERT_OK(b->WaitUntilHalted(absl::Seconds(60)));
  for (uint64_t p = 0; p < b->memory().num_pages(); ++p)
    if (!b->pager()->IsPresent(p))
      ASSERT_OK(b->pager()->ResolveFault({p * 4096, 4096, kFaultRead, 0}));
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, b->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, ReferenceDigest(bounded));
  EXPECT_EQ(got.digest, want.digest);
}

TEST(Vm, FailingSourceFailsTheVcpuWithAClearError) {
  auto failing = std::make_shared<FaultInjectingPageSource>();
  failing->FailAll(absl::UnavailableError("fetch channel closed"));
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(Config(WorkloadKind::kSequential, 100, 1)));
  ASSERT_OK(vm->EnableDemandPaging(failing, {FaultMode::kExit, 1}));
  ASSERT_OK(vm->Start());
  EXPECT_THAT(vm->WaitUntilHalted(absl::Seconds(10)),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("vcpu 0: resolving the fault at gpa 0")));
  EXPECT_EQ(vm->States()[0], VcpuRunState::kFailed);
  EXPECT_THAT(vm->Digest(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                     HasSubstr("pages are missing")));
}

TEST(Vm, ConfigErrorsNameTheField) {
  VmConfig c = Config(WorkloadKind::kUniform, 1);
  c.vcpus = 0;
  EXPECT_THAT(Vm::Create(c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vcpus")));
  c = Config(WorkloadKind::kUniform, 1);
  c.memory_bytes = 12345;
  EXPECT_THAT(Vm::Create(c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("memory size")));
  c = Config(WorkloadKind::kUniform, 1);
  c.memory_bytes = 4096;
  EXPECT_THAT(Vm::Create(c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too small")));
}

}  // namespace
}  // namespace ferry::vmm
