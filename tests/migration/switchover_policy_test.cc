// The switchover policy, from recorded round figures: each case is a
// sequence of rounds as a source measured them (pages dirtied, hot, stale,
// round time, bandwidth) and the decision the policy must reach, and when.
#include "migration/switchover_policy.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = 1 << 20;

MigrationOptions Mode(MigrationMode m) {
  MigrationOptions o;
  o.mode = m;
  o.downtime_target_ms = 50;
  o.max_rounds = 10;
  return o;
}

// One recorded round.
struct Round {
  uint64_t dirtied;
  uint64_t hot;
  uint64_t stale;
  double seconds;
  double bps;
};

// Plays `rounds` through the policy and returns the first decision that is
// not "next round" and the round it came after (0: none came).
std::pair<PolicyDecision, int> Play(const MigrationOptions& o, const std::vector<Round>& rounds) {
  RoundFacts f;
  for (size_t i = 0; i < rounds.size(); ++i) {
    if (f.rounds_done > 0) f.history.push_back(f.pages_stale);
    f.rounds_done = static_cast<int>(i) + 1;
    f.pages_dirtied = rounds[i].dirtied;
    f.pages_hot = rounds[i].hot;
    f.pages_stale = rounds[i].stale;
    f.round_seconds = rounds[i].seconds;
    f.bandwidth_bps = rounds[i].bps;
    PolicyDecision d = DecideAfterRound(o, f);
    if (d.decision != Decision::kNextRound) return {d, f.rounds_done};
  }
  return {PolicyDecision{}, 0};
}

TEST(SwitchoverPolicy, ConvergingRoundsEndInStopAndCopy) {
  // A guest writing a cold set that halves each round, on a 1 GB/s link: the
  // rest fits 50 ms (12k pages) after round 4.
  std::vector<Round> rounds = {{100000, 0, 100000, 1.1, 1e9},
                               {50000, 1000, 50000, 0.4, 1e9},
                               {25000, 800, 25000, 0.2, 1e9},
                               {11000, 700, 11000, 0.1, 1e9}};
  for (auto m : {MigrationMode::kPrecopy, MigrationMode::kHybrid}) {
    auto [d, round] = Play(Mode(m), rounds);
    EXPECT_EQ(d.decision, Decision::kStopAndCopy) << MigrationModeName(m);
    EXPECT_EQ(round, 4);
    EXPECT_THAT(d.reason, HasSubstr("11000 stale pages fit the 50 ms downtime target"));
  }
}

TEST(SwitchoverPolicy, AHotSetSwitchesAtOnceInsteadOfResending) {
  // The demo's zipf guest: 200k pages dirtied in round 1, and 190k of them
  // again in round 2. Those 190k (740 MiB) take 0.9 s at 850 MB/s: no
  // pause can fit them, so hybrid goes postcopy after round 2 (the old
  // policy waited for three rounds that failed to shrink).
  std::vector<Round> rounds = {{200000, 0, 200000, 1.3, 850e6},
                               {195000, 190000, 195000, 0.95, 850e6},
                               {195000, 190000, 195000, 0.95, 850e6}};
  auto [d, round] = Play(Mode(MigrationMode::kHybrid), rounds);
  EXPECT_EQ(d.decision, Decision::kPostcopy);
  EXPECT_EQ(round, 2);
  EXPECT_THAT(d.reason, HasSubstr("190000 hot pages"));
  EXPECT_THAT(d.reason, HasSubstr("no pause can fit them"));
  auto [p, precopy_round] = Play(Mode(MigrationMode::kPrecopy), rounds);
  EXPECT_EQ(p.decision, Decision::kFail);
  EXPECT_EQ(precopy_round, 2);
}

TEST(SwitchoverPolicy, ASmallHotSetWaitsForThePause) {
  // 2000 hot pages (8 MiB, 8 ms at 1 GB/s) fit the pause: keep going while
  // the cold set shrinks.
  std::vector<Round> rounds = {
      {40000, 0, 40000, 0.5, 1e9}, {20000, 2000, 20000, 0.2, 1e9}, {10000, 2000, 10000, 0.1, 1e9}};
  auto [d, round] = Play(Mode(MigrationMode::kHybrid), rounds);
  EXPECT_EQ(d.decision, Decision::kStopAndCopy);
  EXPECT_EQ(round, 3);
}

