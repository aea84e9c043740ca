// MigrationReport <-> ferry.v1.MigrationReport: the phase timings survive
// the round trip and appear in the report's JSON.
#include "migration/api/report_proto.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::api {
namespace {

TEST(ReportProtoTest, PhaseTimingsRoundTrip) {
  migration::MigrationReport r;
  r.phase_timings = {{"setup", 1000, 1010, 10},
                     {"precopy", 1010, 1500, 490},
                     {"postcopy-paused", 1500, 1600, 100}};
  const ferry::v1::MigrationReport p = ToProto(r);
  ASSERT_EQ(p.phase_timings_size(), 3);
  EXPECT_EQ(p.phase_timings(0).phase(), ferry::v1::MIGRATION_PHASE_SETUP);
  EXPECT_EQ(p.phase_timings(2).phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED);
  EXPECT_EQ(p.phase_timings(1).start_unix_ms(), 1010);
  EXPECT_EQ(p.phase_timings(1).end_unix_ms(), 1500);
  EXPECT_EQ(p.phase_timings(1).duration_ms(), 490);
  const migration::MigrationReport back = FromProto(p, "mig-1");
  ASSERT_EQ(back.phase_timings.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back.phase_timings[i].phase, r.phase_timings[i].phase);
    EXPECT_EQ(back.phase_timings[i].start_unix_ms, r.phase_timings[i].start_unix_ms);
    EXPECT_EQ(back.phase_timings[i].end_unix_ms, r.phase_timings[i].end_unix_ms);
    EXPECT_EQ(back.phase_timings[i].duration_ms, r.phase_timings[i].duration_ms);
  }
  EXPECT_THAT(back.ToJson().ToString(),
              ::testing::HasSubstr("\"phase_timings\":[{\"phase\":\"setup\",\"start_unix_ms\":"
                                   "1000,\"end_unix_ms\":1010,\"duration_ms\":10"));
}

}  // namespace
}  // namespace ferry::api
