#include "migration/live_parameters.h"

#include "absl/strings/str_format.h"
#include "migration/protocol.h"

namespace ferry::migration {

absl::Status CheckParameterUpdate(const std::string& id, SourceState state,
                                  const ParameterUpdate& update) {
  if (!update.max_bandwidth && !update.downtime_target_ms && !update.streams)
    return absl::InvalidArgumentError(
        "nothing to change: give a max bandwidth, a downtime target or streams");
  if (update.streams && (*update.streams < 1 || *update.streams > kMaxStreamsPerMigration))
    return absl::InvalidArgumentError(
        absl::StrFormat("%d streams: give 1 to %d", *update.streams, kMaxStreamsPerMigration));
  if (update.downtime_target_ms && *update.downtime_target_ms <= 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "downtime target %d ms: it must be at least 1 ms", *update.downtime_target_ms));
  if (IsFinal(state) || state == SourceState::kCancelling)
    return absl::FailedPreconditionError(
        absl::StrFormat("migration %s is %s: it no longer runs, so nothing can be changed", id,
                        SourceStateName(state)));
  if (update.downtime_target_ms && state != SourceState::kConnecting &&
      state != SourceState::kAccepted && state != SourceState::kPrecopy)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s is %s: the downtime target only applies before switchover (it decides "
        "when precopy stops), so it cannot be changed now",
        id, SourceStateName(state)));
  if (update.streams && state != SourceState::kConnecting && state != SourceState::kAccepted &&
      state != SourceState::kPrecopy)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s is %s: the stream count changes between precopy rounds, and precopy "
        "has stopped, so it cannot be changed now",
        id, SourceStateName(state)));
  return absl::OkStatus();
}

absl::Status CheckStartPostcopy(const std::string& id, MigrationMode mode, SourceState state) {
  if (IsFinal(state) || state == SourceState::kCancelling)
    return absl::FailedPreconditionError(
        absl::StrFormat("migration %s is %s: it no longer runs", id, SourceStateName(state)));
  if (mode == MigrationMode::kPrecopy)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s runs in precopy mode: its destination did not prepare demand paging, so "
        "it cannot go postcopy (start it with --mode hybrid to keep that choice open)",
        id));
  if (mode == MigrationMode::kPostcopy)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s runs in postcopy mode: it switches to postcopy right after setup", id));
  if (state != SourceState::kConnecting && state != SourceState::kAccepted &&
      state != SourceState::kPrecopy)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s is %s: precopy has already stopped, so it cannot be switched to "
        "postcopy now",
        id, SourceStateName(state)));
  return absl::OkStatus();
}

}  // namespace ferry::migration
