// The JSON every ferry command prints under --json (docs/cli.md, "JSON"):
// one shape per resource, derived from its ferry.v1 message, with enums by
// their short names (api::Spelling), numbers as numbers, error codes by
// name, and every numeric field's name carrying its unit (_bytes, _ms,
// _us, _per_sec, _bytes_per_sec; counts are plain: pages_sent, faults).
#ifndef FERRY_MIGRATION_CLI_JSON_OUTPUT_H_
#define FERRY_MIGRATION_CLI_JSON_OUTPUT_H_

#include "absl/status/status.h"
#include "base/json.h"
#include "ferry/v1/control.pb.h"

namespace ferry::cli {

// A migration: migrate --json, migration get, watch (each line), cancel,
// recover and list share it: the progress of the whole migration and, once
// it ended, the report.
JsonObject MigrationJson(const ferry::v1::MigrationResource& m);

// A VM (vm create, get, list's elements, resume, restore).
JsonObject VmJson(const ferry::v1::Vm& v);
// vm stats: {"vm": {...}, "guest_ops_per_sec": ..., "vcpus": [...], ...}.
JsonObject VmStatsJson(const ferry::v1::VmStatsResponse& s);
// vm verify.
JsonObject VerifyJson(const std::string& name, const ferry::v1::VerifyVmResponse& v);
// vm snapshot: {"vm": {...}, "dir", "memory_bytes", "data_pages", ...}.
JsonObject SnapshotJson(const ferry::v1::SnapshotVmResponse& s);
// vm resize, vm memory add|remove: {"name", "regions": [{"name", "gpa",
// "size_bytes"}, ...], "memory_bytes", "held_off_us"}.
JsonObject MemoryChangeJson(const std::string& name, const ferry::v1::ChangeVmMemoryResponse& r);

// A failed command under --json, written to stderr:
// {"error":{"code":"not_found","exit_code":4,"message":"..."}}.
JsonObject ErrorJson(const absl::Status& status, int exit_code);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_JSON_OUTPUT_H_
