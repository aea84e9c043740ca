// MigrationOptions: everything a caller chooses about one migration, given
// once and immutable afterwards (no global switches in the data path).
#ifndef FERRY_MIGRATION_OPTIONS_H_
#define FERRY_MIGRATION_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migration/api/defaults.h"
#include "vmm/demand_pager.h"

namespace ferry::migration {

enum class MigrationMode { kPrecopy = 1, kPostcopy, kHybrid };

absl::StatusOr<MigrationMode> ParseMigrationMode(absl::string_view name);
const char* MigrationModeName(MigrationMode mode);

struct MigrationOptions {
  MigrationMode mode = MigrationMode::kHybrid;        // api::kDefaultMode
  vmm::FaultMode fault_mode = vmm::FaultMode::kExit;  // api::kDefaultFaultMode
  // Switch over once the rest can be sent within this pause.
  int64_t downtime_target_ms = api::kDefaultDowntimeTargetMs;
  // Bytes per second for everything the migration sends: precopy, the
  // push and demand pages (these go first, the push makes room); 0: none.
  uint64_t max_bandwidth = 0;
  // Precopy rounds before precopy mode gives up (hybrid: goes postcopy).
  int max_rounds = api::kDefaultMaxRounds;
  // Auto-converge: when precopy cannot converge, throttle the guest's vCPUs
  // (vmm/throttle.h) instead of giving up: throttle_initial percent, then
  // throttle_step more after each further round that cannot, up to
  // throttle_max; only at the ceiling does precopy fail (hybrid: go
  // postcopy). Percentages 1 to 99, initial <= max.
  bool auto_converge = false;
  int throttle_initial = api::kDefaultThrottleInitial;
  int throttle_step = api::kDefaultThrottleStep;
  int throttle_max = api::kDefaultThrottleMax;
  // Identifies the migration to both agents and the fetch channel; 1-64
  // bytes. Generated when empty.
  std::string migration_id;
  // The destination agent's token (sent in Hello).
  std::string auth_token;
  // Streams on connections of their own that carry precopy page frames:
  // the main one and up to kMaxDataStreams more. 0: DefaultStreams().
  int streams = 0;
  // After switchover: how long to keep reconnecting a broken migration
  // stream before the migration fails (the source keeps its memory then).
  int64_t recovery_timeout_ms = api::kDefaultRecoveryTimeoutMs;
};

// One stream per four cores, 1 to 4: each stream keeps about a core busy
// at each end (encoding and sending; receiving and installing) while the
// guest runs on the others.
int DefaultStreams();

absl::Status ValidateMigrationOptions(const MigrationOptions& options);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_OPTIONS_H_
