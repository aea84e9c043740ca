// The PageBatch codec: a round trip of every page kind, and one named case
// per corruption, each rejected before anything could be installed.
#include "migration/page_batch.h"

#include <cstring>
#include <vector>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"

namespace ferry::migration {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 256;  // 1 MiB

class PageBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(vmm::MemoryMap map, vmm::MemoryMap::ForSize(kPages * kPage, kPage));
    ASSERT_OK_AND_ASSIGN(memory_, vmm::GuestMemory::Create(map));
    // Even pages hold data (their index in every byte), odd pages are zero.
    for (uint64_t p = 0; p < kPages; p += 2)
      std::memset(memory_->host() + p * kPage, static_cast<int>(p + 1), kPage);
  }

  // A batch of one data run of `count` pages at page `first` (any content).
  ferry::v1::PageBatch DataRun(uint64_t first, uint32_t count) {
    ferry::v1::PageBatch b;
    b.set_phase(ferry::v1::PHASE_PRECOPY);
    auto* run = b.add_runs();
    run->set_gpa(first * kPage);
    run->set_count(count);
    b.set_data(std::string(uint64_t{count} * kPage, 'x'));
    return b;
  }

  std::unique_ptr<vmm::GuestMemory> memory_;
};

TEST_F(PageBatchTest, EveryPageKindRoundTrips) {
  std::vector<uint64_t> pages;
  for (uint64_t p = 10; p < 20; ++p) pages.push_back(p);  // data and zero, interleaved
  pages.push_back(100);                                    // data, not adjacent
  std::vector<std::pair<uint64_t, bool>> seen;
  ferry::v1::PageBatch batch;
  const EncodedBatch e = EncodePageBatch(
      *memory_, pages, ferry::v1::PHASE_POSTCOPY, 7, &batch,
      [&](uint64_t page, bool is_data) { seen.emplace_back(page, is_data); });
  EXPECT_EQ(e.data_pages, 6u);  // 10, 12, 14, 16, 18, 100
  EXPECT_EQ(e.zero_pages, 5u);  // 11 .. 19 odd
  EXPECT_EQ(e.wire_bytes, 6 * kPage + batch.zero_bitmap().size());
  EXPECT_EQ(batch.phase(), ferry::v1::PHASE_POSTCOPY);
  EXPECT_EQ(batch.round(), 7u);
  ASSERT_EQ(seen.size(), pages.size());
  for (const auto& [page, is_data] : seen) EXPECT_EQ(is_data, page % 2 == 0) << page;

  ASSERT_OK_AND_ASSIGN(DecodedBatch d, DecodePageBatch(batch, memory_->map()));
  EXPECT_EQ(d.pages, pages.size());
  uint64_t data_pages = 0;
  for (const DecodedRun& run : d.data_runs) {
    for (uint64_t i = 0; i < run.count; ++i) {
      const uint64_t page = run.gpa / kPage + i;
      EXPECT_EQ(std::memcmp(run.data + i * kPage, memory_->host() + page * kPage, kPage), 0)
          << "page " << page;
    }
    data_pages += run.count;
  }
  EXPECT_EQ(data_pages, 6u);
  uint64_t zero_pages = 0;
  for (const DecodedRun& run : d.zero_runs) {
    EXPECT_EQ(run.data, nullptr);
    for (uint64_t i = 0; i < run.count; ++i) EXPECT_EQ((run.gpa / kPage + i) % 2, 1u);
    zero_pages += run.count;
  }
  EXPECT_EQ(zero_pages, 5u);
}

TEST_F(PageBatchTest, AdjacentDataPagesShareOneRun) {
  for (uint64_t p = 40; p < 48; ++p) std::memset(memory_->host() + p * kPage, 9, kPage);
  std::vector<uint64_t> pages = {40, 41, 42, 43, 44, 45, 46, 47};
  ferry::v1::PageBatch batch;
  EncodePageBatch(*memory_, pages, ferry::v1::PHASE_PRECOPY, 0, &batch,
                  [](uint64_t, bool) {});
  ASSERT_EQ(batch.runs_size(), 1);
  EXPECT_EQ(batch.runs(0).gpa(), 40 * kPage);
  EXPECT_EQ(batch.runs(0).count(), 8u);
  EXPECT_TRUE(batch.zero_bitmap().empty());
}

