// End to end in one process, on loopback: a source session and a destination
// session with real gRPC and a real fetch channel. Every mode with every
// workload: the destination's memory after the workload's K operations is
// the reference run's, to the digest.
#include <algorithm>
#include <thread>
#include <tuple>

#include "base/eventually.h"
#include "base/status_macros.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/loopback.h"
#include "vmm/dirty_log.h"

namespace ferry::migration {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

// A downtime target that holds the 32 MiB of these VMs at 0.5 MB/s.
constexpr int64_t kPrecopyFitsAnywhere = 60'000;

vmm::VmConfig Config(vmm::WorkloadKind kind) {
  vmm::VmConfig c;
  c.memory_bytes = 32ull << 20;
  c.vcpus = 2;
  c.workload.kind = kind;
  c.workload.seed = 11;
  c.workload.zero_fraction = 0.3;
  c.workload.write_fraction = 0.5;
  c.workload.dirty_bytes_per_sec = 64ull << 20;
  switch (kind) {
    case vmm::WorkloadKind::kIdle:
      c.workload.ops_per_vcpu = 300;  // 0.3 s of ticks
      break;
    case vmm::WorkloadKind::kDirtyRate:
      c.workload.ops_per_vcpu = 8000;  // about 0.5 s at 16k pages/s
      break;
    default:
      c.workload.ops_per_vcpu = 3'000'000;
  }
  return c;
}

std::unique_ptr<vmm::Vm> RunningSource(const vmm::VmConfig& config) {
  auto vm = vmm::Vm::Create(config);
  EXPECT_TRUE(vm.ok()) << vm.status();
  EXPECT_OK((*vm)->LoadInitialMemory());
  EXPECT_OK((*vm)->Start());
  return std::move(vm).value();
}

// Waits for the migrated VM's workload to halt and compares with the replay.
void ExpectReferenceDigest(vmm::Vm& vm, const vmm::VmConfig& config) {
  ASSERT_OK(vm.WaitUntilHalted(absl::Seconds(120)));
  ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest got, vm.Digest());
  ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest want, vmm::ReferenceDigest(config));
  EXPECT_EQ(got.digest, want.digest) << vmm::DifferingPages(got, want).size()
                                     << " pages differ from the reference run";
}

class MigrationE2eTest
    : public ::testing::TestWithParam<std::tuple<MigrationMode, vmm::WorkloadKind>> {};

TEST_P(MigrationE2eTest, DestinationMemoryEqualsTheReferenceRun) {
  auto [mode, kind] = GetParam();
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  vmm::VmConfig config = Config(kind);
  auto source = RunningSource(config);
  // The guest is busy: it has run ops before the migration starts.
  ASSERT_TRUE(Eventually([&] { return source->Stats().total_ops > 0; }));
  MigrationOptions options;
  options.mode = mode;
  // Pure precopy must fit its whole final dirty set into the pause, and a
  // free-running guest rewrites memory faster than a loaded machine's link
  // carries (31 MB/s against 30 MB/s was seen): whether a 500 ms pause
  // fits would depend on the machine's speed. kPrecopyFitsAnywhere holds
  // all of the VM's memory at any plausible speed, so the test's outcome
  // does not (the test below shows what happens when no pause can fit).
  options.downtime_target_ms = mode == MigrationMode::kPrecopy ? kPrecopyFitsAnywhere : 5;
  options.max_rounds = 8;
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  ASSERT_OK(session.Run()) << session.report().outcome();
  const MigrationReport& r = session.report();
  EXPECT_EQ(r.outcome(), "completed");
  EXPECT_GT(r.downtime_ms(), 0);
  if (mode == MigrationMode::kPostcopy) EXPECT_EQ(r.precopy_rounds(), 0u);
  if (mode != MigrationMode::kPostcopy) EXPECT_GE(r.precopy_rounds(), 1u);
  // The source's phases, from its state changes: contiguous, in order,
  // precopy only when the mode has one, always through switchover.
  std::vector<ferry::v1::MigrationPhase> phases;
  for (int i = 0; i < r.phase_timings_size(); ++i) {
    const ferry::v1::PhaseTiming& t = r.phase_timings(i);
    phases.push_back(t.phase());
    EXPECT_LE(t.start_unix_ms(), t.end_unix_ms()) << t.phase();
    if (i > 0) {
      EXPECT_EQ(t.start_unix_ms(), r.phase_timings(i - 1).end_unix_ms()) << t.phase();
    }
  }
  ASSERT_FALSE(phases.empty());
  EXPECT_EQ(phases[0], ferry::v1::MIGRATION_PHASE_SETUP);
  EXPECT_EQ(std::count(phases.begin(), phases.end(), ferry::v1::MIGRATION_PHASE_PRECOPY),
            mode == MigrationMode::kPostcopy ? 0 : 1);
  EXPECT_EQ(std::count(phases.begin(), phases.end(), ferry::v1::MIGRATION_PHASE_SWITCHOVER), 1);

  std::unique_ptr<vmm::Vm> moved = lb->TakeMigrated(session.migration_id());
  ASSERT_NE(moved, nullptr);
  ExpectReferenceDigest(*moved, config);
}

