#include "migration/phases.h"

namespace ferry::migration {
namespace {

using ferry::v1::MigrationPhase;

constexpr PhaseFacts kRows[] = {
    // phase, name, under way, past switchover, in postcopy
    {ferry::v1::MIGRATION_PHASE_SETUP, "setup", true, false, false},
    {ferry::v1::MIGRATION_PHASE_PRECOPY, "precopy", true, false, false},
    {ferry::v1::MIGRATION_PHASE_SWITCHOVER, "switchover", true, true, false},
    {ferry::v1::MIGRATION_PHASE_POSTCOPY, "postcopy", true, true, true},
    {ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED, "postcopy-paused", true, true, true},
    {ferry::v1::MIGRATION_PHASE_COMPLETED, "completed", false, false, false},
    {ferry::v1::MIGRATION_PHASE_FAILED, "failed", false, false, false},
    {ferry::v1::MIGRATION_PHASE_CANCELLED, "cancelled", false, false, false},
};
constexpr PhaseFacts kUnknown = {ferry::v1::MIGRATION_PHASE_UNSPECIFIED, "unknown", false,
                                 false, false};

constexpr struct {
  SourcePhase from;
  MigrationPhase to;
} kSource[] = {
    {SourcePhase::kSetup, ferry::v1::MIGRATION_PHASE_SETUP},
    {SourcePhase::kPrecopy, ferry::v1::MIGRATION_PHASE_PRECOPY},
    {SourcePhase::kSwitchover, ferry::v1::MIGRATION_PHASE_SWITCHOVER},
    {SourcePhase::kPostcopy, ferry::v1::MIGRATION_PHASE_POSTCOPY},
    {SourcePhase::kPostcopyPaused, ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED},
    {SourcePhase::kCompleted, ferry::v1::MIGRATION_PHASE_COMPLETED},
    {SourcePhase::kFailed, ferry::v1::MIGRATION_PHASE_FAILED},
    {SourcePhase::kCancelled, ferry::v1::MIGRATION_PHASE_CANCELLED},
};

constexpr struct {
  DestinationState from;
  MigrationPhase to;
} kDestination[] = {
    {DestinationState::kAccepting, ferry::v1::MIGRATION_PHASE_SETUP},
    {DestinationState::kReceivingPrecopy, ferry::v1::MIGRATION_PHASE_PRECOPY},
    {DestinationState::kPostcopy, ferry::v1::MIGRATION_PHASE_POSTCOPY},
    {DestinationState::kPostcopyPaused, ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED},
    {DestinationState::kCompleted, ferry::v1::MIGRATION_PHASE_COMPLETED},
    {DestinationState::kFailed, ferry::v1::MIGRATION_PHASE_FAILED},
};

}  // namespace

MigrationPhase PhaseOf(SourcePhase p) {
  for (const auto& row : kSource)
    if (row.from == p) return row.to;
  return ferry::v1::MIGRATION_PHASE_UNSPECIFIED;
}

MigrationPhase PhaseOf(DestinationState s) {
  for (const auto& row : kDestination)
    if (row.from == s) return row.to;
  return ferry::v1::MIGRATION_PHASE_UNSPECIFIED;
}

const PhaseFacts& FactsOf(MigrationPhase phase) {
  for (const PhaseFacts& row : kRows)
    if (row.phase == phase) return row;
  return kUnknown;
}

}  // namespace ferry::migration
