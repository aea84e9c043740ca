// The phase table (migration/phases.h): every engine state has a phase,
// every phase a row, names agree with the API's spelling, and the facts
// the agent's shutdown relies on hold.
#include "migration/phases.h"

#include "gtest/gtest.h"
#include "migration/api/names.h"

namespace ferry::migration {
namespace {

using ferry::v1::MigrationPhase;

TEST(Phases, EveryPhaseHasOneRowNamedAsTheApiSpellsIt) {
  for (int p = ferry::v1::MIGRATION_PHASE_SETUP; p <= ferry::v1::MigrationPhase_MAX; ++p) {
    const auto phase = static_cast<MigrationPhase>(p);
    const PhaseFacts& f = FactsOf(phase);
    EXPECT_EQ(f.phase, phase) << p;
    EXPECT_EQ(f.name, api::Spelling(phase)) << p;
    // Past switchover and in postcopy are kinds of "under way".
    if (f.past_switchover || f.in_postcopy) EXPECT_TRUE(f.under_way) << f.name;
    if (f.in_postcopy) EXPECT_TRUE(f.past_switchover) << f.name;
  }
  EXPECT_FALSE(FactsOf(ferry::v1::MIGRATION_PHASE_UNSPECIFIED).under_way);
  EXPECT_STREQ(FactsOf(static_cast<MigrationPhase>(99)).name, "unknown");
}

TEST(Phases, EveryEngineStateMapsToAPhase) {
  for (int s = 0; s <= static_cast<int>(SourcePhase::kPostcopyPaused); ++s)
    EXPECT_NE(PhaseOf(static_cast<SourcePhase>(s)), ferry::v1::MIGRATION_PHASE_UNSPECIFIED) << s;
  for (int s = 0; s <= static_cast<int>(DestinationState::kPostcopyPaused); ++s)
    EXPECT_NE(PhaseOf(static_cast<DestinationState>(s)), ferry::v1::MIGRATION_PHASE_UNSPECIFIED)
        << s;
}

// What a shutdown waits for: a migration past switchover that has not
// ended, paused in postcopy included, on either side.
TEST(Phases, AMigrationPausedInPostcopyMustFinish) {
  EXPECT_TRUE(MustFinish(SourcePhase::kSwitchover));
  EXPECT_TRUE(MustFinish(SourcePhase::kPostcopy));
  EXPECT_TRUE(MustFinish(SourcePhase::kPostcopyPaused));
  EXPECT_TRUE(MustFinish(DestinationState::kPostcopy));
  EXPECT_TRUE(MustFinish(DestinationState::kPostcopyPaused));
  for (SourcePhase p : {SourcePhase::kSetup, SourcePhase::kPrecopy, SourcePhase::kCompleted,
                        SourcePhase::kFailed, SourcePhase::kCancelled})
    EXPECT_FALSE(MustFinish(p)) << FactsOf(PhaseOf(p)).name;
  for (DestinationState s : {DestinationState::kAccepting, DestinationState::kReceivingPrecopy,
                             DestinationState::kCompleted, DestinationState::kFailed})
    EXPECT_FALSE(MustFinish(s)) << FactsOf(PhaseOf(s)).name;
  EXPECT_TRUE(InPostcopy(DestinationState::kPostcopyPaused));
  EXPECT_FALSE(InPostcopy(DestinationState::kCompleted));
}

}  // namespace
}  // namespace ferry::migration
