// Live parameters: what an operator may change on a running outgoing
// migration (the max bandwidth, the downtime target), which changes the
// current state admits, and the record of each change for the report.
//
// CheckParameterUpdate() is a pure function of the request and the
// session's state, so the rules are tested without a VM; SourceSession
// calls it under its lock and applies the whole update or nothing.
//
// When a change takes effect (docs/architecture.md, "Changing a running
// migration"):
//  - max bandwidth: from the next frame the source sends (precopy, the
//    stop-and-copy rest, the postcopy push and demand pages): any state
//    before the migration ends.
//  - downtime target: at the next switchover decision (the end of the
//    current precopy round, or the next sample of round 0): only before
//    switchover (connecting, accepted, precopy).
//  - streams: at the start of the next precopy round after round 0, once
//    the destination has installed every frame sent so far (data streams
//    flushed, the last RoundEnd acknowledged on the main stream), so a
//    page striped onto another stream than before can never be overtaken
//    by its older copy. Raising it opens and joins the new data streams
//    then; one that cannot join leaves the count at what joined. Only
//    while precopy can still send (connecting, accepted, precopy), and not
//    in postcopy mode (SourceSession checks the mode).
#ifndef FERRY_MIGRATION_LIVE_PARAMETERS_H_
#define FERRY_MIGRATION_LIVE_PARAMETERS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "migration/options.h"
#include "migration/source_state.h"

namespace ferry::migration {

// What to change; an absent field stays as it is.
struct ParameterUpdate {
  std::optional<uint64_t> max_bandwidth;      // bytes per second; 0: no cap
  std::optional<int64_t> downtime_target_ms;  // > 0
  // Streams carrying precopy pages, the main one included: 1 to 8.
  std::optional<int> streams;
};

// One applied change, as the report records it.
struct ParameterChange {
  double time_ms = 0;     // since the migration started
  std::string parameter;  // "max_bandwidth", "downtime_target_ms" or "streams"
  int64_t old_value = 0;
  int64_t new_value = 0;
};

// OK if `update` may be applied to migration `id` in `state`. Otherwise
// InvalidArgument (nothing to change, a value out of range) or
// FailedPrecondition (the migration ended, or the downtime target is past
// its use), each naming the parameter and the state.
absl::Status CheckParameterUpdate(const std::string& id, SourceState state,
                                  const ParameterUpdate& update);

// OK if a migration of `mode` in `state` may be switched to postcopy now
// (SourceSession::StartPostcopy): a hybrid migration before switchover
// (connecting, accepted, precopy). Otherwise FailedPrecondition with the
// reason: precopy mode (its destination did not prepare demand paging),
// postcopy mode (it switches right after setup anyway), or the state
// (already switching over or past it, or ended).
absl::Status CheckStartPostcopy(const std::string& id, MigrationMode mode, SourceState state);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_LIVE_PARAMETERS_H_