TEST(SwitchoverPolicy, ADirtyRateAboveTheBandwidthSwitchesAfterTheFirstRound) {
  // Round 0 (1 GiB at 1 GB/s, 1.07 s) saw 300k pages written: 1.15 GB/s,
  // more than the link. Decided after the first round.
  std::vector<Round> rounds = {{300000, 0, 300000, 1.07, 1e9}};
  auto [d, round] = Play(Mode(MigrationMode::kHybrid), rounds);
  EXPECT_EQ(d.decision, Decision::kPostcopy);
  EXPECT_EQ(round, 1);
  EXPECT_THAT(d.reason, HasSubstr("the guest dirties 1148 MB/s"));
  EXPECT_THAT(d.reason, HasSubstr("at least the 1000 MB/s the link carries"));
}

TEST(SwitchoverPolicy, ARisingDirtyRateIsJudgedOnTheTrend) {
  // No hot set to speak of, but each round the guest writes more: the
  // stale set does not shrink for two rounds in a row.
  // (Each round dirties below the link's rate, about 800 MB/s.)
  std::vector<Round> rounds = {{60000, 100, 60000, 0.6, 1e9},
                               {58000, 100, 58000, 0.3, 1e9},
                               {62000, 100, 62000, 0.32, 1e9},
                               {70000, 100, 70000, 0.36, 1e9}};
  auto [d, round] = Play(Mode(MigrationMode::kPrecopy), rounds);
  EXPECT_EQ(d.decision, Decision::kFail);
  EXPECT_EQ(round, 3);
  EXPECT_THAT(d.reason, HasSubstr("stopped converging: the stale set went 60000 -> 58000 -> "
                                  "62000 pages"));
  // One round that fails to shrink is not yet a trend.
  std::vector<Round> one = {{60000, 100, 60000, 0.6, 1e9}, {58000, 100, 58000, 0.3, 1e9}};
  EXPECT_EQ(Play(Mode(MigrationMode::kPrecopy), one).second, 0);
}

TEST(SwitchoverPolicy, ABandwidthCapMakesTheSameGuestSwitch) {
  // The same guest as the converging case, on a link capped at 32 MiB/s: it
  // dirties 100000 pages in 1.1 s (372 MB/s), far beyond the cap.
  const double cap = 32.0 * kMiB;
  std::vector<Round> rounds = {{100000, 0, 100000, 1.1, cap}};
  auto [d, round] = Play(Mode(MigrationMode::kHybrid), rounds);
  EXPECT_EQ(d.decision, Decision::kPostcopy);
  EXPECT_EQ(round, 1);
  EXPECT_THAT(d.reason, HasSubstr("precopy cannot converge"));
}

TEST(SwitchoverPolicy, APrecopyThatFailsNamesTheRemedies) {
  const double cap = 32.0 * kMiB;
  std::vector<Round> rounds = {{100000, 0, 100000, 1.1, cap}};
  auto [d, round] = Play(Mode(MigrationMode::kPrecopy), rounds);
  EXPECT_EQ(d.decision, Decision::kFail);
  EXPECT_THAT(d.reason, HasSubstr("precopy cannot converge"));
  EXPECT_THAT(d.reason, HasSubstr("--mode hybrid"));
  EXPECT_THAT(d.reason, HasSubstr("--mode postcopy"));
  EXPECT_THAT(d.reason, HasSubstr("--max-bandwidth"));
  // Hybrid goes postcopy: no remedy needed.
  auto [h, r] = Play(Mode(MigrationMode::kHybrid), rounds);
  EXPECT_THAT(h.reason, Not(HasSubstr("remedies")));
}

TEST(SwitchoverPolicy, PostcopyModeSwitchesAndTheRoundLimitHolds) {
  RoundFacts f;
  f.rounds_done = 1;
  f.pages_stale = 100000;
  f.bandwidth_bps = 1e9;
  EXPECT_EQ(DecideAfterRound(Mode(MigrationMode::kPostcopy), f).decision, Decision::kPostcopy);
  f.rounds_done = 10;
  PolicyDecision d = DecideAfterRound(Mode(MigrationMode::kPrecopy), f);
  EXPECT_EQ(d.decision, Decision::kFail);
  EXPECT_THAT(d.reason, HasSubstr("10 precopy rounds (the limit)"));
  f.pages_stale = 0;
  EXPECT_EQ(DecideAfterRound(Mode(MigrationMode::kPrecopy), f).decision, Decision::kStopAndCopy);
}

}  // namespace
}  // namespace ferry::migration

