// Per-operation authorization of the ferry.v1.Control API (ferryd --authz;
// docs/security.md, "Authorization").
//
// An identity is the common name of the client's certificate (mutual TLS).
// A policy file gives each identity its permissions, one line each, in the
// config-file syntax (`key = value`, `#` comments):
//
//   operator   = read, vm, migrate   # a certificate with CN=operator
//   monitoring = read
//   *          = read                # any other certified client
//   destinations = 10.0.0.2:7070, 10.0.0.3:7070
//
// Permissions: `read` (Get, List, Watch, WatchEvents, VmStats), `vm` (create, delete,
// verify, resume, snapshot and restore VMs: snapshot and restore name
// directories on the agent's host), `migrate` (start, cancel, recover, set parameters
// of, force postcopy of migrations), `all`. `destinations` (optional) lists the only agents
// migrations may go to (as StartMigration and recover name them); absent,
// anywhere. An identity not listed, with no `*` line, may do nothing.
// Without a policy every client the TLS layer admits may do everything.
#ifndef FERRY_MIGRATION_AGENT_AUTHZ_H_
#define FERRY_MIGRATION_AGENT_AUTHZ_H_

#include <map>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace ferry::agent {

enum class Permission { kRead = 1, kVm = 2, kMigrate = 4 };

class AuthzPolicy {
 public:
  // Parses a policy file's text (`file` names it in errors).
  static absl::StatusOr<AuthzPolicy> Parse(absl::string_view text, absl::string_view file);
  static absl::StatusOr<AuthzPolicy> Read(const std::string& path);

  // OK when `identity` holds `permission` (and, for a migration, when
  // `destination`, if not empty, is allowed); PermissionDenied saying what
  // is missing otherwise. `what` names the call for the message.
  absl::Status Check(absl::string_view identity, Permission permission, absl::string_view what,
                     absl::string_view destination = "") const;

 private:
  std::map<std::string, int, std::less<>> grants_;  // identity -> Permission bits
  std::optional<std::set<std::string, std::less<>>> destinations_;
};

// The caller's identity: its certificate's common name, "" when it showed
// none (no TLS, or TLS without a client certificate).
std::string CallerIdentity(const grpc::ServerContext& ctx);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_AUTHZ_H_