INSTANTIATE_TEST_SUITE_P(
    AllModesAllWorkloads, MigrationE2eTest,
    ::testing::Combine(::testing::Values(MigrationMode::kPrecopy, MigrationMode::kPostcopy,
                                         MigrationMode::kHybrid),
                       ::testing::Values(vmm::WorkloadKind::kIdle,
                                         vmm::WorkloadKind::kSequential,
                                         vmm::WorkloadKind::kUniform,
                                         vmm::WorkloadKind::kZipf,
                                         vmm::WorkloadKind::kDirtyRate,
                                         vmm::WorkloadKind::kHotset)),
    [](const auto& info) {
      std::string name = std::string(MigrationModeName(std::get<0>(info.param))) + "_" +
                         vmm::WorkloadKindName(std::get<1>(info.param));
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

TEST(MigrationE2e, SeveralStreamsCarryPrecopyAndTheDigestMatches) {
  // Precopy pages striped over three connections (each page always on the
  // stream of its 2 MiB chunk), a barrier before every main-stream message
  // that depends on them; resent pages must never be overtaken by a stale
  // copy on another stream.
  for (MigrationMode mode : {MigrationMode::kPrecopy, MigrationMode::kHybrid}) {
    ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
    vmm::VmConfig config = Config(vmm::WorkloadKind::kDirtyRate);
    auto source = RunningSource(config);
    MigrationOptions options;
    options.mode = mode;
    options.streams = 3;
    // Hybrid may switch to postcopy; precopy must fit whatever the speed.
    options.downtime_target_ms = mode == MigrationMode::kPrecopy ? kPrecopyFitsAnywhere : 500;
    options.max_rounds = 8;
    SourceSession session(source.get(), lb->MakeSourceConfig(options));
    ASSERT_OK(session.Run()) << session.report().outcome();
    EXPECT_GE(session.report().precopy_rounds(), 1u);
    std::unique_ptr<vmm::Vm> moved = lb->TakeMigrated(session.migration_id());
    ASSERT_NE(moved, nullptr) << MigrationModeName(mode);
    ExpectReferenceDigest(*moved, config);
  }
}

TEST(MigrationE2e, SeveralStreamsCarryThePostcopyPushAndTheDigestMatches) {
  // The push stripes its frames over every stream, with no barrier between
  // frames (each page is final and pushed once) and one Flush before
  // Complete; the digest matches whichever stream brought each page.
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  vmm::VmConfig config = Config(vmm::WorkloadKind::kZipf);
  auto source = RunningSource(config);
  MigrationOptions options;
  options.mode = MigrationMode::kPostcopy;
  options.streams = 3;
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  ASSERT_OK(session.Run()) << session.report().outcome();
  const MigrationReport& r = session.report();
  EXPECT_EQ(r.push_streams(), 3u);
  EXPECT_GT(r.pages_pushed(), 0u);
  EXPECT_EQ(r.reconnects(), 0u);
  std::unique_ptr<vmm::Vm> moved = lb->TakeMigrated(session.migration_id());
  ASSERT_NE(moved, nullptr);
  ExpectReferenceDigest(*moved, config);
}

TEST(MigrationE2e, ZeroPagesTravelAsBitmapBitsNotData) {
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  vmm::VmConfig config = Config(vmm::WorkloadKind::kIdle);  // writes nothing
  config.workload.zero_fraction = 0.5;
  auto source = RunningSource(config);
  MigrationOptions options;
  options.mode = MigrationMode::kPrecopy;
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  ASSERT_OK(session.Run()) << session.report().outcome();
  const MigrationReport& r = session.report();
  const uint64_t pages = config.memory_bytes / 4096;
  EXPECT_NEAR(double(r.zero_pages()) / pages, 0.5, 0.05);
  EXPECT_EQ(r.zero_pages() + r.pages_sent(), pages);
  // Only data pages cost page-sized bytes on the wire; frame and run
  // headers (32 and 16 bytes) and zero bitmaps add well under 1%.
  EXPECT_LT(r.bytes_sent(), (r.pages_sent() + 1) * 4096 * 1.01 + pages / 8 + 4096);
  auto moved = lb->TakeMigrated(session.migration_id());
  ASSERT_NE(moved, nullptr);
  // The destination allocated only the data pages, and the holes the guest
  // read since it resumed (shmem allocates a page on a read of a hole; the
  // idle guest reads one page per op): zero pages stay holes otherwise,
  // which read as zero (the digest reads them). Paused to count, so the
  // bound holds however long the guest ran here.
  ASSERT_OK(moved->Pause());
  const uint64_t ops_here = moved->Stats().total_ops - source->Stats().total_ops;
  ASSERT_OK_AND_ASSIGN(uint64_t allocated, moved->memory().AllocatedBytes());
  EXPECT_LE(allocated, (r.pages_sent() + ops_here) * 4096) << "zero pages must stay unallocated";
  EXPECT_GE(allocated, r.pages_sent() * 4096 * 99 / 100);
  ASSERT_OK(moved->Resume());
  ExpectReferenceDigest(*moved, config);
}

TEST(MigrationE2e, PostcopyInBlockingFaultMode) {
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  vmm::VmConfig config = Config(vmm::WorkloadKind::kZipf);
  auto source = RunningSource(config);
  MigrationOptions options;
  options.mode = MigrationMode::kPostcopy;
  options.fault_mode = vmm::FaultMode::kBlocking;
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  ASSERT_OK(session.Run()) << session.report().outcome();
  EXPECT_EQ(session.report().fault_mode(), "blocking");
  auto moved = lb->TakeMigrated(session.migration_id());
  ASSERT_NE(moved, nullptr);
  ExpectReferenceDigest(*moved, config);
}

// The VM's own dirty log, except that each scan while the guest runs first
// waits until the guest has run `ops` more operations. A loaded machine can
// leave the vCPU threads unscheduled for a whole round; this makes sure the
// guest wrote between two scans however the threads were scheduled.
class DirtyLogAfterGuestOps final : public vmm::DirtyLog {
 public:
  DirtyLogAfterGuestOps(vmm::Vm* vm, std::unique_ptr<vmm::DirtyLog> log, uint64_t ops)
      : vm_(vm), log_(std::move(log)), ops_(ops), last_(vm->Stats().total_ops) {}

  absl::Status Collect(std::vector<uint64_t>* pages) override {
    if (!Eventually([&] { return vm_->Stats().total_ops >= last_ + ops_; }, absl::Seconds(120)))
      return absl::DeadlineExceededError("the test guest ran no operations for 120 s");
    last_ = vm_->Stats().total_ops;
    return log_->Collect(pages);
  }
  // With the VM paused: nothing more to wait for.
  absl::Status CollectFinal(std::vector<uint64_t>* pages) override {
    return log_->CollectFinal(pages);
  }
  const char* Name() const override { return log_->Name(); }

 private:
  vmm::Vm* vm_;
  std::unique_ptr<vmm::DirtyLog> log_;
  uint64_t ops_;
  uint64_t last_;
};

TEST(MigrationE2e, PagesWrittenAfterTheyWereSentAreNeverStale) {
  // Every op writes, until the guest is stopped, and the dirty log's scans
  // wait for 4,096 more writes each (about 3,200 of the 8,192 pages, far
  // more than the 1 ms downtime target holds at any link speed): each
  // precopy round leaves many pages stale at the destination, and hybrid
  // switches to postcopy with a large discard set however the machine
  // schedules the vCPUs. The digest, against a replay of the ops each vCPU
  // ran, proves no stale page survived.
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  vmm::VmConfig config = Config(vmm::WorkloadKind::kUniform);
  config.workload.write_fraction = 1.0;
  config.workload.ops_per_vcpu = 0;
  auto source = RunningSource(config);
  ASSERT_TRUE(Eventually([&] { return source->Stats().total_ops > 0; }));
  MigrationOptions options;
  options.mode = MigrationMode::kHybrid;
  options.downtime_target_ms = 1;
  options.max_rounds = 2;
  SourceConfig source_config = lb->MakeSourceConfig(options);
  source_config.start_dirty_log =
      [](vmm::Vm* vm) -> absl::StatusOr<std::unique_ptr<vmm::DirtyLog>> {
    ASSIGN_OR_RETURN(std::unique_ptr<vmm::DirtyLog> log, vm->StartDirtyLog());
    return std::unique_ptr<vmm::DirtyLog>(new DirtyLogAfterGuestOps(vm, std::move(log), 4096));
  };
  SourceSession session(source.get(), source_config);
  ASSERT_OK(session.Run()) << session.report().outcome();
  EXPECT_GT(session.report().pages_discarded(), 0u);
  EXPECT_GT(session.report().pages_resent(), 0u);
  auto moved = lb->TakeMigrated(session.migration_id());
  ASSERT_NE(moved, nullptr);
  ASSERT_OK(moved->Pause());
  std::vector<uint64_t> ops;
  for (const auto& v : moved->Stats().vcpus) ops.push_back(v.counters.ops);
  ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest got, moved->Digest());
  ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest want, vmm::ReferenceDigest(config, ops));
  EXPECT_EQ(got.digest, want.digest)
      << vmm::DifferingPages(got, want).size() << " pages differ from the replay";
}

