#include "base/args.h"

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseBytes, AcceptsBinaryUnits) {
  EXPECT_THAT(ParseBytes("4096", "x"), IsOkAndHolds(4096u));
  EXPECT_THAT(ParseBytes("64K", "x"), IsOkAndHolds(64u << 10));
  EXPECT_THAT(ParseBytes("16M", "x"), IsOkAndHolds(16u << 20));
  EXPECT_THAT(ParseBytes("1G", "x"), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(ParseBytes("1GiB", "x"), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(ParseBytes("16MB/s", "x"), IsOkAndHolds(16u << 20));
  EXPECT_THAT(ParseBytes("1.5G", "x"), IsOkAndHolds(3ull << 29));
}

TEST(ParseBytes, MalformedSizesAreRejectedNamingTheFlag) {
  EXPECT_THAT(ParseBytes("lots", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--memory")));
  EXPECT_THAT(ParseBytes("12Q", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown unit")));
  EXPECT_THAT(ParseBytes("", "--memory"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseBytes("-1G", "--memory"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseBytes("99999999999T", "--memory"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));
}

TEST(Args, ParsesFlagsAndPositionals) {
  ASSERT_OK_AND_ASSIGN(Args a, Args::Parse({"vm", "create", "web", "--memory=1G",
                                            "--vcpus", "4", "--json", "--list", "1,2,8"}));
  EXPECT_THAT(a.positional(), ElementsAre("vm", "create", "web"));
  EXPECT_THAT(a.Bytes("memory", 0), IsOkAndHolds(1ull << 30));
  EXPECT_THAT(a.Int("vcpus", 1), IsOkAndHolds(4));
  EXPECT_TRUE(a.Bool("json"));
  EXPECT_FALSE(a.Bool("quiet"));
  EXPECT_THAT(a.IntList("list", {}), IsOkAndHolds(ElementsAre(1, 2, 8)));
  EXPECT_OK(a.Finish());
}

TEST(Args, UnknownAndMalformedFlagsAreErrors) {
  ASSERT_OK_AND_ASSIGN(Args a, Args::Parse({"--vcpus=two", "--colour=red"}));
  EXPECT_THAT(a.Int("vcpus", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--vcpus")));
  EXPECT_THAT(a.Finish(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--colour")));
  EXPECT_THAT(Args::Parse({"--a=1", "--a=2"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
}

}  // namespace
}  // namespace ferry
