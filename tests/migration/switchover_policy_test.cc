#include "migration/switchover_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using ::testing::HasSubstr;

RoundFacts Facts(int rounds, uint64_t pages, double bps) {
  RoundFacts f;
  f.rounds_done = rounds;
  f.pages_to_send = pages;
  f.bandwidth_bps = bps;
  return f;
}

MigrationOptions Mode(MigrationMode m) {
  MigrationOptions o;
  o.mode = m;
  o.downtime_target_ms = 50;
  o.max_rounds = 10;
  return o;
}

TEST(SwitchoverPolicy, StopAndCopyWhenTheRestFits) {
  // 1000 pages = 4 MB at 1 GB/s: 4 ms.
  for (auto m : {MigrationMode::kPrecopy, MigrationMode::kHybrid, MigrationMode::kPostcopy}) {
    PolicyDecision d = DecideAfterRound(Mode(m), Facts(1, 1000, 1e9));
    EXPECT_EQ(d.decision, Decision::kStopAndCopy) << MigrationModeName(m);
    EXPECT_THAT(d.reason, HasSubstr("fit the 50 ms"));
  }
  EXPECT_EQ(DecideAfterRound(Mode(MigrationMode::kPrecopy), Facts(1, 0, 0)).decision,
            Decision::kStopAndCopy);
}

TEST(SwitchoverPolicy, AnotherRoundWhileConverging) {
  // 100k pages = 410 MB at 1 GB/s: 410 ms.
  EXPECT_EQ(DecideAfterRound(Mode(MigrationMode::kHybrid), Facts(1, 100000, 1e9)).decision,
            Decision::kNextRound);
  EXPECT_EQ(DecideAfterRound(Mode(MigrationMode::kPostcopy), Facts(1, 100000, 1e9)).decision,
            Decision::kPostcopy);
}

TEST(SwitchoverPolicy, NonConvergenceFailsPrecopyAndSwitchesHybrid) {
  MigrationOptions precopy = Mode(MigrationMode::kPrecopy);
  RoundFacts f = Facts(1, 0, 1e8);
  for (int round = 1; round <= 5; ++round) {
    f.rounds_done = round;
    TrackConvergence(&f, 50000);  // the same dirty set every round
  }
  EXPECT_GE(f.rounds_without_progress, 3);
  PolicyDecision d = DecideAfterRound(precopy, f);
  EXPECT_EQ(d.decision, Decision::kFail);
  EXPECT_THAT(d.reason, HasSubstr("stopped converging"));
  EXPECT_EQ(DecideAfterRound(Mode(MigrationMode::kHybrid), f).decision, Decision::kPostcopy);
}

TEST(SwitchoverPolicy, ShrinkingRoundsKeepGoing) {
  RoundFacts f = Facts(1, 0, 1e8);
  uint64_t pages = 100000;
  for (int round = 1; round <= 6; ++round, pages /= 2) {
    f.rounds_done = round;
    TrackConvergence(&f, pages);
    EXPECT_EQ(f.rounds_without_progress, 0);
  }
}

TEST(SwitchoverPolicy, RoundLimit) {
  RoundFacts f = Facts(10, 100000, 1e9);
  PolicyDecision d = DecideAfterRound(Mode(MigrationMode::kPrecopy), f);
  EXPECT_EQ(d.decision, Decision::kFail);
  EXPECT_THAT(d.reason, HasSubstr("10 precopy rounds"));
}

}  // namespace
}  // namespace ferry::migration
