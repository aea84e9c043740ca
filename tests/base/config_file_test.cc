#include "base/config_file.h"

#include "base/args.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParseConfig, ReadsKeyValueLinesSkippingCommentsAndBlanks) {
  ASSERT_OK_AND_ASSIGN(auto s, ParseConfig("# a comment\n\n agent = 10.0.0.1:7070 \n"
                                           "tls-ca=/etc/ferry/ca.pem\n",
                                           "f"));
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].key, "agent");
  EXPECT_EQ(s[0].value, "10.0.0.1:7070");
  EXPECT_EQ(s[0].origin, "f:3");
  EXPECT_EQ(s[1].key, "tls-ca");
  EXPECT_EQ(s[1].value, "/etc/ferry/ca.pem");
}

TEST(ParseConfig, ALineThatIsNoSettingIsRefusedByFileAndLine) {
  EXPECT_THAT(ParseConfig("agent = x\njunk\n", "cfg"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cfg:2")));
  EXPECT_THAT(ParseConfig(" = x\n", "cfg"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without a key")));
}

TEST(Args, FlagsOverrideDefaultsFromSettingsAndUnreadSettingsAreErrors) {
  ASSERT_OK_AND_ASSIGN(Args a, Args::Parse({"--agent", "flag:1"}));
  a.SetDefault("agent", "file:1", "cfg:1");
  a.SetDefault("connect-timeout-ms", "soon", "cfg:2");
  a.SetDefault("colour", "red", "cfg:3");
  EXPECT_EQ(a.String("agent", "def"), "flag:1");
  EXPECT_THAT(a.Int("connect-timeout-ms", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(from cfg:2)")));
  EXPECT_THAT(a.CheckDefaultsRead(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown setting 'colour'")));
  EXPECT_EQ(a.String("colour", ""), "red");
  EXPECT_OK(a.CheckDefaultsRead());
  EXPECT_OK(a.Finish());  // settings are no flags: Finish does not judge them
}

}  // namespace
}  // namespace ferry
