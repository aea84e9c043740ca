#include "vmm/soft_vcpu.h"

#include <cstring>
#include <thread>

#include "base/eventually.h"
#include "base/fake_clock.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "sys/userfaultfd.h"
#include "vmm/fault_trap.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;

std::unique_ptr<GuestMemory> Memory(uint64_t pages) {
  return std::move(GuestMemory::Create(*MemoryMap::ForSize(pages * kPage, kPage))).value();
}

absl::StatusOr<sys::Userfaultfd> RegisterSigbus(GuestMemory& mem) {
  auto uffd = sys::Userfaultfd::Open(UFFD_FEATURE_SIGBUS | UFFD_FEATURE_MISSING_SHMEM);
  if (!uffd.ok()) return uffd.status();
  auto r = uffd->Register(mem.host(), mem.size(), UFFDIO_REGISTER_MODE_MISSING);
  if (!r.ok()) return r.status();
  if (auto s = InstallFaultTrapHandler(); !s.ok()) return s;
  return uffd;
}

TEST(SoftVcpu, RunsTheWorkloadToHalt) {
  auto mem = Memory(64);
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kUniform;
  spec.ops_per_vcpu = 1000;
  FillInitialPages(spec, mem->host(), kPage, 0, 64);
  SoftVcpu vcpu(0, 2, mem.get(), spec, &RealClock(), {});
  ASSERT_OK_AND_ASSIGN(VcpuExit exit, vcpu.Run());
  EXPECT_EQ(exit.reason, VcpuExitReason::kHalted);
  EXPECT_EQ(vcpu.Counters().ops, 1000u);
  ASSERT_OK_AND_ASSIGN(exit, vcpu.Run());  // halted stays halted
  EXPECT_EQ(exit.reason, VcpuExitReason::kHalted);
}

TEST(SoftVcpu, ExitRequestPausesAndClears) {
  auto mem = Memory(16);
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kSequential;  // unbounded
  SoftVcpu vcpu(0, 1, mem.get(), spec, &RealClock(), {});
  vcpu.RequestExit();
  ASSERT_OK_AND_ASSIGN(VcpuExit exit, vcpu.Run());
  EXPECT_EQ(exit.reason, VcpuExitReason::kPaused);
  EXPECT_EQ(vcpu.Counters().ops, 0u);
  vcpu.ClearExitRequest();
  std::thread stopper([&] {
    // Once the vCPU has run ops (however late a loaded machine starts it).
    EXPECT_TRUE(Eventually([&] { return vcpu.Counters().ops > 0; }));
    vcpu.RequestExit();
  });
  ASSERT_OK_AND_ASSIGN(exit, vcpu.Run());
  stopper.join();
  EXPECT_EQ(exit.reason, VcpuExitReason::kPaused);
  EXPECT_GT(vcpu.Counters().ops, 0u);
}

TEST(SoftVcpu, MissingPageIsAMemoryFaultExitAndTheWriteHappensOnce) {
  auto mem = Memory(4);
  ASSERT_OK_AND_ASSIGN(sys::Userfaultfd uffd, RegisterSigbus(*mem));
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kSequential;  // op 0: read-modify-write of word 0 of page 0
  spec.ops_per_vcpu = 1;
  SoftVcpu vcpu(0, 1, mem.get(), spec, &RealClock(), {});

  ASSERT_OK_AND_ASSIGN(VcpuExit exit, vcpu.Run());
  ASSERT_EQ(exit.reason, VcpuExitReason::kMemoryFault);
  EXPECT_EQ(exit.fault.gpa, 0u);
  EXPECT_EQ(exit.fault.size, kPage);
  EXPECT_EQ(exit.fault.flags, kFaultRead);  // the op's load faults first
  EXPECT_GT(exit.fault.time_ns, 0);
  EXPECT_EQ(vcpu.Counters().ops, 0u);  // the faulted op did not complete

  alignas(64) uint8_t page[kPage] = {};
  const uint64_t initial = 123;
  std::memcpy(page, &initial, 8);
  ASSERT_OK(uffd.Copy(mem->host(), page, kPage).status());
  ASSERT_OK_AND_ASSIGN(exit, vcpu.Run());
  EXPECT_EQ(exit.reason, VcpuExitReason::kHalted);
  VcpuCounters c = vcpu.Counters();
  EXPECT_EQ(c.ops, 1u);
  EXPECT_EQ(c.fault_exits, 1u);
  uint64_t word;
  std::memcpy(&word, mem->host(), 8);
  // Exactly one application of op 0 to the installed value: replay it on a
  // private copy of the page, once and twice.
  alignas(64) uint8_t copy[4 * kPage] = {};
  std::memcpy(copy, page, kPage);
  GuestProgram program(spec, copy, 4, kPage, 0, 1);
  uint64_t once_acc = program.Step(0, 0);
  uint64_t once;
  std::memcpy(&once, copy, 8);
  EXPECT_EQ(word, once);
  program.Step(0, once_acc);
  uint64_t twice;
  std::memcpy(&twice, copy, 8);
  EXPECT_NE(word, twice);
}

