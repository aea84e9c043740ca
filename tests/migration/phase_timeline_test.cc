#include "migration/phase_timeline.h"

#include <vector>

#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using ferry::v1::MIGRATION_PHASE_COMPLETED;
using ferry::v1::MIGRATION_PHASE_FAILED;
using ferry::v1::MIGRATION_PHASE_POSTCOPY;
using ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED;
using ferry::v1::MIGRATION_PHASE_PRECOPY;
using ferry::v1::MIGRATION_PHASE_SETUP;
using ferry::v1::MIGRATION_PHASE_SWITCHOVER;

TEST(PhaseTimelineTest, RecordsContiguousPhasesUntilTheEnd) {
  int64_t now = 1000;
  std::vector<PhaseChange> heard;
  PhaseTimeline t([&](const PhaseChange& c) { heard.push_back(c); }, [&] { return now; });
  t.Note(MIGRATION_PHASE_SETUP);
  now = 1010;
  t.Note(MIGRATION_PHASE_SETUP);  // the same phase: nothing
  t.Note(MIGRATION_PHASE_PRECOPY);
  now = 1500;
  t.Note(MIGRATION_PHASE_SWITCHOVER);
  now = 1502;
  t.Note(MIGRATION_PHASE_POSTCOPY);
  now = 1600;
  t.Note(MIGRATION_PHASE_COMPLETED);
  now = 1700;
  t.Note(MIGRATION_PHASE_FAILED);  // closed: ignored

  ASSERT_EQ(heard.size(), 5u);
  EXPECT_EQ(heard[0].from, ferry::v1::MIGRATION_PHASE_UNSPECIFIED);
  EXPECT_EQ(heard[0].to, MIGRATION_PHASE_SETUP);
  EXPECT_EQ(heard[1].from, MIGRATION_PHASE_SETUP);
  EXPECT_EQ(heard[1].to, MIGRATION_PHASE_PRECOPY);
  EXPECT_EQ(heard[1].unix_ms, 1010);
  EXPECT_EQ(heard[4].to, MIGRATION_PHASE_COMPLETED);

  const PhaseTimings ts = t.Timings();
  ASSERT_EQ(ts.size(), 4);
  const ferry::v1::MigrationPhase phases[] = {MIGRATION_PHASE_SETUP, MIGRATION_PHASE_PRECOPY,
                                              MIGRATION_PHASE_SWITCHOVER, MIGRATION_PHASE_POSTCOPY};
  const int64_t starts[] = {1000, 1010, 1500, 1502};
  const int64_t ends[] = {1010, 1500, 1502, 1600};
  for (int i = 0; i < ts.size(); ++i) {
    EXPECT_EQ(ts[i].phase(), phases[i]);
    EXPECT_EQ(ts[i].start_unix_ms(), starts[i]);
    EXPECT_EQ(ts[i].end_unix_ms(), ends[i]);
    EXPECT_EQ(ts[i].duration_ms(), ends[i] - starts[i]);
  }
}

TEST(PhaseTimelineTest, APhaseUnderWayEndsNowAndTimeNeverGoesBack) {
  int64_t now = 2000;
  PhaseTimeline t(nullptr, [&] { return now; });
  t.Note(MIGRATION_PHASE_POSTCOPY);
  now = 1900;  // the wall clock stepped back
  t.Note(MIGRATION_PHASE_POSTCOPY_PAUSED);
  now = 2500;
  PhaseTimings ts = t.Timings();
  ASSERT_EQ(ts.size(), 2);
  EXPECT_EQ(ts[0].end_unix_ms(), 2000);
  EXPECT_EQ(ts[1].start_unix_ms(), 2000);
  EXPECT_EQ(ts[1].end_unix_ms(), 2500);  // so far
  EXPECT_EQ(ts[1].phase(), MIGRATION_PHASE_POSTCOPY_PAUSED);
}

TEST(PhaseTimelineTest, NoNotesNoTimings) {
  PhaseTimeline t;
  EXPECT_TRUE(t.Timings().empty());
}

}  // namespace
}  // namespace ferry::migration
