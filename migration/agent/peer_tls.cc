#include "migration/agent/peer_tls.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace ferry::agent {
namespace {

using grpc::experimental::ExternalCertificateVerifier;
using grpc::experimental::HostNameCertificateVerifier;
using grpc::experimental::TlsCustomVerificationCheckRequest;

// The agent role and the host name, after gRPC verified the chain.
class AgentRoleVerifier final : public ExternalCertificateVerifier {
 public:
  bool Verify(TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> callback, grpc::Status* sync_status) override {
    grpc::Status host;
    if (!host_.Verify(request, std::move(callback), &host)) {
      // The host name verifier is synchronous; never expected.
      *sync_status = grpc::Status(grpc::StatusCode::INTERNAL, "asynchronous host check");
      return true;
    }
    if (!host.ok()) {
      *sync_status = host;
      return true;
    }
    const grpc::string_ref pem = request->peer_cert();
    const absl::Status role = CheckAgentRole(absl::string_view(pem.data(), pem.size()));
    *sync_status = role.ok() ? grpc::Status::OK
                             : grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                            std::string(role.message()));
    return true;
  }
  void Cancel(TlsCustomVerificationCheckRequest*) override {}

 private:
  HostNameCertificateVerifier host_;
};

}  // namespace

absl::Status CheckAgentRole(absl::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return absl::ResourceExhaustedError("out of memory reading a certificate");
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr)
    return absl::InvalidArgumentError("the peer's certificate is not a PEM X.509 certificate");
  const uint32_t flags = X509_get_extension_flags(cert);
  const uint32_t xku = X509_get_extended_key_usage(cert);
  X509_free(cert);
  if (!(flags & EXFLAG_XKUSAGE))
    return absl::PermissionDeniedError(
        "the peer's certificate has no extendedKeyUsage: it is no Ferry agent's (an agent's "
        "certificate lists serverAuth, docs/security.md)");
  if (!(xku & XKU_SSL_SERVER))
    return absl::PermissionDeniedError(
        "the peer's certificate does not list serverAuth in its extendedKeyUsage: it is no "
        "Ferry agent's (an operator's client certificate cannot be a destination)");
  return absl::OkStatus();
}

std::shared_ptr<grpc::ChannelCredentials> AgentPeerCredentials(const std::string& ca_pem,
                                                               const std::string& key_pem,
                                                               const std::string& cert_pem) {
  using grpc::experimental::IdentityKeyCertPair;
  auto provider = std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
      ca_pem, std::vector<IdentityKeyCertPair>{{key_pem, cert_pem}});
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  options.set_certificate_verifier(ExternalCertificateVerifier::Create<AgentRoleVerifier>());
  return grpc::experimental::TlsCredentials(options);
}

absl::StatusOr<AgentTlsPem> ReadAgentTls(const std::string& cert_file, const std::string& key_file,
                                         const std::string& ca_file) {
  AgentTlsPem pem;
  if (cert_file.empty() != key_file.empty())
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  if (cert_file.empty()) {
    if (!ca_file.empty())
      return absl::InvalidArgumentError("--tls-ca needs --tls-cert and --tls-key");
    return pem;
  }
  auto read = [](const std::string& path, const char* flag) -> absl::StatusOr<std::string> {
    auto bytes = ReadFileToString(path);
    if (!bytes.ok())
      return absl::InvalidArgumentError(absl::StrCat(flag, ": ", bytes.status().message()));
    return bytes;
  };
  ASSIGN_OR_RETURN(pem.cert, read(cert_file, "--tls-cert"));
  ASSIGN_OR_RETURN(pem.key, read(key_file, "--tls-key"));
  if (!ca_file.empty()) {
    ASSIGN_OR_RETURN(pem.ca, read(ca_file, "--tls-ca"));
  }
  return pem;
}

AgentTls MakeAgentTls(const AgentTlsPem& pem) {
  AgentTls tls;
  tls.server = grpc::InsecureServerCredentials();
  if (pem.cert.empty()) return tls;
  grpc::SslServerCredentialsOptions ssl(
      pem.ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                     : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_key_cert_pairs.push_back({pem.key, pem.cert});
  if (!pem.ca.empty()) {
    ssl.pem_root_certs = pem.ca;
    // Destinations are verified as agents before anything is sent.
    tls.peer = AgentPeerCredentials(ssl.pem_root_certs, pem.key, pem.cert);
  } else {
    // TLS without a private CA: destinations are dialled over TLS too,
    // verified against the system's trust store (never in plaintext).
    tls.peer = grpc::SslCredentials(grpc::SslCredentialsOptions());
  }
  tls.server = grpc::SslServerCredentials(ssl);
  return tls;
}

absl::StatusOr<AgentTls> LoadAgentTls(const std::string& cert_file, const std::string& key_file,
                                      const std::string& ca_file) {
  ASSIGN_OR_RETURN(AgentTlsPem pem, ReadAgentTls(cert_file, key_file, ca_file));
  return MakeAgentTls(pem);
}

}  // namespace ferry::agent
