// Translation between the ferry.v1.Control protos and the engine's own
// types: a StartMigrationRequest becomes MigrationOptions, a CreateVmRequest
// a VmConfig, and what the engine reports (source progress, an arriving
// VM's DestinationSession::Info, vCPU stats) becomes Vm, MigrationResource
// and VmStatsResponse fields.
//
// Pure functions of their arguments: no state, safe from any thread.
// Requests a client got wrong come back as InvalidArgument naming the field.
//
//   ASSIGN_OR_RETURN(migration::MigrationOptions o,
//                    MigrationOptionsFromRequest(request, token));
#ifndef FERRY_MIGRATION_AGENT_CONTROL_TRANSLATE_H_
#define FERRY_MIGRATION_AGENT_CONTROL_TRANSLATE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ferry/v1/control.pb.h"
#include "migration/destination_session.h"
#include "migration/options.h"
#include "migration/source_session.h"
#include "vmm/vm.h"

namespace ferry::agent {

// StartMigrationRequest.streams: checked before it becomes an int.
inline constexpr uint32_t kMaxStreamsField = 8;
// StartMigrationRequest.request_id: at most this many bytes.
inline constexpr size_t kMaxRequestIdBytes = 64;

// The options a StartMigrationRequest asks for. Fields left at 0 or
// UNSPECIFIED keep MigrationOptions' defaults (migration/api/defaults.h);
// the result is validated (ValidateMigrationOptions) and carries
// `auth_token`. The destination and request id are checked too.
absl::StatusOr<migration::MigrationOptions> MigrationOptionsFromRequest(
    const ferry::v1::StartMigrationRequest& request, const std::string& auth_token);

// The request that asks for `options` (their defaults left unset where the
// request can say "default"): the inverse of MigrationOptionsFromRequest.
ferry::v1::StartMigrationRequest RequestFromMigrationOptions(
    const migration::MigrationOptions& options, const std::string& vm_name,
    const std::string& destination);

// The VmConfig a CreateVmRequest asks for, validated, and why its backend
// was chosen ("as asked", or what `auto` found) in `backend_reason`. Its
// max_memory_bytes is the request's (0: the default): the agent resolves
// it against its own limit (ResolveMaxMemory, memory_change.h).
absl::StatusOr<vmm::VmConfig> VmConfigFromRequest(const ferry::v1::CreateVmRequest& request,
                                                  std::string* backend_reason);

// A hosted VM's state from its vCPUs; `migrating`: an outgoing migration
// is under way.
ferry::v1::VmState VmStateOf(const vmm::VmStats& stats, bool migrating);

// Appends one VcpuStats per vCPU of `stats` to `response`.
void AddVcpuStats(const vmm::VmStats& stats, ferry::v1::VmStatsResponse* response);

// An outgoing migration's progress as the Control API shows it.
void FillProgress(const migration::SourceProgress& progress, ferry::v1::MigrationProgress* out);

// An ended outgoing migration: its end time, error (if any), and its
// progress at 100% (completed) or without an ETA (failed, cancelled).
void SetEnded(const absl::Status& result, absl::Time finished, ferry::v1::MigrationResource* r);

// True while a migration to this agent has not ended (its VM is arriving).
bool Arriving(const migration::DestinationSession::Info& in);

// The peer of an incoming migration as operators know it: the source
// agent's Control address, else (an older source) its fetch address.
std::string PeerOf(const migration::DestinationSession::Info& in);

// An arriving VM (VM_STATE_INCOMING) and its migration as seen here.
ferry::v1::Vm DescribeIncomingVm(const migration::DestinationSession::Info& in);
ferry::v1::MigrationResource DescribeIncomingMigration(
    const migration::DestinationSession::Info& in);
// VmStats of an arriving VM: what it does so far (in postcopy it runs here).
ferry::v1::VmStatsResponse IncomingVmStats(const migration::DestinationSession::Info& in);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_CONTROL_TRANSLATE_H_
