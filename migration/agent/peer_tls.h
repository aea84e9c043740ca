// How an agent authenticates the destinations it dials (docs/security.md,
// "Agents verify each other").
//
// Before the source sends anything (the pool token, a migration's secret),
// the destination's TLS certificate must:
// - chain to the pool's CA (--tls-ca);
// - name the host the source was asked to dial (subjectAltName);
// - carry the agent role: an extendedKeyUsage that lists serverAuth.
//   Operators' client certificates, issued without serverAuth (or without
//   any extendedKeyUsage, which OpenSSL would accept for every purpose),
//   cannot pose as a destination.
#ifndef FERRY_MIGRATION_AGENT_PEER_TLS_H_
#define FERRY_MIGRATION_AGENT_PEER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace ferry::agent {

// OK when the PEM certificate `pem` carries the agent role (an
// extendedKeyUsage with serverAuth); PermissionDenied naming what is
// missing, InvalidArgument when it does not parse.
absl::Status CheckAgentRole(absl::string_view pem);

// Channel credentials for dialling destinations under mutual TLS: this
// agent's certificate and key as the client identity, `ca_pem` as the only
// root, and the checks above during the handshake.
std::shared_ptr<grpc::ChannelCredentials> AgentPeerCredentials(const std::string& ca_pem,
                                                               const std::string& key_pem,
                                                               const std::string& cert_pem);

// An agent's TLS set-up from its files (--tls-cert, --tls-key, --tls-ca;
// all empty: plaintext). With a CA, clients must present a certificate it
// signed, and destinations are dialled with AgentPeerCredentials; without
// one, destinations are dialled over TLS verified against the system's
// trust store. ferryd and ferry-vmm serve and dial alike.
struct AgentTls {
  std::shared_ptr<grpc::ServerCredentials> server;  // never null
  std::shared_ptr<grpc::ChannelCredentials> peer;   // null: plaintext
};
absl::StatusOr<AgentTls> LoadAgentTls(const std::string& cert_file, const std::string& key_file,
                                      const std::string& ca_file);

// LoadAgentTls in two steps, for a process that reads its files before it
// drops the right to (ferry-vmm --user): the files' contents (all empty:
// plaintext), then the credentials from them.
struct AgentTlsPem {
  std::string cert, key, ca;
};
absl::StatusOr<AgentTlsPem> ReadAgentTls(const std::string& cert_file, const std::string& key_file,
                                         const std::string& ca_file);
AgentTls MakeAgentTls(const AgentTlsPem& pem);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_PEER_TLS_H_
