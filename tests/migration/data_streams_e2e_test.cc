// The postcopy push over several streams against peers that are not the
// happy path, end to end on loopback (real gRPC, a real destination
// session): a destination that does not take push frames on its data
// streams (as a 0.5.0 agent), and one data stream breaking on its own in
// the middle of the push. Each proves its result by digest.
#include <atomic>
#include <memory>
#include <utility>

#include "base/status_macros.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/loopback.h"
#include "migration/source_stream.h"

namespace ferry::migration {
namespace {

vmm::VmConfig ZipfConfig() {
  vmm::VmConfig c;
  c.memory_bytes = 32ull << 20;
  c.vcpus = 2;
  c.workload.kind = vmm::WorkloadKind::kZipf;
  c.workload.seed = 23;
  c.workload.zero_fraction = 0.3;
  c.workload.write_fraction = 0.5;
  c.workload.ops_per_vcpu = 3'000'000;
  return c;
}

// A real stream with two test behaviours: it hides the destination's
// push_on_data_streams capability (what an older agent's Accepted says),
// or it breaks (Cancel, then false) at its `break_after`-th frame.
class AlteredStream final : public SourceStream {
 public:
  AlteredStream(std::unique_ptr<SourceStream> inner, bool hide_capability, int break_after,
                std::atomic<int>* frames_refused)
      : inner_(std::move(inner)),
        hide_capability_(hide_capability),
        break_after_(break_after),
        frames_refused_(frames_refused) {}

  bool Write(const ferry::v1::SourceMessage& message) override { return inner_->Write(message); }
  bool WriteFrame(EncodedFrame frame) override {
    if (break_after_ > 0 && ++frames_ >= break_after_) {
      if (frames_ == break_after_) inner_->Cancel();
      ++*frames_refused_;
      return false;
    }
    return inner_->WriteFrame(std::move(frame));
  }
  bool Read(ferry::v1::DestinationMessage* message) override {
    if (!inner_->Read(message)) return false;
    if (hide_capability_ && message->has_accepted())
      message->mutable_accepted()->clear_push_on_data_streams();
    return true;
  }
  void WritesDone() override { inner_->WritesDone(); }
  absl::Status Finish() override { return inner_->Finish(); }
  void Cancel() override { inner_->Cancel(); }

 private:
  std::unique_ptr<SourceStream> inner_;
  const bool hide_capability_;
  const int break_after_;
  std::atomic<int>* frames_refused_;
  int frames_ = 0;  // WriteFrame runs on the session's thread only
};

struct Alteration {
  bool hide_capability = false;
  int break_stream = 0;  // which opened stream breaks (1: the first), 0: none
  int break_after = 0;   // at which of its frames
};

// Runs a 3-stream postcopy of a zipf guest with `alteration`; returns the
// report after checking the destination's memory against the reference.
MigrationReport MigrateWith(const Alteration& alteration, std::atomic<int>* frames_refused) {
  auto lb = Loopback::Start();
  EXPECT_OK(lb.status());
  if (!lb.ok()) return {};
  const vmm::VmConfig config = ZipfConfig();
  auto vm = vmm::Vm::Create(config);
  EXPECT_OK(vm.status());
  if (!vm.ok()) return {};
  EXPECT_OK((*vm)->LoadInitialMemory());
  EXPECT_OK((*vm)->Start());
  MigrationOptions options;
  options.mode = MigrationMode::kPostcopy;
  options.streams = 3;
  options.recovery_timeout_ms = 60'000;
  SourceConfig source_config = (*lb)->MakeSourceConfig(options);
  auto opened = std::make_shared<std::atomic<int>>(0);
  source_config.open_stream =
      [alteration, opened, frames_refused,
       destination = source_config.destination]() -> absl::StatusOr<std::unique_ptr<SourceStream>> {
    ASSIGN_OR_RETURN(std::unique_ptr<SourceStream> s, OpenMigrationStream(destination, nullptr));
    const int n = ++*opened;
    return std::unique_ptr<SourceStream>(new AlteredStream(
        std::move(s), alteration.hide_capability,
        n == alteration.break_stream ? alteration.break_after : 0, frames_refused));
  };
  SourceSession session(vm->get(), source_config);
  EXPECT_OK(session.Run()) << session.report().outcome();
  std::unique_ptr<vmm::Vm> moved = (*lb)->TakeMigrated(session.migration_id());
  EXPECT_NE(moved, nullptr);
  if (moved == nullptr) return session.report();
  EXPECT_OK(moved->WaitUntilHalted(absl::Seconds(120)));
  auto got = moved->Digest();
  auto want = vmm::ReferenceDigest(config);
  EXPECT_OK(got.status());
  EXPECT_OK(want.status());
  if (got.ok() && want.ok())
    EXPECT_EQ(got->digest, want->digest)
        << vmm::DifferingPages(*got, *want).size() << " pages differ from the reference run";
  return session.report();
}

TEST(DataStreamsE2e, ADestinationWithoutTheCapabilityGetsThePushOnTheMainStream) {
  std::atomic<int> refused{0};
  const MigrationReport r = MigrateWith({.hide_capability = true}, &refused);
  EXPECT_EQ(r.outcome(), "completed");
  EXPECT_EQ(r.push_streams(), 1u) << "an older destination refuses push frames on data streams";
  EXPECT_GT(r.pages_pushed(), 0u);
  EXPECT_EQ(r.reconnects(), 0u);
}

TEST(DataStreamsE2e, ADataStreamBreakingAloneMidPushIsRecoveredFrom) {
  // Opened streams: 1 the main stream, 2 and 3 the data streams; the first
  // data stream breaks at its 5th frame (a 32 MiB push is 128 frames, about
  // 43 on each stream). The migration pauses, reconnects, and the push goes
  // on over the main stream for whatever the destination lacks.
  std::atomic<int> refused{0};
  const MigrationReport r = MigrateWith({.break_stream = 2, .break_after = 5}, &refused);
  EXPECT_EQ(r.outcome(), "completed");
  EXPECT_GE(refused.load(), 1) << "the data stream never reached its breaking frame";
  EXPECT_GE(r.reconnects(), 1u);
  EXPECT_EQ(r.push_streams(), 3u);
}

}  // namespace
}  // namespace ferry::migration
