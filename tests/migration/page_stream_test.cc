// The page stream through real gRPC: a source stream (OpenMigrationStream,
// the callback client) to a destination agent's Migration service on
// loopback. Every page kind round-trips, proven by digest; malformed frames
// and a stream lost mid-message end the migration with a clear error and
// leave the destination empty.
#include <cstring>
#include <thread>

#include "base/eventually.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/convert.h"
#include "migration/loopback.h"
#include "migration/page_frame.h"
#include "migration/protocol.h"
#include "migration/source_stream.h"
#include "tests/migration/frame_builder.h"
#include "vmm/digest.h"

namespace ferry::migration {
namespace {

using ::ferry::migration::testing::RawFrame;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 2048;  // 8 MiB

vmm::VmConfig Config() {
  vmm::VmConfig c;
  c.memory_bytes = kPages * kPage;
  c.vcpus = 1;
  c.workload.kind = vmm::WorkloadKind::kIdle;
  return c;
}

class PageStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(lb_, Loopback::Start());
    ASSERT_OK_AND_ASSIGN(vmm::MemoryMap map, vmm::MemoryMap::ForSize(kPages * kPage, kPage));
    ASSERT_OK_AND_ASSIGN(image_, vmm::GuestMemory::Create(map));
    // A third of the pages zero, the rest data unique to the page.
    for (uint64_t p = 0; p < kPages; ++p)
      if (p % 3 != 0)
        for (uint32_t i = 0; i < kPage; i += 8) std::memcpy(image_->host() + p * kPage + i, &p, 8);
    ASSERT_OK_AND_ASSIGN(stream_, OpenMigrationStream(
                                      absl::StrCat("127.0.0.1:", lb_->destination_port()),
                                      nullptr));
    ferry::v1::SourceMessage hello;
    ferry::v1::Hello* h = hello.mutable_hello();
    h->set_protocol_version(kProtocolVersion);
    h->set_migration_id(id_);
    *h->mutable_layout() = ToLayout(Config(), image_->map());
    h->set_mode(ferry::v1::MIGRATION_MODE_PRECOPY);
    h->set_fault_mode(ferry::v1::FAULT_MODE_EXIT);
    h->set_fetch_address(absl::StrCat("127.0.0.1:", lb_->page_server().port()));
    h->set_fetch_secret(std::string(32, 's'));
    ASSERT_TRUE(stream_->Write(hello));
    ferry::v1::DestinationMessage accepted;
    ASSERT_TRUE(stream_->Read(&accepted));
    ASSERT_TRUE(accepted.has_accepted()) << accepted.DebugString();
  }

  void Send(const std::vector<uint64_t>& pages, FrameData data = FrameData::kReference) {
    ASSERT_TRUE(stream_->WriteFrame(EncodePageFrame(
        *image_, pages, FramePhase::kPrecopy, 0, [](uint64_t, bool) {}, data)));
  }