namespace ferry::migration {
namespace {

MigrationOptions AutoConverge(MigrationMode m) {
  MigrationOptions o = Mode(m);
  o.auto_converge = true;
  o.throttle_initial = 20;
  o.throttle_step = 10;
  o.throttle_max = 50;
  return o;
}

// A round that cannot converge: the guest dirties 372 MB/s on a 32 MiB/s link.
RoundFacts Stuck(int throttle_percent, int rounds_at_throttle = 2) {
  RoundFacts f;
  f.rounds_at_throttle = rounds_at_throttle;
  f.rounds_done = 3;
  f.pages_dirtied = 100000;
  f.pages_stale = 100000;
  f.round_seconds = 1.1;
  f.bandwidth_bps = 32.0 * kMiB;
  f.throttle_percent = throttle_percent;
  return f;
}

TEST(SwitchoverPolicy, NextThrottleStartsAtInitialStepsAndStopsAtTheCeiling) {
  const MigrationOptions o = AutoConverge(MigrationMode::kPrecopy);
  EXPECT_EQ(NextThrottlePercent(o, 0), 20);
  EXPECT_EQ(NextThrottlePercent(o, 20), 30);
  EXPECT_EQ(NextThrottlePercent(o, 40), 50);
  EXPECT_EQ(NextThrottlePercent(o, 45), 50);
  EXPECT_EQ(NextThrottlePercent(o, 50), 50);
}

TEST(SwitchoverPolicy, AutoConvergeThrottlesInsteadOfFailing) {
  const MigrationOptions o = AutoConverge(MigrationMode::kPrecopy);
  std::vector<int> seen;
  int throttle = 0;
  for (int i = 0; i < 10; ++i) {
    PolicyDecision d = DecideAfterRound(o, Stuck(throttle));
    if (d.decision != Decision::kThrottle) {
      // At the ceiling and still stuck: it fails, and says the ceiling was reached.
      EXPECT_EQ(d.decision, Decision::kFail);
      EXPECT_THAT(d.reason, HasSubstr("throttled to 50%"));
      EXPECT_THAT(d.reason, HasSubstr("--throttle-max"));
      break;
    }
    EXPECT_THAT(d.reason, HasSubstr("precopy cannot converge"));
    EXPECT_THAT(d.reason, HasSubstr("auto-converge"));
    throttle = d.throttle_percent;
    seen.push_back(throttle);
  }
  EXPECT_EQ(seen, (std::vector<int>{20, 30, 40, 50}));
  // At the ceiling it fails only once two whole rounds ran under it (the
  // hot set and the trend span two rounds).
  EXPECT_EQ(DecideAfterRound(o, Stuck(50, 1)).decision, Decision::kNextRound);
  EXPECT_EQ(DecideAfterRound(o, Stuck(50, 2)).decision, Decision::kFail);
  // Below it, each stuck round raises it at once.
  EXPECT_EQ(DecideAfterRound(o, Stuck(30, 1)).decision, Decision::kThrottle);
  // A round that converges under the throttle switches over as usual.
  RoundFacts f = Stuck(30);
  f.pages_stale = 100;
  EXPECT_EQ(DecideAfterRound(o, f).decision, Decision::kStopAndCopy);
}

TEST(SwitchoverPolicy, HybridWithAutoConvergeThrottlesFirstThenGoesPostcopy) {
  const MigrationOptions o = AutoConverge(MigrationMode::kHybrid);
  EXPECT_EQ(DecideAfterRound(o, Stuck(0)).decision, Decision::kThrottle);
  PolicyDecision d = DecideAfterRound(o, Stuck(50));
  EXPECT_EQ(d.decision, Decision::kPostcopy);
  EXPECT_THAT(d.reason, HasSubstr("throttled to 50%"));
  // Round 0's early switch to postcopy is left to the throttle.
  FirstRoundSample s;
  s.seconds = 1;
  s.pages_sent = 1000;
  s.pages_total = 100000;
  s.pages_dirtied = 100000;
  s.bandwidth_bps = 32.0 * kMiB;
  EXPECT_EQ(DecideDuringFirstRound(Mode(MigrationMode::kHybrid), s).decision, Decision::kPostcopy);
  EXPECT_EQ(DecideDuringFirstRound(o, s).decision, Decision::kNextRound);
}

TEST(SwitchoverPolicy, WithoutAutoConvergeTheFailureNamesIt) {
  PolicyDecision d = DecideAfterRound(Mode(MigrationMode::kPrecopy), Stuck(0));
  EXPECT_EQ(d.decision, Decision::kFail);
  EXPECT_THAT(d.reason, HasSubstr("--auto-converge"));
}

}  // namespace
}  // namespace ferry::migration
