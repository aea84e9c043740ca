#include "vmm/memory_map.h"

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

TEST(MemoryMap, SmallMemoryIsOneSlotAtZero) {
  ASSERT_OK_AND_ASSIGN(MemoryMap map, MemoryMap::ForSize(1 << 30, 4096));
  ASSERT_EQ(map.slots().size(), 1u);
  EXPECT_EQ(map.num_pages(), (1u << 30) / 4096);
  EXPECT_THAT(map.GpaToOffset(0x1000, 8), IsOkAndHolds(0x1000));
  EXPECT_EQ(map.OffsetToGpa(0x2000), 0x2000u);
}

TEST(MemoryMap, LargeMemorySkipsThePciHole) {
  ASSERT_OK_AND_ASSIGN(MemoryMap map, MemoryMap::ForSize(5ull << 30, 4096));
  ASSERT_EQ(map.slots().size(), 2u);
  EXPECT_THAT(map.GpaToOffset(4ull << 30, 4096), IsOkAndHolds(3ull << 30));
  EXPECT_EQ(map.OffsetToGpa((3ull << 30) + 4096), (4ull << 30) + 4096);
  EXPECT_THAT(map.GpaToOffset((3ull << 30) + 4096, 8),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("not inside one RAM slot")));
}

TEST(MemoryMap, OutOfRangeAddressesAreRejected) {
  ASSERT_OK_AND_ASSIGN(MemoryMap map, MemoryMap::ForSize(1 << 20, 4096));
  EXPECT_THAT(map.GpaToOffset(1 << 20, 1), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(map.GpaToOffset((1 << 20) - 4096, 8192),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(map.GpaToOffset(~0ull - 10, 100), StatusIs(absl::StatusCode::kOutOfRange));
}

}  // namespace
}  // namespace ferry::vmm
