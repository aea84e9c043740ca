// The memory map transaction planner and GuestMemory::ApplyMap: what each
// change does to the map, every refusal, and that remapping keeps the data.
#include "vmm/memory_transaction.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "base/status_macros.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/guest_memory.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint32_t kPage = 4096;

MemoryLimits Limits(uint64_t max = 16 * kGiB) {
  MemoryLimits l;
  l.max_bytes = max;
  l.min_bytes = 2 * kPage;
  return l;
}

MemoryMap Map(std::vector<MemoryRegion> regions) {
  auto m = MemoryMap::FromRegions(std::move(regions), kPage);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

absl::StatusOr<MemoryMap> Plan(const MemoryMap& map, std::vector<MemoryChange> changes,
                               const MemoryLimits& limits = Limits()) {
  return PlanMemoryTransaction(map, MemoryTransaction{std::move(changes)}, limits);
}

TEST(MemoryTransaction, GrowAndShrinkTheMainRegionAcrossTheHole) {
  MemoryMap map = Map({{kMainRegion, 0, 2 * kGiB}});
  ASSERT_OK_AND_ASSIGN(MemoryMap grown, Plan(map, {MemoryChange::Resize("ram", 5 * kGiB)}));
  ASSERT_EQ(grown.slots().size(), 2u);
  EXPECT_EQ(grown.slots()[1].gpa, kHighMemoryBase);
  EXPECT_EQ(grown.slots()[1].size, 2 * kGiB);
  EXPECT_EQ(grown.slots()[1].region_offset, 3 * kGiB);
  EXPECT_EQ(grown.memory_bytes(), 5 * kGiB);
  ASSERT_OK_AND_ASSIGN(MemoryMap shrunk, Plan(grown, {MemoryChange::Resize("ram", kGiB)}));
  EXPECT_EQ(shrunk.slots().size(), 1u);
  EXPECT_EQ(shrunk.memory_bytes(), kGiB);
}

TEST(MemoryTransaction, AddingBelowARegionMovesItInRamOffsetSpace) {
  MemoryMap map = Map({{kMainRegion, 0, 64 * kMiB}, {"top", 2 * kGiB, 16 * kMiB}});
  ASSERT_EQ(map.slots()[1].offset, 64 * kMiB);
  ASSERT_OK_AND_ASSIGN(MemoryMap next, Plan(map, {MemoryChange::Add("mid", kGiB, 8 * kMiB)}));
  ASSERT_EQ(next.slots().size(), 3u);
  EXPECT_EQ(next.regions()[next.slots()[1].region].name, "mid");
  EXPECT_EQ(next.slots()[1].offset, 64 * kMiB);
  EXPECT_EQ(next.slots()[2].offset, 72 * kMiB);  // "top" moved up
  ASSERT_OK_AND_ASSIGN(uint64_t off, next.GpaToOffset(2 * kGiB, kPage));
  EXPECT_EQ(off, 72 * kMiB);
  std::vector<RegionMove> moves = DescribeChange(map, next);
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].region, "mid");
  EXPECT_EQ(moves[0].old_size, 0u);
}

TEST(MemoryTransaction, AdjacentRegionsAreFineOverlappingAndNestedAreNot) {
  MemoryMap map = Map({{kMainRegion, 0, 64 * kMiB}});
  EXPECT_OK(Plan(map, {MemoryChange::Add("next", 64 * kMiB, kMiB)}).status());
  EXPECT_THAT(Plan(map, {MemoryChange::Add("over", 63 * kMiB, 2 * kMiB)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlaps")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("inside", kMiB, kMiB)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlaps")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("hole", 3 * kGiB + kMiB, kMiB)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hole")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("across", 3 * kGiB - kMiB, 2 * kMiB)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hole")));
}

TEST(MemoryTransaction, GrowingIntoANeighbourIsRefused) {
  MemoryMap map = Map({{kMainRegion, 0, 64 * kMiB}, {"dimm0", 128 * kMiB, 64 * kMiB}});
  EXPECT_OK(Plan(map, {MemoryChange::Resize("ram", 128 * kMiB)}).status());
  EXPECT_THAT(Plan(map, {MemoryChange::Resize("ram", 129 * kMiB)}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("change 1 (resize ram to 129 MiB)")));
  // Both in one transaction: shrink the neighbour away first, then grow.
  EXPECT_OK(Plan(map, {MemoryChange::Remove("dimm0"), MemoryChange::Resize("ram", 256 * kMiB)})
                .status());
}