TEST(SoftVcpu, StoreToMissingPageIsAWriteFault) {
  auto mem = Memory(8);
  ASSERT_OK_AND_ASSIGN(sys::Userfaultfd uffd, RegisterSigbus(*mem));
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kDirtyRate;  // plain stores
  spec.dirty_bytes_per_sec = 1ull << 40;
  spec.ops_per_vcpu = 1;
  SoftVcpu vcpu(0, 1, mem.get(), spec, &RealClock(), {});
  ASSERT_OK_AND_ASSIGN(VcpuExit exit, vcpu.Run());
  ASSERT_EQ(exit.reason, VcpuExitReason::kMemoryFault);
  EXPECT_EQ(exit.fault.flags, kFaultWrite);
  EXPECT_LT(exit.fault.gpa, 8u * kPage);
}

TEST(SoftVcpu, StateRoundTripsAndBadStateIsRejected) {
  auto mem = Memory(16);
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kUniform;
  spec.ops_per_vcpu = 500;
  FillInitialPages(spec, mem->host(), kPage, 0, 16);
  SoftVcpu a(0, 1, mem.get(), spec, &RealClock(), {});
  ASSERT_OK(a.Run().status());
  ASSERT_OK_AND_ASSIGN(std::string saved, a.SaveState());

  SoftVcpu b(0, 1, mem.get(), spec, &RealClock(), {});
  ASSERT_OK(b.RestoreState(saved));
  EXPECT_THAT(b.SaveState(), ::ferry::testing::IsOkAndHolds(saved));
  EXPECT_EQ(b.Counters().ops, 500u);

  EXPECT_THAT(b.RestoreState(saved.substr(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bytes")));
  std::string bad = saved;
  bad[0] = 'X';
  EXPECT_THAT(b.RestoreState(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  SoftVcpu other_index(1, 2, mem.get(), spec, &RealClock(), {});
  EXPECT_THAT(other_index.RestoreState(saved),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("belongs to vcpu 0")));
  WorkloadSpec other = spec;
  other.seed = 99;
  SoftVcpu other_seed(0, 1, mem.get(), other, &RealClock(), {});
  EXPECT_THAT(other_seed.RestoreState(saved),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another workload")));
}

TEST(SoftVcpu, PacedWorkloadFollowsTheClock) {
  auto mem = Memory(16);
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kDirtyRate;
  spec.dirty_bytes_per_sec = 4096 * 1000;  // 1000 ops/s
  spec.ops_per_vcpu = 100;
  FakeClock clock;
  SoftVcpu vcpu(0, 1, mem.get(), spec, &clock, {});
  ASSERT_OK_AND_ASSIGN(VcpuExit exit, vcpu.Run());
  EXPECT_EQ(exit.reason, VcpuExitReason::kHalted);
  // 100 ops at 1 ms each: the first runs at once, the rest wait their slot.
  EXPECT_EQ(clock.NowNanos(), 99 * 1'000'000);
}

// The VM's throttle slows a paced guest down: at 50% it sleeps 5 ms of
// every 10 and its pace does not catch up after a sleep. Time is the fake
// clock's, so this holds at any machine speed.
TEST(SoftVcpu, ThrottleSleepsItsShareAndThePaceDoesNotCatchUp) {
  auto mem = Memory(16);
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kDirtyRate;
  spec.dirty_bytes_per_sec = 4096 * 1000;  // 1000 ops/s
  spec.ops_per_vcpu = 1000;                // 1 s unthrottled
  FakeClock clock;
  Throttle throttle;
  throttle.Set(50);
  SoftVcpu vcpu(0, 1, mem.get(), spec, &clock, {}, &throttle);
  ASSERT_OK_AND_ASSIGN(VcpuExit exit, vcpu.Run());
  EXPECT_EQ(exit.reason, VcpuExitReason::kHalted);
  EXPECT_EQ(vcpu.ops_done(), 1000u);
  const int64_t elapsed = clock.NowNanos();
  const int64_t slept = vcpu.Counters().throttled_ns;
  // Each 10 ms period runs 5 ms plus the op that overruns it (6 ops at
  // 1 ms), then sleeps 5 ms: about 1.67 s for 1000 ops.
  EXPECT_GE(elapsed, 1'600'000'000);
  EXPECT_LE(elapsed, 2'000'000'000);
  EXPECT_NEAR(static_cast<double>(slept) / elapsed, 0.5, 0.05);
  // Off again: the pace is the guest's own.
  throttle.Set(0);
  spec.ops_per_vcpu = 100;
  FakeClock clock2;
  SoftVcpu free_vcpu(0, 1, mem.get(), spec, &clock2, {}, &throttle);
  ASSERT_OK_AND_ASSIGN(exit, free_vcpu.Run());
  EXPECT_EQ(clock2.NowNanos(), 99 * 1'000'000);
  EXPECT_EQ(free_vcpu.Counters().throttled_ns, 0);
}

}  // namespace
}  // namespace ferry::vmm
