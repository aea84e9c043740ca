// Which live parameter changes each source state admits
// (migration/live_parameters.h), one case per rule.
#include "migration/live_parameters.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using ::testing::HasSubstr;
using S = SourceState;

ParameterUpdate Bandwidth(uint64_t rate) {
  ParameterUpdate u;
  u.max_bandwidth = rate;
  return u;
}

ParameterUpdate Downtime(int64_t ms) {
  ParameterUpdate u;
  u.downtime_target_ms = ms;
  return u;
}

TEST(CheckParameterUpdate, NothingToChangeIsAnInvalidArgument) {
  EXPECT_EQ(CheckParameterUpdate("m", S::kPrecopy, {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckParameterUpdate, ADowntimeTargetBelowOneMsIsAnInvalidArgument) {
  EXPECT_EQ(CheckParameterUpdate("m", S::kPrecopy, Downtime(0)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckParameterUpdate("m", S::kPrecopy, Downtime(-5)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckParameterUpdate, BandwidthChangesInEveryRunningState) {
  for (S s : {S::kConnecting, S::kAccepted, S::kPrecopy, S::kDiscarding, S::kPaused,
              S::kSwitchingOver, S::kPostcopy, S::kCompleting, S::kPostcopyPaused, S::kReleasing})
    EXPECT_TRUE(CheckParameterUpdate("m", s, Bandwidth(1 << 20)).ok()) << SourceStateName(s);
}

TEST(CheckParameterUpdate, NothingChangesOnceTheMigrationEnded) {
  for (S s : {S::kCompleted, S::kFailed, S::kCancelled, S::kCancelling}) {
    absl::Status st = CheckParameterUpdate("mig-1", s, Bandwidth(1 << 20));
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << SourceStateName(s);
    EXPECT_THAT(st.message(), HasSubstr("mig-1"));
    EXPECT_THAT(st.message(), HasSubstr("no longer runs"));
  }
}

TEST(CheckParameterUpdate, TheDowntimeTargetOnlyBeforeSwitchover) {
  for (S s : {S::kConnecting, S::kAccepted, S::kPrecopy})
    EXPECT_TRUE(CheckParameterUpdate("m", s, Downtime(100)).ok()) << SourceStateName(s);
  for (S s : {S::kDiscarding, S::kPaused, S::kSwitchingOver, S::kPostcopy}) {
    ParameterUpdate both = Downtime(100);
    both.max_bandwidth = 1 << 20;  // refused together: all or nothing
    absl::Status st = CheckParameterUpdate("m", s, both);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << SourceStateName(s);
    EXPECT_THAT(st.message(), HasSubstr("only applies before switchover"));
    EXPECT_THAT(st.message(), HasSubstr(SourceStateName(s)));
  }
}

TEST(CheckParameterUpdate, StreamsOnlyWhilePrecopyRunsAndWithinBounds) {
  ParameterUpdate u;
  for (int bad : {0, -1, 9, 1000}) {
    u.streams = bad;
    EXPECT_EQ(CheckParameterUpdate("m", S::kPrecopy, u).code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  u.streams = 8;
  for (S s : {S::kConnecting, S::kAccepted, S::kPrecopy})
    EXPECT_TRUE(CheckParameterUpdate("m", s, u).ok()) << SourceStateName(s);
  for (S s : {S::kDiscarding, S::kPaused, S::kSwitchingOver, S::kPostcopy, S::kPostcopyPaused}) {
    absl::Status st = CheckParameterUpdate("m", s, u);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << SourceStateName(s);
    EXPECT_THAT(st.message(), HasSubstr("precopy has stopped"));
  }
}

TEST(CheckStartPostcopy, AHybridMigrationBeforeSwitchover) {
  for (S s : {S::kConnecting, S::kAccepted, S::kPrecopy})
    EXPECT_TRUE(CheckStartPostcopy("m", MigrationMode::kHybrid, s).ok()) << SourceStateName(s);
}

TEST(CheckStartPostcopy, PrecopyModeCannotGoPostcopy) {
  absl::Status st = CheckStartPostcopy("m", MigrationMode::kPrecopy, S::kPrecopy);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("precopy mode"));
  EXPECT_THAT(st.message(), HasSubstr("--mode hybrid"));
}

TEST(CheckStartPostcopy, PostcopyModeSwitchesOnItsOwn) {
  absl::Status st = CheckStartPostcopy("m", MigrationMode::kPostcopy, S::kAccepted);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("postcopy mode"));
}

TEST(CheckStartPostcopy, RefusedOncePrecopyStopped) {
  for (S s : {S::kDiscarding, S::kPaused, S::kSwitchingOver, S::kPostcopy, S::kCompleting,
              S::kPostcopyPaused, S::kReleasing}) {
    absl::Status st = CheckStartPostcopy("m", MigrationMode::kHybrid, s);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << SourceStateName(s);
    EXPECT_THAT(st.message(), HasSubstr("precopy has already stopped"));
  }
}

TEST(CheckStartPostcopy, RefusedOnceEnded) {
  for (S s : {S::kCompleted, S::kFailed, S::kCancelling, S::kCancelled}) {
    absl::Status st = CheckStartPostcopy("m", MigrationMode::kHybrid, s);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << SourceStateName(s);
    EXPECT_THAT(st.message(), HasSubstr("no longer runs"));
  }
}

}  // namespace
}  // namespace ferry::migration
