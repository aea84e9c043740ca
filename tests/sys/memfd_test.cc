#include "sys/memfd.h"

#include <cstring>

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry::sys {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::Pair;

TEST(Memfd, CreateMapsZeroedSharedMemoryWithNoPages) {
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 16 * 4096, 4096));
  EXPECT_EQ(m.size(), 16u * 4096);
  ASSERT_OK_AND_ASSIGN(auto ranges, m.DataRanges());
  EXPECT_TRUE(ranges.empty());
}

TEST(Memfd, DataRangesFollowWritesAndPunchedHoles) {
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 16 * 4096, 4096));
  std::memset(m.data() + 2 * 4096, 0xab, 3 * 4096);
  m.data()[10 * 4096] = 1;
  ASSERT_OK_AND_ASSIGN(auto ranges, m.DataRanges());
  EXPECT_THAT(ranges, ElementsAre(Pair(2 * 4096, 5 * 4096), Pair(10 * 4096, 11 * 4096)));

  ASSERT_OK(m.PunchHole(3 * 4096, 4096));
  ASSERT_OK_AND_ASSIGN(ranges, m.DataRanges());
  EXPECT_THAT(ranges, ElementsAre(Pair(2 * 4096, 3 * 4096), Pair(4 * 4096, 5 * 4096),
                                  Pair(10 * 4096, 11 * 4096)));
  EXPECT_EQ(m.data()[3 * 4096], 0);  // reads zero again: the page is gone
  EXPECT_EQ(m.data()[4 * 4096], 0xab);
}

TEST(Memfd, RejectsBadSizesAndRanges) {
  EXPECT_THAT(MemfdMapping::Create("t", 4097, 4096),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MemfdMapping::Create("t", 0, 4096),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MemfdMapping::Create("t", 2 << 20, 2 << 20),
              StatusIs(absl::StatusCode::kUnimplemented));
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 4 * 4096, 4096));
  EXPECT_THAT(m.PunchHole(3 * 4096, 2 * 4096), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(m.PunchHole(100, 4096), StatusIs(absl::StatusCode::kOutOfRange));
}

}  // namespace
}  // namespace ferry::sys
