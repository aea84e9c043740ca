// How the ferry.v1 enums an operator types and reads are spelled: the enum
// value's name without its type's prefix, in lower case, with '-' for '_'
// (WORKLOAD_KIND_DIRTY_RATE is "dirty-rate", MIGRATION_PHASE_POSTCOPY is
// "postcopy"). The .proto files are the one source of these names; the CLI,
// the agent's logs, the engine's report and ferry-bench all spell them
// through here. Parsing rejects UNSPECIFIED and unknown names with
// InvalidArgument listing the choices.
//
// Depends only on the protobuf messages: the CLI links this, not the VMM
// or the engine.
#ifndef FERRY_MIGRATION_API_NAMES_H_
#define FERRY_MIGRATION_API_NAMES_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ferry/v1/control.pb.h"

namespace ferry::api {

std::string Spelling(ferry::v1::WorkloadKind kind);
std::string Spelling(ferry::v1::MigrationMode mode);
std::string Spelling(ferry::v1::FaultMode mode);
std::string Spelling(ferry::v1::MigrationPhase phase);
std::string Spelling(ferry::v1::VmState state);
std::string Spelling(ferry::v1::VmBackend backend);
std::string Spelling(ferry::v1::EventKind kind);  // "phase-changed", ...

absl::StatusOr<ferry::v1::WorkloadKind> ParseWorkloadKind(absl::string_view name);
absl::StatusOr<ferry::v1::MigrationMode> ParseMigrationMode(absl::string_view name);
absl::StatusOr<ferry::v1::FaultMode> ParseFaultMode(absl::string_view name);
// "soft", "kvm" or "auto".
absl::StatusOr<ferry::v1::VmBackend> ParseVmBackend(absl::string_view name);

// A canonical status code (google.rpc.Code, as MigrationResource.error_code
// and absl::StatusCode number them) by name, for JSON: 14 is "unavailable",
// 5 "not_found"; 0 (no error) is "". Never a number, so that it cannot be
// read as an exit code.
std::string ErrorCodeName(int code);

// "idle, sequential, uniform, zipf or dirty-rate": for help texts.
std::string WorkloadKindChoices();

// VM names: 1 to 64 characters from [A-Za-z0-9._-], the first a letter or
// a digit (so never "-h", "." or ".."). InvalidArgument stating the rule;
// a name too long is not echoed back.
inline constexpr size_t kMaxVmNameSize = 64;
inline constexpr const char* kVmNameRule =
    "1 to 64 characters: letters, digits, '.', '_' and '-', the first a letter or a digit";
absl::Status ValidateVmName(absl::string_view name);

}  // namespace ferry::api

#endif  // FERRY_MIGRATION_API_NAMES_H_
