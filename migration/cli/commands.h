// The ferry commands. Each takes the parsed Args (positional[0] is the
// command word) and returns OK or a Status whose code picks the exit code
// (client.h).
#ifndef FERRY_MIGRATION_CLI_COMMANDS_H_
#define FERRY_MIGRATION_CLI_COMMANDS_H_

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "base/args.h"
#include "base/json.h"
#include "ferry/v1/control.grpc.pb.h"
#include "migration/cli/client.h"
#include "migration/cli/json_output.h"

namespace ferry::cli {

// ferry vm create|list|get|stats|verify|resume|snapshot|restore|resize|
// memory|delete ...
absl::Status VmCommand(Args& args);
// ferry vm resize NAME --memory SIZE, ferry vm memory add|remove NAME ...
// (vm_memory_commands.cc), for VmCommand: the agent at `address`.
absl::Status VmMemoryCommand(Args& args, const std::string& address, const ConnectOptions& co,
                             bool json);
// "ram 64 MiB at 0x0, dimm0 64 MiB at 0x40000000".
std::string RegionsText(const google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion>& regions);
// ferry migrate NAME --from A --to B ...
absl::Status MigrateCommand(Args& args);
// ferry migration list|get|watch|cancel ...
absl::Status MigrationCommand(Args& args);
// ferry events [--vm NAME] [--migration ID] [--since SEQ] [--count N]
absl::Status EventsCommand(Args& args);

// Follows a migration to its end: on a terminal a live progress line,
// otherwise plain progress lines (unless `quiet`), then the report (text, or
// JSON when `json`). Returns the final resource.
absl::StatusOr<ferry::v1::MigrationResource> Follow(ferry::v1::Control::Stub& stub,
                                                    const std::string& address,
                                                    const std::string& id, bool json,
                                                    FILE* out);

// One progress line for a migration resource.
std::string ProgressLine(const ferry::v1::MigrationResource& m);
std::string PhaseName(ferry::v1::MigrationPhase phase);
// Completed, failed or cancelled.
bool Terminal(ferry::v1::MigrationPhase phase);
// A migration that ended without completing and sent nothing (refused, or
// failed at setup): its reason says it all, a report would not.
bool GotNowhere(const ferry::v1::MigrationResource& m);

// OK for a completed migration; otherwise the exit status of its end:
// Unavailable (exit 5) when the destination could not be reached, Aborted
// (exit 1) for any other failure or a cancellation.
absl::Status OutcomeStatus(const ferry::v1::MigrationResource& done);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_COMMANDS_H_