TEST(MemoryTransaction, ShrinkToZeroIsARemove) {
  MemoryMap map = Map({{kMainRegion, 0, 64 * kMiB}, {"dimm0", kGiB, 64 * kMiB}});
  ASSERT_OK_AND_ASSIGN(MemoryMap next, Plan(map, {MemoryChange::Resize("dimm0", 0)}));
  EXPECT_EQ(next.regions().size(), 1u);
  EXPECT_EQ(next.FindRegion("dimm0"), -1);
}

TEST(MemoryTransaction, EveryRefusalSaysWhy) {
  MemoryMap map = Map({{kMainRegion, 0, 64 * kMiB}, {"dimm0", kGiB, 64 * kMiB}});
  EXPECT_THAT(Plan(map, {}), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("at least one change")));
  EXPECT_THAT(Plan(map, {MemoryChange::Remove("ram")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot be removed")));
  EXPECT_THAT(Plan(map, {MemoryChange::Resize("ram", 0)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot be removed")));
  EXPECT_THAT(Plan(map, {MemoryChange::Remove("nope")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no region nope")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("dimm0", 2 * kGiB, kMiB)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exists already")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("x", 2 * kGiB, 0)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a size")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("x", 2 * kGiB + 1, kPage)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiples")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("Bad Name", 2 * kGiB, kPage)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[a-z0-9_-]")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("far", kMaxGuestPhysical, kPage)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("guest-physical space")));
  EXPECT_THAT(Plan(map, {MemoryChange::Resize("dimm0", 64 * kMiB)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has that size")));
  EXPECT_THAT(
      Plan(map, {MemoryChange::Resize("dimm0", kMiB), MemoryChange::Remove("dimm0")}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one change per region")));
  EXPECT_THAT(Plan(map, {MemoryChange::Add("big", 16 * kGiB, 8 * kGiB)}, Limits(4 * kGiB)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("maximum is 4 GiB")));
  MemoryLimits big_min = Limits();
  big_min.min_bytes = 100 * kMiB;
  EXPECT_THAT(Plan(map, {MemoryChange::Remove("dimm0")}, big_min),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 100 MiB")));
  MemoryLimits two_mib = Limits();
  two_mib.alignment = 2 * kMiB;
  EXPECT_THAT(Plan(map, {MemoryChange::Resize("ram", 65 * kMiB)}, two_mib),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiple of 2 MiB")));
  MemoryLimits few = Limits();
  few.max_regions = 2;
  EXPECT_THAT(Plan(map, {MemoryChange::Add("x", 2 * kGiB, kPage)}, few),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("may have 2")));
}

TEST(MemoryTransaction, ARefusedChangeAnywhereRefusesTheWhole) {
  MemoryMap map = Map({{kMainRegion, 0, 64 * kMiB}});
  EXPECT_THAT(Plan(map, {MemoryChange::Resize("ram", 128 * kMiB),
                         MemoryChange::Add("a", kGiB, kMiB), MemoryChange::Remove("zzz")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("change 3 (remove zzz)")));
  EXPECT_EQ(map.memory_bytes(), 64 * kMiB);  // the map itself never changes
}

// GuestMemory::ApplyMap: data stays with its region wherever the region
// moves in RAM offset space; new pages read zero; what left is gone.
class ApplyMapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    map_ = Map({{kMainRegion, 0, 8 * kMiB}, {"dimm0", kGiB, 4 * kMiB}});
    ASSERT_OK_AND_ASSIGN(memory_, GuestMemory::Create(map_, 64 * kMiB));
    Fill("ram", 0, 0x11);
    Fill("dimm0", 0, 0x22);
    Fill("dimm0", 4 * kMiB - kPage, 0x23);
  }
  uint8_t* At(const std::string& region, uint64_t offset) {
    const MemoryRegion& r = memory_->map().regions()[memory_->map().FindRegion(region)];
    auto p = memory_->HostAddress(r.gpa + offset, kPage);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : nullptr;
  }
  void Fill(const std::string& region, uint64_t offset, uint8_t value) {
    std::memset(At(region, offset), value, kPage);
  }
  absl::Status Apply(std::vector<MemoryChange> changes) {
    ASSIGN_OR_RETURN(MemoryMap next, Plan(memory_->map(), std::move(changes), Limits(64 * kMiB)));
    return memory_->ApplyMap(next);
  }

  MemoryMap map_ = *MemoryMap::ForSize(kPage, kPage);
  std::unique_ptr<GuestMemory> memory_;
};

TEST_F(ApplyMapTest, GrowMovesTheRegionAboveWithItsData) {
  uint8_t* dimm_before = At("dimm0", 0);
  ASSERT_OK(Apply({MemoryChange::Resize("ram", 16 * kMiB)}));
  EXPECT_EQ(memory_->size(), 20 * kMiB);
  EXPECT_NE(At("dimm0", 0), dimm_before);  // moved in RAM offset space
  EXPECT_EQ(At("dimm0", 0)[100], 0x22);
  EXPECT_EQ(At("dimm0", 4 * kMiB - kPage)[0], 0x23);
  EXPECT_EQ(At("ram", 0)[0], 0x11);
  EXPECT_EQ(At("ram", 12 * kMiB)[7], 0);  // new pages are zero
  ASSERT_OK_AND_ASSIGN(std::vector<bool> present, memory_->PresentPages());
  EXPECT_TRUE(present[0]);
  EXPECT_FALSE(present[8 * kMiB / kPage]);
  EXPECT_TRUE(present[16 * kMiB / kPage]);  // dimm0's first page, now here
  uint8_t buf[kPage];
  ASSERT_OK(memory_->Read(16 * kMiB, buf, kPage));
  EXPECT_EQ(buf[0], 0x22);
}

// Whether the page at `addr` is mapped in this process's page tables
// (/proc/self/pagemap bit 63), i.e. an access would not fault.
bool InPageTables(const void* addr) {
  int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint64_t entry = 0;
  const off_t at = static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / kPage * 8);
  const bool ok = ::pread(fd, &entry, 8, at) == 8;
  ::close(fd);
  return ok && (entry >> 63) != 0;
}

TEST_F(ApplyMapTest, AMovedRegionKeepsItsPageTables) {
  for (uint64_t off = 0; off < 4 * kMiB; off += kPage) At("dimm0", off)[1] = 7;  // all mapped
  ASSERT_TRUE(InPageTables(At("dimm0", kMiB)));
  ASSERT_OK(Apply({MemoryChange::Resize("ram", 16 * kMiB)}));  // dimm0 moves up 8 MiB
  int mapped = 0;
  for (uint64_t off = 0; off < 4 * kMiB; off += kPage) mapped += InPageTables(At("dimm0", off));
  EXPECT_EQ(mapped, 4 * kMiB / kPage) << "pages of the moved region must not fault again";
  EXPECT_EQ(At("dimm0", 0)[0], 0x22);
  EXPECT_EQ(At("dimm0", 2 * kMiB)[1], 7);
}

// The main region across the PC hole: its high slot (from 4 GiB, its file
// from 3 GiB on) appears on a grow past 3 GiB and goes on a shrink below;
// a region above it moves up and down with its data. The files are sparse,
// so this costs only what is touched.
TEST(ApplyMap, TheMainRegionGrowsAndShrinksAcrossTheHole) {
  MemoryMap map = Map({{kMainRegion, 0, 2 * kGiB}, {"top", 64 * kGiB, 8 * kMiB}});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<GuestMemory> memory, GuestMemory::Create(map, 8 * kGiB));
  auto at = [&](uint64_t gpa) { return *memory->HostAddress(gpa, kPage); };
  std::memset(at(kGiB), 0x11, kPage);
  std::memset(at(64 * kGiB), 0x22, kPage);
  ASSERT_OK_AND_ASSIGN(MemoryMap grown, Plan(memory->map(), {MemoryChange::Resize("ram", 5 * kGiB)},
                                             Limits(8 * kGiB)));
  ASSERT_OK(memory->ApplyMap(grown));
  ASSERT_EQ(memory->map().slots().size(), 3u);
  EXPECT_EQ(at(kGiB)[0], 0x11);
  EXPECT_EQ(at(64 * kGiB)[0], 0x22);            // moved from 2 GiB to 5 GiB in RAM offsets
  EXPECT_EQ(at(kHighMemoryBase + kGiB)[5], 0);  // the high slot: new, zero
  std::memset(at(kHighMemoryBase + kGiB), 0x33, kPage);
  ASSERT_OK_AND_ASSIGN(std::vector<bool> present, memory->PresentPages());
  EXPECT_TRUE(present[(3 * kGiB + kGiB) / kPage]);  // RAM offset of gpa 5 GiB
  EXPECT_TRUE(present[5 * kGiB / kPage]);           // top's first page
  ASSERT_OK_AND_ASSIGN(
      MemoryMap shrunk,
      Plan(memory->map(), {MemoryChange::Resize("ram", 2 * kGiB)}, Limits(8 * kGiB)));
  ASSERT_OK(memory->ApplyMap(shrunk));
  EXPECT_EQ(memory->map().slots().size(), 2u);
  EXPECT_EQ(at(64 * kGiB)[0], 0x22);
  EXPECT_EQ(at(kGiB)[0], 0x11);
  EXPECT_THAT(memory->HostAddress(kHighMemoryBase + kGiB, kPage),
              StatusIs(absl::StatusCode::kOutOfRange));
  // Grown again: what was above 3 GiB was freed, it reads zero now.
  ASSERT_OK(memory->ApplyMap(grown));
  EXPECT_EQ(at(kHighMemoryBase + kGiB)[0], 0);
  EXPECT_EQ(at(64 * kGiB)[0], 0x22);
}

TEST_F(ApplyMapTest, ShrinkDropsThePagesAndAGrowBringsZeros) {
  Fill("ram", 6 * kMiB, 0x33);
  ASSERT_OK(Apply({MemoryChange::Resize("ram", 4 * kMiB)}));
  EXPECT_EQ(At("dimm0", 0)[0], 0x22);
  ASSERT_OK(Apply({MemoryChange::Resize("ram", 8 * kMiB)}));
  EXPECT_EQ(At("ram", 6 * kMiB)[0], 0);
  EXPECT_EQ(At("ram", 0)[0], 0x11);
}

TEST_F(ApplyMapTest, RemoveFreesTheRegionsMemory) {
  ASSERT_OK_AND_ASSIGN(uint64_t before, memory_->AllocatedBytes());
  ASSERT_OK(Apply({MemoryChange::Remove("dimm0")}));
  ASSERT_OK_AND_ASSIGN(uint64_t after, memory_->AllocatedBytes());
  EXPECT_EQ(before - after, 2 * kPage);
  EXPECT_EQ(memory_->size(), 8 * kMiB);
  EXPECT_THAT(memory_->HostAddress(kGiB, kPage), StatusIs(absl::StatusCode::kOutOfRange));
  // Added again: a new, zero region.
  ASSERT_OK(Apply({MemoryChange::Add("dimm0", kGiB, 4 * kMiB)}));
  EXPECT_EQ(At("dimm0", 0)[0], 0);
}

TEST_F(ApplyMapTest, LoadAndReadSpanSlots) {
  std::vector<uint8_t> data(2 * kPage, 0x5a);
  ASSERT_OK(memory_->Load(8 * kMiB - kPage, data.data(), data.size()));  // ram's last, dimm0's first
  EXPECT_EQ(At("ram", 8 * kMiB - kPage)[0], 0x5a);
  EXPECT_EQ(At("dimm0", 0)[0], 0x5a);
  std::vector<uint8_t> back(2 * kPage);
  ASSERT_OK(memory_->Read(8 * kMiB - kPage, back.data(), back.size()));
  EXPECT_EQ(back, data);
  EXPECT_THAT(memory_->Read(12 * kMiB - kPage, back.data(), back.size()),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(ApplyMapTest, AMapLargerThanTheReservationChangesNothing) {
  ASSERT_OK_AND_ASSIGN(MemoryMap big, Plan(memory_->map(), {MemoryChange::Resize("ram", kGiB)}));
  EXPECT_THAT(memory_->ApplyMap(big),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("maximum memory")));
  EXPECT_TRUE(memory_->map().SameLayout(map_));
  EXPECT_EQ(At("dimm0", 0)[0], 0x22);
}

}  // namespace
}  // namespace ferry::vmm
