// The switchover policy: after each precopy round's dirty scan, decide
// whether to go on copying, switch over with stop-and-copy, switch over into
// postcopy, or give up. A pure function of what was measured, so it is
// tested from recorded round figures without a VM.
//
// Rules, in order (B: the bandwidth measured over the last round):
//  1. Every stale page (dirty since sent, or held back) fits the downtime
//     target at B: stop-and-copy (every mode).
//  2. Postcopy mode: postcopy (it switches right after setup).
//  3. The guest dirtied memory during the last round at least as fast as B:
//     precopy can never catch up.
//  4. The hot set (pages dirtied in each of the last two rounds: they will
//     be dirty again at the pause) alone takes longer than the target at B:
//     no pause can fit them.
//  5. The trend: the stale set has not shrunk below 90% of the round
//     before for the last two rounds.
//  6. max_rounds is reached.
// When 3-6 hold ("cannot converge"): with auto-converge on and the guest's
// throttle below its ceiling, raise the throttle (kThrottle: the initial
// percent, then one step more each time) and go on; at the ceiling, go on
// until two whole rounds ran under it (the hot set and the trend span two
// rounds: judged only on rounds the ceiling slowed); otherwise hybrid
// switches to postcopy and precopy fails, each with a reason that names
// the figures (precopy's also the remedies; at the ceiling, that it was
// reached). Otherwise another round.
//
// During round 0 (the first full copy) the source samples the dirty log,
// and a hybrid migration decides from the first figures
// (DecideDuringFirstRound): when the guest writes pages at half the link's
// rate or more, most of what precopy sends would be sent again, so it
// switches to postcopy at once instead of finishing the round; unless
// auto-converge is on, which throttles the guest at the end of round 0
// instead (the operator asked to slow the guest rather than go postcopy).
//
// The sender's side (SourceSession): hot pages are not resent in the next
// round; they wait for the pause (stop-and-copy) or postcopy.
#ifndef FERRY_MIGRATION_SWITCHOVER_POLICY_H_
#define FERRY_MIGRATION_SWITCHOVER_POLICY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "migration/options.h"

namespace ferry::migration {

// kThrottle: another round, with the guest throttled to
// PolicyDecision::throttle_percent (auto-converge).
enum class Decision { kNextRound, kStopAndCopy, kPostcopy, kFail, kThrottle };
const char* DecisionName(Decision d);

// What one precopy round measured (all after its dirty scan).
struct RoundFacts {
  int rounds_done = 0;         // precopy rounds completed (round 0 included)
  uint64_t pages_stale = 0;    // pages the destination lacks or holds stale
  uint64_t pages_hot = 0;      // of those, dirtied in each of the last two rounds
  uint64_t pages_dirtied = 0;  // pages written during the round just ended
  double round_seconds = 0;    // how long that round took
  double bandwidth_bps = 0;    // bytes per second the last round sent at
  uint32_t page_size = 4096;
  // The guest's throttle during the round (auto-converge), 0 to 99, and
  // how many rounds (this one included) ran whole under it.
  int throttle_percent = 0;
  int rounds_at_throttle = 0;
  // pages_stale after each earlier round, oldest first (the trend).
  std::vector<uint64_t> history;
};

struct PolicyDecision {
  Decision decision = Decision::kNextRound;
  std::string reason;
  int throttle_percent = 0;  // kThrottle: the guest's new throttle
};

// Auto-converge's next throttle after `current`: throttle_initial from
// below it, else one throttle_step more, never above throttle_max.
int NextThrottlePercent(const MigrationOptions& options, int current);

PolicyDecision DecideAfterRound(const MigrationOptions& options, const RoundFacts& facts);

// A sample of the dirty log taken while round 0 runs.
struct FirstRoundSample {
  double seconds = 0;          // since round 0 began
  uint64_t pages_sent = 0;     // so far
  uint64_t pages_total = 0;    // the VM's
  uint64_t pages_dirtied = 0;  // distinct pages written since round 0 began
  double bandwidth_bps = 0;    // what round 0 has sent at so far
  uint32_t page_size = 4096;
};

// Hybrid only: kPostcopy (with the figures) when the guest writes at half
// the link's rate or more; otherwise kNextRound (finish round 0).
PolicyDecision DecideDuringFirstRound(const MigrationOptions& options,
                                      const FirstRoundSample& sample);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SWITCHOVER_POLICY_H_
