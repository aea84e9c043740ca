#include "base/args.h"

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

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

TEST(Args, SizesAndRatesFollowTheUnitsRuleNamingTheFlag) {
  ASSERT_OK_AND_ASSIGN(Args a, Args::Parse({"--memory", "1024", "--max-bandwidth", "1Gbit/s",
                                            "--dirty-rate", "1GB"}));
  EXPECT_THAT(a.Bytes("memory", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--memory: '1024'")));
  EXPECT_THAT(a.Rate("max-bandwidth", 0), IsOkAndHolds(125000000u));
  EXPECT_THAT(a.Rate("dirty-rate", 0), IsOkAndHolds(1000000000u));
  EXPECT_THAT(a.Rate("absent", 7), IsOkAndHolds(7u));
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
