// The page frame codec: a round trip of every page kind (through spans cut
// anywhere, as gRPC delivers them), and one named case per corruption, each
// rejected before anything could be installed.
#include "migration/page_frame.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "tests/migration/frame_builder.h"

namespace ferry::migration {
namespace {

using ::ferry::migration::testing::RawFrame;
using ::ferry::migration::testing::Split;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 256;  // 1 MiB

class PageFrameTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(vmm::MemoryMap map, vmm::MemoryMap::ForSize(kPages * kPage, kPage));
    ASSERT_OK_AND_ASSIGN(memory_, vmm::GuestMemory::Create(map));
    // Even pages hold data (their index in every byte), odd pages are zero.
    for (uint64_t p = 0; p < kPages; p += 2)
      std::memset(memory_->host() + p * kPage, static_cast<int>(p + 1), kPage);
  }

  absl::Status Decode(const RawFrame& f) {
    const std::string bytes = f.Bytes();
    return DecodePageFrame(Split(bytes, bytes.size() + 1), memory_->map()).status();
  }

  std::unique_ptr<vmm::GuestMemory> memory_;
};

TEST_F(PageFrameTest, EveryPageKindRoundTripsThroughSpansCutAnywhere) {
  std::vector<uint64_t> pages;
  for (uint64_t p = 10; p < 20; ++p) pages.push_back(p);  // data and zero, interleaved
  pages.push_back(100);                                    // data, not adjacent
  pages.push_back(101);                                    // zero
  pages.push_back(102);                                    // data
  std::vector<std::pair<uint64_t, bool>> seen;
  EncodedFrame f = EncodePageFrame(
      *memory_, pages, FramePhase::kPostcopy, 7,
      [&](uint64_t page, bool is_data) { seen.emplace_back(page, is_data); });
  EXPECT_EQ(f.data_pages(), 7u);  // 10, 12, 14, 16, 18, 100, 102
  EXPECT_EQ(f.zero_pages(), 6u);  // 11 .. 19 odd, 101
  ASSERT_EQ(seen.size(), pages.size());
  for (const auto& [page, is_data] : seen) EXPECT_EQ(is_data, page % 2 == 0) << page;
  // Page data is referenced, never copied into the frame.
  uint64_t referenced = 0;
  for (const FramePiece& p : f.pieces())
    if (p.guest_memory) {
      EXPECT_TRUE(memory_->Contains(p.data));
      referenced += p.size;
    }
  EXPECT_EQ(referenced, 7 * kPage);
  const std::string wire = f.Flatten();
  EXPECT_EQ(wire.size(), f.wire_bytes());

  for (size_t piece : {size_t{1}, size_t{7}, size_t{1000}, size_t{4096}, size_t{5000},
                       wire.size()}) {
    auto spans = Split(wire, piece);
    ASSERT_OK_AND_ASSIGN(DecodedFrame d, DecodePageFrame(spans, memory_->map()));
    EXPECT_EQ(d.phase, FramePhase::kPostcopy);
    EXPECT_EQ(d.round, 7u);
    EXPECT_EQ(d.pages, pages.size());
    uint64_t data_pages = 0;
    std::vector<uint8_t> bounce(kPage);
    for (const FrameDataRun& run : d.data_runs) {
      ASSERT_OK(ForEachRunPages(spans, run, kPage, bounce.data(),
                                [&](uint64_t gpa, const uint8_t* data, uint64_t n) {
                                  for (uint64_t i = 0; i < n; ++i) {
                                    const uint64_t page = gpa / kPage + i;
                                    EXPECT_EQ(std::memcmp(data + i * kPage,
                                                          memory_->host() + page * kPage,
                                                          kPage),
                                              0)
                                        << "page " << page << ", pieces of " << piece;
                                  }
                                  data_pages += n;
                                  return absl::OkStatus();
                                }));
    }
    EXPECT_EQ(data_pages, 7u) << piece;
    uint64_t zero_pages = 0;
    for (const FrameZeroRun& run : d.zero_runs) {
      for (uint64_t i = 0; i < run.count; ++i) EXPECT_EQ((run.gpa / kPage + i) % 2, 1u);
      zero_pages += run.count;
    }
    EXPECT_EQ(zero_pages, 6u) << piece;
  }
}

