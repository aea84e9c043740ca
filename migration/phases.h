// The phases of a migration, written out once. Each side's engine state
// (SourcePhase, DestinationState) maps to one ferry.v1.MigrationPhase, and
// each MigrationPhase has one row of facts that the agent's shutdown, its
// listings, its metrics and the destination's service all read from here:
//
//   phase            name              under way  past switchover  in postcopy
//   setup            setup             yes        no               no
//   precopy          precopy           yes        no               no
//   switchover       switchover        yes        yes              no
//   postcopy         postcopy          yes        yes              yes
//   postcopy-paused  postcopy-paused   yes        yes              yes
//   completed        completed         no         -                no
//   failed           failed            no         -                no
//   cancelled        cancelled         no         -                no
//
// "Past switchover" while under way is what an agent must not drop: the VM
// then exists only as both halves (the source's page server and the
// destination's running VM), so a shutdown waits for it.
#ifndef FERRY_MIGRATION_PHASES_H_
#define FERRY_MIGRATION_PHASES_H_

#include "ferry/v1/control.pb.h"

namespace ferry::migration {

// The source's coarse phase (SourceSession::Progress).
enum class SourcePhase {
  kSetup,
  kPrecopy,
  kSwitchover,
  kPostcopy,
  kCompleted,
  kFailed,
  kCancelled,
  kPostcopyPaused,
};

// The destination session's state.
enum class DestinationState {
  kAccepting,
  kReceivingPrecopy,
  kPostcopy,
  kCompleted,
  kFailed,
  kPostcopyPaused,  // the stream broke after switchover; the VM runs on
};

struct PhaseFacts {
  ferry::v1::MigrationPhase phase;
  const char* name;       // as operators read it (api::Spelling agrees)
  bool under_way;         // not ended
  bool past_switchover;   // under way after switchover: must finish
  bool in_postcopy;       // the VM runs at the destination with pages missing
};

ferry::v1::MigrationPhase PhaseOf(SourcePhase p);
ferry::v1::MigrationPhase PhaseOf(DestinationState s);
// The row of `phase`; UNSPECIFIED and unknown numbers get a row that is
// ended and named "unknown".
const PhaseFacts& FactsOf(ferry::v1::MigrationPhase phase);

inline bool MustFinish(SourcePhase p) { return FactsOf(PhaseOf(p)).past_switchover; }
inline bool MustFinish(DestinationState s) { return FactsOf(PhaseOf(s)).past_switchover; }
inline bool InPostcopy(DestinationState s) { return FactsOf(PhaseOf(s)).in_postcopy; }

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_PHASES_H_
