// What every ferry command shares: connecting to an agent, and turning a
// failed call into a message and an exit code.
//
// Exit codes (docs/cli.md): 0 success; 1 the operation failed; 2 bad usage
// or a malformed value; 3 verification failed; 4 not found; 5 the agent is
// unreachable or shutting down; 6 conflict (wrong state, already exists, a
// limit reached).
#ifndef FERRY_MIGRATION_CLI_CLIENT_H_
#define FERRY_MIGRATION_CLI_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/args.h"
#include "ferry/v1/control.grpc.pb.h"

namespace ferry::cli {

enum ExitCode {
  kExitOk = 0,
  kExitFailed = 1,
  kExitUsage = 2,
  kExitVerifyFailed = 3,
  kExitNotFound = 4,
  kExitUnavailable = 5,
  kExitConflict = 6,
};

int ExitCodeFor(const absl::Status& status);

// Channel options every command takes: --tls-ca, --tls-cert, --tls-key,
// --connect-timeout-ms.
struct ConnectOptions {
  std::string ca, cert, key;  // file paths; empty: plaintext
  int64_t timeout_ms = 10000;  // --connect-timeout-ms
};
absl::StatusOr<ConnectOptions> ParseConnectOptions(Args& args);

// A Control stub for `address`, after a connect check (options.timeout_ms)
// that fails with Unavailable naming the address.
absl::StatusOr<std::unique_ptr<ferry::v1::Control::Stub>> Connect(
    const std::string& address, const ConnectOptions& options);

// The Status of a failed RPC, prefixed with what was asked of which agent.
absl::Status CallError(const grpc::Status& status, const std::string& what,
                       const std::string& address);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_CLIENT_H_
