// The switchover policy: after each precopy round's dirty scan, decide
// whether to go on copying, switch over with stop-and-copy, switch over into
// postcopy, or give up. A pure function of what was measured, so it is
// tested without a VM.
//
// Rules, in order:
//  1. The pages still to send fit the downtime target at the measured
//     bandwidth: stop-and-copy (every mode).
//  2. Postcopy mode: postcopy (it switches right after setup).
//  3. The rounds stopped converging (the set to send has not shrunk below
//     90% of its smallest size for 3 rounds) or max_rounds is reached:
//     hybrid goes postcopy; precopy fails with the reason.
//  4. Otherwise another round.
#ifndef FERRY_MIGRATION_SWITCHOVER_POLICY_H_
#define FERRY_MIGRATION_SWITCHOVER_POLICY_H_

#include <cstdint>
#include <string>

#include "migration/options.h"

namespace ferry::migration {

enum class Decision { kNextRound, kStopAndCopy, kPostcopy, kFail };
const char* DecisionName(Decision d);

struct RoundFacts {
  int rounds_done = 0;          // completed precopy rounds (round 0 included)
  uint64_t pages_to_send = 0;   // dirty since the last round
  double bandwidth_bps = 0;     // bytes per second measured so far
  uint64_t smallest_to_send = 0;  // smallest pages_to_send seen in earlier rounds
  int rounds_without_progress = 0;  // consecutive rounds not below 90% of it
  uint32_t page_size = 4096;
};

struct PolicyDecision {
  Decision decision = Decision::kNextRound;
  std::string reason;
};

PolicyDecision DecideAfterRound(const MigrationOptions& options, const RoundFacts& facts);

// Updates smallest_to_send and rounds_without_progress with a new round's
// pages_to_send (call before DecideAfterRound).
void TrackConvergence(RoundFacts* facts, uint64_t pages_to_send);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SWITCHOVER_POLICY_H_