TEST_F(PageFrameTest, AdjacentDataPagesShareOneRun) {
  for (uint64_t p = 40; p < 48; ++p) std::memset(memory_->host() + p * kPage, 9, kPage);
  std::vector<uint64_t> pages = {40, 41, 42, 43, 44, 45, 46, 47};
  EncodedFrame f = EncodePageFrame(*memory_, pages, FramePhase::kPrecopy, 0,
                                   [](uint64_t, bool) {});
  // Header, one run header, one stretch of guest memory.
  ASSERT_EQ(f.pieces().size(), 3u);
  EXPECT_EQ(f.pieces()[2].size, 8 * kPage);
  const std::string wire = f.Flatten();
  ASSERT_OK_AND_ASSIGN(DecodedFrame d, DecodePageFrame(Split(wire, wire.size()), memory_->map()));
  ASSERT_EQ(d.data_runs.size(), 1u);
  EXPECT_EQ(d.data_runs[0].gpa, 40 * kPage);
  EXPECT_EQ(d.data_runs[0].count, 8u);
  EXPECT_TRUE(d.zero_runs.empty());
}

// A copied frame puts the same bytes on the wire as a referencing one, in
// one buffer it owns (read through the memory file, not the mapping), and
// hands that buffer over whole.
TEST_F(PageFrameTest, ACopiedFrameCarriesTheSameBytesInOneOwnedBuffer) {
  std::vector<uint64_t> pages;
  for (uint64_t p = 30; p < 50; ++p) pages.push_back(p);  // data and zero
  pages.push_back(200);                                   // data, apart
  for (FramePhase phase : {FramePhase::kPrecopy, FramePhase::kPostcopy}) {
    std::vector<std::pair<uint64_t, bool>> seen_ref, seen_copy;
    EncodedFrame ref = EncodePageFrame(*memory_, pages, phase, 3,
                                       [&](uint64_t p, bool d) { seen_ref.emplace_back(p, d); });
    EncodedFrame copy = EncodePageFrame(
        *memory_, pages, phase, 3, [&](uint64_t p, bool d) { seen_copy.emplace_back(p, d); },
        FrameData::kCopy);
    EXPECT_EQ(seen_copy, seen_ref);
    EXPECT_EQ(copy.data_pages(), ref.data_pages());
    EXPECT_EQ(copy.zero_pages(), ref.zero_pages());
    EXPECT_EQ(copy.wire_bytes(), ref.wire_bytes());
    ASSERT_EQ(copy.pieces().size(), 1u);
    EXPECT_FALSE(copy.pieces()[0].guest_memory);
    EXPECT_FALSE(memory_->Contains(copy.pieces()[0].data));
    const std::string wire = copy.Flatten();
    EXPECT_EQ(wire, ref.Flatten());
    ASSERT_OK(DecodePageFrame(Split(wire, 777), memory_->map()).status());
    // The buffer, handed over, is the frame.
    const uint8_t* at = copy.pieces()[0].data;
    std::unique_ptr<uint8_t[]> whole = copy.ReleaseWhole();
    ASSERT_NE(whole, nullptr);
    EXPECT_EQ(whole.get(), at);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(whole.get()), wire.size()), wire);
    EXPECT_TRUE(copy.pieces().empty());
    EXPECT_EQ(ref.ReleaseWhole(), nullptr);  // a referencing frame owns no whole
    EXPECT_EQ(ref.Flatten(), wire);
  }
}

TEST_F(PageFrameTest, AnEmptyFrameDecodesToNothing) {
  RawFrame f;
  const std::string wire = f.Bytes();
  ASSERT_OK_AND_ASSIGN(DecodedFrame d, DecodePageFrame(Split(wire, 5), memory_->map()));
  EXPECT_EQ(d.pages, 0u);
}

TEST_F(PageFrameTest, Truncated) {
  RawFrame f = RawFrame::Data(0, 4, 'a');
  f.runs[0].data.resize(3 * kPage + 100);
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  // A header cut short.
  const std::string wire = RawFrame::Data(0, 1, 'a').Bytes().substr(0, 20);
  EXPECT_THAT(DecodePageFrame(Split(wire, 3), memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  // The run count says more runs than the frame holds.
  f = RawFrame::Data(0, 1, 'a');
  f.run_count_delta = 1;
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument,
                                  HasSubstr("header of run 2 of 2 is missing")));
}

