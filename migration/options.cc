#include "migration/options.h"

#include <algorithm>
#include <array>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migration/api/names.h"
#include "migration/protocol.h"

namespace ferry::migration {

// MigrationMode has the numbers of ferry.v1.MigrationMode, so the API's
// spelling is the engine's too.
static_assert(static_cast<int>(MigrationMode::kPrecopy) == ferry::v1::MIGRATION_MODE_PRECOPY);
static_assert(static_cast<int>(MigrationMode::kPostcopy) == ferry::v1::MIGRATION_MODE_POSTCOPY);
static_assert(static_cast<int>(MigrationMode::kHybrid) == ferry::v1::MIGRATION_MODE_HYBRID);
absl::StatusOr<MigrationMode> ParseMigrationMode(absl::string_view name) {
  absl::StatusOr<ferry::v1::MigrationMode> m = api::ParseMigrationMode(name);
  if (!m.ok()) return m.status();
  return static_cast<MigrationMode>(*m);
}

const char* MigrationModeName(MigrationMode mode) {
  // Spelled once per process from the .proto; stable storage.
  static const auto* names =
      new std::array<std::string, 4>{"unknown", api::Spelling(ferry::v1::MIGRATION_MODE_PRECOPY),
                                     api::Spelling(ferry::v1::MIGRATION_MODE_POSTCOPY),
                                     api::Spelling(ferry::v1::MIGRATION_MODE_HYBRID)};
  const int i = static_cast<int>(mode);
  return i >= 1 && i <= 3 ? (*names)[i].c_str() : "unknown";
}

int DefaultStreams() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(cores / 4, 1, 4);
}

absl::Status ValidateMigrationOptions(const MigrationOptions& o) {
  if (o.streams < 0 || o.streams > static_cast<int>(kMaxDataStreams) + 1)
    return absl::InvalidArgumentError(absl::StrCat(
        "streams ", o.streams, ": 1 to ", kMaxDataStreams + 1, " (0: one per four cores)"));
  if (o.downtime_target_ms <= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("downtime target ", o.downtime_target_ms, " ms must be above 0"));
  if (o.max_rounds < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("max rounds ", o.max_rounds, " must be at least 1"));
  for (const auto& [name, value] : {std::pair<const char*, int>{"initial", o.throttle_initial},
                                    {"step", o.throttle_step},
                                    {"max", o.throttle_max}}) {
    if (value < 1 || value > 99)
      return absl::InvalidArgumentError(
          absl::StrCat("throttle ", name, " ", value,
                       "%: auto-converge throttles take 1 to 99 (percent of "
                       "each vCPU's time)"));
  }
  if (o.throttle_initial > o.throttle_max)
    return absl::InvalidArgumentError(absl::StrCat("throttle initial ", o.throttle_initial,
                                                   "% is above the throttle max ", o.throttle_max,
                                                   "%"));
  if (o.migration_id.size() > kMaxMigrationIdBytes)
    return absl::InvalidArgumentError(
        absl::StrCat("migration id is longer than ", kMaxMigrationIdBytes, " bytes"));
  if (o.recovery_timeout_ms < 1000 || o.recovery_timeout_ms > api::kMaxRecoveryTimeoutMs)
    return absl::InvalidArgumentError(
        absl::StrCat("recovery timeout ", o.recovery_timeout_ms, " ms: 1 s to 24 h"));
  if (o.max_bandwidth != 0 && o.max_bandwidth < (1u << 20))
    return absl::InvalidArgumentError(
        "a bandwidth cap below 1 MiB/s cannot move a VM; use a larger one or none");
  return absl::OkStatus();
}

}  // namespace ferry::migration