TEST(MigrationE2e, PrecopyThatNeverConvergesFailsAndTheSourceKeepsRunning) {
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  vmm::VmConfig config = Config(vmm::WorkloadKind::kDirtyRate);
  config.memory_bytes = 8ull << 20;
  config.workload.ops_per_vcpu = 0;  // runs until stopped
  config.workload.dirty_bytes_per_sec = 512ull << 20;
  auto source = RunningSource(config);
  MigrationOptions options;
  options.mode = MigrationMode::kPrecopy;
  options.downtime_target_ms = 1;
  options.max_bandwidth = 16ull << 20;  // far below the dirty rate
  options.max_rounds = 4;
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  EXPECT_THAT(session.Run(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("converg")));
  EXPECT_THAT(session.report().outcome(), HasSubstr("the source VM keeps running"));
  EXPECT_EQ(session.Progress().phase, SourcePhase::kFailed);
  // The source VM still runs its guest.
  uint64_t ops = source->Stats().total_ops;
  EXPECT_TRUE(Eventually([&] { return source->Stats().total_ops > ops; }))
      << "the source VM made no progress after the failed migration";
  for (auto s : source->States()) EXPECT_EQ(s, vmm::VcpuRunState::kRunning);
  // The destination is empty.
  EXPECT_EQ(lb->TakeMigrated(session.migration_id(), absl::ZeroDuration()), nullptr);
  EXPECT_TRUE(Eventually([&] { return lb->service().active() == 0; }))
      << lb->service().active() << " destination sessions still active";
}