TEST_F(PageFrameTest, BytesAfterTheLastRun) {
  RawFrame f = RawFrame::Data(0, 1, 'a');
  f.runs[0].data.append(kPage, 'y');
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument,
                                  HasSubstr("follow the last of its 1 runs")));
}

TEST_F(PageFrameTest, AHeaderThatDisagreesWithTheBytes) {
  RawFrame f = RawFrame::Data(0, 1, 'a');
  f.runs[0].count = 1000000;  // far more than the frame carries
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than")));
  f = RawFrame::Data(0, 2, 'a');
  f.runs[0].count = 3;
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  f = RawFrame::Data(0, 1, 'a');
  f.kind = 9;
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kind 9")));
  f = RawFrame::Data(0, 1, 'a');
  f.phase = 0;
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("phase 0")));
  f = RawFrame::Data(0, 1, 'a');
  f.run_count_delta = 1 << 20;
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("runs name")));
}

TEST_F(PageFrameTest, MorePagesThanAFrameMayName) {
  ASSERT_OK_AND_ASSIGN(vmm::MemoryMap big, vmm::MemoryMap::ForSize(64 << 20, kPage));
  RawFrame f;
  f.zero_bitmap = std::string(kMaxBatchPages / 8 + 1, '\xff');
  const std::string wire = f.Bytes();
  EXPECT_THAT(DecodePageFrame(Split(wire, wire.size()), big).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(absl::StrCat("more than ", kMaxBatchPages))));
}

TEST_F(PageFrameTest, RunPastTheEndOfMemory) {
  EXPECT_THAT(Decode(RawFrame::Data(kPages - 1, 2, 'a')),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("not inside one RAM slot")));
  EXPECT_THAT(Decode(RawFrame::Data(kPages, 1, 'a')), StatusIs(absl::StatusCode::kOutOfRange));
  RawFrame f = RawFrame::Data(0, 1, 'a');
  f.runs[0].gpa = ~0ull & ~uint64_t{kPage - 1};  // wraps if added to
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(PageFrameTest, EmptyOrUnalignedRun) {
  RawFrame f = RawFrame::Data(0, 1, 'a');
  f.runs[0].gpa = 100;
  EXPECT_THAT(Decode(f),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not page aligned")));
  f = RawFrame::Data(0, 1, 'a');
  f.runs.push_back({2 * kPage, 0, ""});
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST_F(PageFrameTest, BadZeroMaskOverlappingData) {
  RawFrame f = RawFrame::Data(8, 2, 'a');  // pages 8 and 9
  f.zero_base_gpa = 9 * kPage;
  f.zero_bitmap = std::string(1, '\x01');  // page 9 again, as zero
  EXPECT_THAT(Decode(f),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("also sends as data")));
}

TEST_F(PageFrameTest, BadZeroMaskLargerThanTheVm) {
  RawFrame f;
  f.zero_bitmap = std::string(16 << 20, '\0');  // 16 MiB: refused before it is read
  EXPECT_THAT(Decode(f),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("larger than the VM")));
}

TEST_F(PageFrameTest, BadZeroMaskUnalignedBase) {
  RawFrame f;
  f.zero_base_gpa = kPage + 8;
  f.zero_bitmap = std::string(1, '\x01');
  EXPECT_THAT(Decode(f),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not page aligned")));
}

TEST_F(PageFrameTest, BadZeroMaskOutsideRam) {
  RawFrame f;
  f.zero_base_gpa = (kPages - 1) * kPage;
  f.zero_bitmap = std::string(1, '\x03');  // the last page and one past it
  EXPECT_THAT(Decode(f), StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("zero run")));
}

TEST_F(PageFrameTest, DiscardRunsMergeAdjacentPages) {
  google::protobuf::RepeatedPtrField<ferry::v1::PageRun> runs;
  std::vector<uint64_t> pages = {1, 2, 3, 7, 9, 10};
  AppendPageRuns(memory_->map(), pages, &runs);
  ASSERT_EQ(runs.size(), 3);
  EXPECT_EQ(runs[0].gpa(), 1 * kPage);
  EXPECT_EQ(runs[0].count(), 3u);
  EXPECT_EQ(runs[1].gpa(), 7 * kPage);
  EXPECT_EQ(runs[1].count(), 1u);
  EXPECT_EQ(runs[2].count(), 2u);
}

}  // namespace
}  // namespace ferry::migration
