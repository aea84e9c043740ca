// The source session's state machine (docs/architecture.md draws it).
//
//   connecting --Accepted--> accepted --precopy/hybrid--> precopy
//   accepted --postcopy mode--> paused
//   precopy --policy: postcopy, stale pages--> discarding --> paused
//   precopy --policy: stop-and-copy or postcopy--> paused
//   paused --Switchover sent--> switching-over --Resumed--> postcopy
//   postcopy --Complete sent--> completing --Completed--> releasing --> completed
//   switching-over, postcopy, completing --stream broke--> postcopy-paused
//   postcopy-paused --Reconnect, Recovered--> postcopy
//   postcopy-paused --Reconnect, Completed--> releasing
//   connecting..paused --Cancel()--> cancelling --> cancelled
//   any but a final state --error--> failed
//
// Until `switching-over` the source VM is authoritative: leaving any earlier
// state for `failed` or `cancelled` resumes it (invariant 2 of
// docs/architecture.md). From `switching-over` on the destination may run
// the VM, so cancelling is refused and a failure keeps the source's memory.
//
// Which destination messages each state accepts is here too: a message that
// does not fit the state is a protocol error naming both.
#ifndef FERRY_MIGRATION_SOURCE_STATE_H_
#define FERRY_MIGRATION_SOURCE_STATE_H_

#include "absl/status/status.h"
#include "ferry/v1/migration.pb.h"

namespace ferry::migration {

enum class SourceState {
  kConnecting,     // stream opened, Hello sent, waiting for Accepted
  kAccepted,       // the destination created the VM with every page missing
  kPrecopy,        // rounds of pages while the source VM runs
  kDiscarding,     // going postcopy: stale pages dropped while the VM runs
  kPaused,         // the source VM is paused; final pages and state going out
  kSwitchingOver,  // Switchover sent: the destination may run the VM
  kPostcopy,       // the destination runs the VM; the rest is pushed
  kCompleting,     // Complete sent; waiting for the destination's Completed
  kPostcopyPaused, // the stream broke after switchover: reconnecting
  kReleasing,      // the destination holds every page; the source VM is released
  kCompleted,
  kCancelling,     // Cancel() was called; the session thread is unwinding
  kCancelled,
  kFailed,
};

const char* SourceStateName(SourceState state);

// completed, cancelled or failed.
bool IsFinal(SourceState state);

// Whether the destination may already run the VM (switching-over and later,
// up to completed, postcopy-paused included).
bool DestinationMayRun(SourceState state);

// OK if `from` -> `to` is a transition of the diagram above, else
// FailedPrecondition naming both.
absl::Status CheckTransition(SourceState from, SourceState to);

// OK if the destination may send a message of `kind` while the source is
// in `state`, else FailedPrecondition naming both.
absl::Status CheckDestinationMessage(SourceState state,
                                     ferry::v1::DestinationMessage::MsgCase kind);

// The name of a destination message kind, for errors and logs.
const char* DestinationMessageName(ferry::v1::DestinationMessage::MsgCase kind);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SOURCE_STATE_H_