TEST(MigrationE2e, WrongTokenIsRejectedAndTheSourceKeepsRunning) {
  DestinationOptions dest;
  dest.expected_token = "s3cret";
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start(dest));
  auto source = RunningSource(Config(vmm::WorkloadKind::kUniform));
  MigrationOptions options;
  options.auth_token = "guess";
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  EXPECT_THAT(session.Run(), StatusIs(absl::StatusCode::kUnauthenticated,
                                      HasSubstr("wrong migration token")));
  for (auto s : source->States()) EXPECT_NE(s, vmm::VcpuRunState::kPaused);
}

TEST(MigrationE2e, UnreachableDestinationFailsCleanly) {
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  auto source = RunningSource(Config(vmm::WorkloadKind::kUniform));
  SourceConfig config = lb->MakeSourceConfig({});
  config.destination = "127.0.0.1:1";  // nothing listens there
  SourceSession session(source.get(), config);
  EXPECT_THAT(session.Run(), StatusIs(absl::StatusCode::kUnavailable));
  for (auto s : source->States()) EXPECT_NE(s, vmm::VcpuRunState::kPaused);
}

TEST(MigrationE2e, CancelBeforeSwitchoverLeavesTheSourceRunning) {
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  vmm::VmConfig config = Config(vmm::WorkloadKind::kDirtyRate);
  config.workload.ops_per_vcpu = 0;
  auto source = RunningSource(config);
  MigrationOptions options;
  options.mode = MigrationMode::kPrecopy;
  options.max_bandwidth = 4ull << 20;  // slow: 32 MiB would take 8 s
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  std::thread canceller([&] {
    // Cancelled while it copies (round 0 takes 8 s at this cap).
    EXPECT_TRUE(Eventually([&] { return session.Progress().phase == SourcePhase::kPrecopy; }));
    EXPECT_OK(session.Cancel());
  });
  EXPECT_THAT(session.Run(), StatusIs(absl::StatusCode::kCancelled));
  canceller.join();
  EXPECT_EQ(session.Progress().phase, SourcePhase::kCancelled);
  EXPECT_THAT(session.Cancel(), StatusIs(absl::StatusCode::kFailedPrecondition));
  for (auto s : source->States()) EXPECT_EQ(s, vmm::VcpuRunState::kRunning);
  EXPECT_EQ(lb->TakeMigrated(session.migration_id(), absl::ZeroDuration()), nullptr);
}

TEST(MigrationE2e, CancelAfterCompletionIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto lb, Loopback::Start());
  auto source = RunningSource(Config(vmm::WorkloadKind::kSequential));
  MigrationOptions options;
  options.mode = MigrationMode::kPostcopy;
  SourceSession session(source.get(), lb->MakeSourceConfig(options));
  ASSERT_OK(session.Run());
  EXPECT_THAT(session.Cancel(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         HasSubstr("can no longer be cancelled")));
}

}  // namespace
}  // namespace ferry::migration