TEST_F(PageBatchTest, AnEmptyBatchDecodesToNothing) {
  ferry::v1::PageBatch batch;
  ASSERT_OK_AND_ASSIGN(DecodedBatch d, DecodePageBatch(batch, memory_->map()));
  EXPECT_EQ(d.pages, 0u);
}

TEST_F(PageBatchTest, Truncated) {
  ferry::v1::PageBatch b = DataRun(0, 4);
  b.mutable_data()->resize(3 * kPage + 100);
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reaches past")));
}

TEST_F(PageBatchTest, DataNoRunNames) {
  ferry::v1::PageBatch b = DataRun(0, 1);
  b.mutable_data()->append(kPage, 'y');
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("but the batch carries")));
}

TEST_F(PageBatchTest, PageCountPastTheBatch) {
  ferry::v1::PageBatch b = DataRun(0, 1);
  b.mutable_runs(0)->set_count(1000000);  // far more than the data carries
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than")));
  b = DataRun(0, 2);
  b.mutable_runs(0)->set_count(3);
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reaches past")));
}

TEST_F(PageBatchTest, MorePagesThanABatchMayName) {
  ASSERT_OK_AND_ASSIGN(vmm::MemoryMap big, vmm::MemoryMap::ForSize(64 << 20, kPage));
  ferry::v1::PageBatch b;
  b.set_zero_base_gpa(0);
  b.set_zero_bitmap(std::string(kMaxBatchPages / 8 + 1, '\xff'));
  EXPECT_THAT(DecodePageBatch(b, big).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(absl::StrCat("more than ", kMaxBatchPages))));
}

TEST_F(PageBatchTest, RunPastTheEndOfMemory) {
  ferry::v1::PageBatch b = DataRun(kPages - 1, 2);
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("not inside one RAM slot")));
  b = DataRun(kPages, 1);
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
  b = DataRun(0, 1);
  b.mutable_runs(0)->set_gpa(~0ull & ~uint64_t{kPage - 1});  // wraps if added to
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(PageBatchTest, EmptyOrUnalignedRun) {
  ferry::v1::PageBatch b = DataRun(0, 1);
  b.mutable_runs(0)->set_gpa(100);
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not page aligned")));
  b = DataRun(0, 1);
  b.add_runs()->set_gpa(2 * kPage);  // count 0
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST_F(PageBatchTest, BadZeroMaskOverlappingData) {
  ferry::v1::PageBatch b = DataRun(8, 2);  // pages 8 and 9
  b.set_zero_base_gpa(9 * kPage);
  b.set_zero_bitmap(std::string(1, '\x01'));  // page 9 again, as zero
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("also sends as data")));
}

TEST_F(PageBatchTest, BadZeroMaskLargerThanTheVm) {
  ferry::v1::PageBatch b;
  b.set_zero_bitmap(std::string(16 << 20, '\0'));  // 16 MiB: never expanded
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("larger than the VM")));
}

TEST_F(PageBatchTest, BadZeroMaskUnalignedBase) {
  ferry::v1::PageBatch b;
  b.set_zero_base_gpa(kPage + 8);
  b.set_zero_bitmap(std::string(1, '\x01'));
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not page aligned")));
}

TEST_F(PageBatchTest, BadZeroMaskOutsideRam) {
  ferry::v1::PageBatch b;
  b.set_zero_base_gpa((kPages - 1) * kPage);
  b.set_zero_bitmap(std::string(1, '\x03'));  // the last page and one past it
  EXPECT_THAT(DecodePageBatch(b, memory_->map()).status(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("zero run")));
}

TEST_F(PageBatchTest, DiscardRunsMergeAdjacentPages) {
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
