// The send-path probe: it measures both ways on this host, chooses by the
// rule send_path.h states, and the process keeps one choice.
#include "migration/send_path.h"

#include <iostream>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using ::testing::HasSubstr;

TEST(SendPathTest, TheProbeMeasuresBothWaysAndChoosesByItsRule) {
  ASSERT_OK_AND_ASSIGN(SendPathChoice c, ProbeSendPath());
  std::cout << "send path: " << c.reason << "\n";
  EXPECT_GT(c.reference_gbps, 0);
  EXPECT_GT(c.copy_gbps, 0);
  // Copy only where referencing costs over 1.5x the copy (times are
  // bytes over rate: reference_s > 1.5 * copy_s).
  EXPECT_EQ(c.data == FrameData::kCopy, c.copy_gbps > 1.5 * c.reference_gbps) << c.reason;
  EXPECT_THAT(c.reason, HasSubstr(c.data == FrameData::kCopy ? "copy through the page cache"
                                                             : "reference guest memory"));
}

TEST(SendPathTest, TheProcessKeepsOneChoice) {
  const SendPathChoice& a = ChooseSendPath();
  const SendPathChoice& b = ChooseSendPath();
  EXPECT_EQ(&a, &b);
  EXPECT_FALSE(a.reason.empty());
  EXPECT_STREQ(FrameDataName(FrameData::kCopy), "copy");
  EXPECT_STREQ(FrameDataName(FrameData::kReference), "reference");
}

}  // namespace
}  // namespace ferry::migration
