#include "migration/options.h"

#include "absl/strings/str_cat.h"
#include "migration/protocol.h"

namespace ferry::migration {

absl::StatusOr<MigrationMode> ParseMigrationMode(absl::string_view name) {
  if (name == "precopy") return MigrationMode::kPrecopy;
  if (name == "postcopy") return MigrationMode::kPostcopy;
  if (name == "hybrid") return MigrationMode::kHybrid;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown migration mode '", name, "': choose precopy, postcopy or hybrid"));
}

const char* MigrationModeName(MigrationMode mode) {
  switch (mode) {
    case MigrationMode::kPrecopy:
      return "precopy";
    case MigrationMode::kPostcopy:
      return "postcopy";
    case MigrationMode::kHybrid:
      return "hybrid";
  }
  return "unknown";
}

absl::Status ValidateMigrationOptions(const MigrationOptions& o) {
  if (o.downtime_target_ms <= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("downtime target ", o.downtime_target_ms, " ms must be above 0"));
  if (o.max_rounds < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("max rounds ", o.max_rounds, " must be at least 1"));
  if (o.migration_id.size() > kMaxMigrationIdBytes)
    return absl::InvalidArgumentError(
        absl::StrCat("migration id is longer than ", kMaxMigrationIdBytes, " bytes"));
  if (o.max_bandwidth != 0 && o.max_bandwidth < (1u << 20))
    return absl::InvalidArgumentError(
        "a bandwidth cap below 1 MiB/s cannot move a VM; use a larger one or none");
  return absl::OkStatus();
}

}  // namespace ferry::migration