  // Every page once, in frames of mixed data and zero pages, out of order,
  // some again after a change; the destination's memory then equals the
  // image by digest.
  void RoundTripEveryPageKind(FrameData data) {
    std::vector<uint64_t> odd, even;
    for (uint64_t p = 0; p < kPages; ++p) (p % 2 ? odd : even).push_back(p);
    Send(odd, data);
    Send(even, data);
    // Resent: pages whose content changed since, one turned zero.
    std::memset(image_->host() + 7 * kPage, 0xab, kPage);
    std::memset(image_->host() + 8 * kPage, 0, kPage);
    Send({7, 8, 9}, data);
    ferry::v1::Progress ack = EndRound(0);
    EXPECT_EQ(ack.pages_missing(), 0u);
    DestinationSession* session = lb_->service().Find(id_);
    ASSERT_NE(session, nullptr);
    ASSERT_NE(session->vm(), nullptr);
    ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest got, session->vm()->Digest());
    ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest want, vmm::DigestMemory(*image_));
    EXPECT_EQ(got.digest, want.digest);
    EXPECT_TRUE(vmm::DifferingPages(got, want).empty());
    // Zero pages cost no memory at the destination.
    ASSERT_OK_AND_ASSIGN(uint64_t allocated, session->vm()->memory().AllocatedBytes());
    ASSERT_OK_AND_ASSIGN(uint64_t source, image_->AllocatedBytes());
    EXPECT_LE(allocated, source);
    stream_->Cancel();
  }

  // RoundEnd, and the destination's acknowledgement of it.
  ferry::v1::Progress EndRound(uint64_t round) {
    ferry::v1::SourceMessage end;
    end.mutable_round_end()->set_round(round);
    EXPECT_TRUE(stream_->Write(end));
    ferry::v1::DestinationMessage m;
    EXPECT_TRUE(stream_->Read(&m));
    EXPECT_TRUE(m.has_progress()) << m.DebugString();
    return m.progress();
  }

  // The destination's error after a bad frame, and that it let go of the
  // migration (nothing kept, nothing adopted).
  std::string ErrorAndEmpty() {
    ferry::v1::DestinationMessage m;
    std::string error;
    while (stream_->Read(&m))
      if (m.has_error()) error = m.error().message();
    EXPECT_TRUE(Eventually([&] { return lb_->service().active() == 0; }));
    EXPECT_EQ(lb_->TakeMigrated(id_, absl::ZeroDuration()), nullptr);
    return error;
  }

  const std::string id_ = "stream-test";
  std::unique_ptr<Loopback> lb_;
  std::unique_ptr<vmm::GuestMemory> image_;
  std::unique_ptr<SourceStream> stream_;
};

TEST_F(PageStreamTest, EveryPageKindRoundTripsByDigest) {
  RoundTripEveryPageKind(FrameData::kReference);
}

// Frames that own a copy of their pages (send_path.h) go as one gRPC slice
// that frees its buffer once sent: the same memory arrives.
TEST_F(PageStreamTest, CopiedFramesRoundTripByDigest) { RoundTripEveryPageKind(FrameData::kCopy); }

TEST_F(PageStreamTest, ATruncatedRunEndsTheMigration) {
  Send({1, 2, 3});
  RawFrame f = RawFrame::Data(10, 4, 'x');
  f.runs[0].data.resize(3 * kPage + 17);
  ASSERT_TRUE(stream_->WriteFrame(EncodedFrame::FromBytes(f.Bytes())));
  EXPECT_THAT(ErrorAndEmpty(), HasSubstr("truncated"));
}

TEST_F(PageStreamTest, ARunPastTheEndOfMemoryEndsTheMigration) {
  ASSERT_TRUE(stream_->WriteFrame(EncodedFrame::FromBytes(RawFrame::Data(kPages - 1, 2, 'x').Bytes())));
  EXPECT_THAT(ErrorAndEmpty(), HasSubstr("not inside one RAM slot"));
}

TEST_F(PageStreamTest, AHeaderThatDisagreesWithTheBytesEndsTheMigration) {
  RawFrame f = RawFrame::Data(0, 2, 'x');
  f.run_count_delta = 3;  // names runs the frame does not carry
  ASSERT_TRUE(stream_->WriteFrame(EncodedFrame::FromBytes(f.Bytes())));
  EXPECT_THAT(ErrorAndEmpty(), HasSubstr("header of run 2 of 4 is missing"));
}

TEST_F(PageStreamTest, AStreamLostMidMessageLeavesTheDestinationEmpty) {
  std::vector<uint64_t> all(kPages);
  for (uint64_t p = 0; p < kPages; ++p) all[p] = p;
  Send(all);          // 8 MiB in one frame: on its way when the stream goes
  stream_->Cancel();  // the source's end breaks mid-message
  EXPECT_TRUE(Eventually([&] { return lb_->service().active() == 0; }));
  EXPECT_EQ(lb_->TakeMigrated(id_, absl::ZeroDuration()), nullptr);
}

}  // namespace
}  // namespace ferry::migration
