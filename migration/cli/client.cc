#include "migration/cli/client.h"

#include <poll.h>
#include <sys/socket.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/grpc_status.h"
#include "base/net.h"
#include "base/unique_fd.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"

namespace ferry::cli {

int ExitCodeFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
      return kExitUsage;
    case absl::StatusCode::kDataLoss:
      return kExitVerifyFailed;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnavailable:
      return kExitUnavailable;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kResourceExhausted:
      return kExitConflict;
    default:
      return kExitFailed;
  }
}

absl::StatusOr<ConnectOptions> ParseConnectOptions(Args& args) {
  ConnectOptions o;
  o.ca = args.String("tls-ca", "");
  o.cert = args.String("tls-cert", "");
  o.key = args.String("tls-key", "");
  auto timeout = args.Int("connect-timeout-ms", 10000);
  if (!timeout.ok()) return timeout.status();
  if (*timeout <= 0) return absl::InvalidArgumentError("--connect-timeout-ms must be above 0");
  o.timeout_ms = *timeout;
  if (o.cert.empty() != o.key.empty())
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  if (!o.cert.empty() && o.ca.empty())
    return absl::InvalidArgumentError("--tls-cert needs --tls-ca (the agents' CA)");
  return o;
}


namespace {

enum class Speaks { kNothing, kPlaintextGrpc, kNotPlaintext };

// What listens at `address`: nothing (the TCP connection fails), a
// plaintext HTTP/2 server (it answers the HTTP/2 preface with a SETTINGS
// frame), or something else: a TLS server answers the preface with an
// alert or closes.
Speaks Probe(const std::string& address) {
  absl::StatusOr<UniqueFd> fd = ConnectTcp(address, 2000);
  if (!fd.ok()) return Speaks::kNothing;
  static constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
  if (send(fd->get(), kPreface, sizeof(kPreface) - 1, MSG_NOSIGNAL) < 0)
    return Speaks::kNotPlaintext;
  unsigned char frame[9];
  size_t got = 0;
  while (got < 4) {
    pollfd p{fd->get(), POLLIN, 0};
    if (poll(&p, 1, 2000) <= 0) break;
    const ssize_t n = recv(fd->get(), frame + got, sizeof(frame) - got, 0);
    if (n <= 0) break;
    got += n;
  }
  return got >= 4 && frame[3] == 0x04 ? Speaks::kPlaintextGrpc : Speaks::kNotPlaintext;
}

// Why a channel to `address` failed, and what to do about it.
std::string ConnectFailure(const std::string& address, const ConnectOptions& o) {
  const Speaks speaks = Probe(address);
  const bool tls = !o.ca.empty();
  if (speaks == Speaks::kNothing)
    return absl::StrCat("cannot reach the agent at ", address,
                        ": the connection failed; is ferryd running there? (give its address "
                        "with --agent, --from or --to)");
  if (speaks == Speaks::kPlaintextGrpc && tls)
    return absl::StrCat("TLS error: the agent at ", address,
                        " serves plaintext, and this client speaks TLS (--tls-ca): drop the TLS "
                        "settings (--tls-ca, $FERRY_TLS_CA, the config file), or start ferryd "
                        "with --tls-cert and --tls-key");
  if (speaks == Speaks::kPlaintextGrpc)
    return absl::StrCat("cannot connect to the agent at ", address,
                        ": it answers HTTP/2 but refused the connection");
  if (!tls)
    return absl::StrCat("TLS error: the agent at ", address,
                        " serves TLS, and this client spoke plaintext: give the agents' CA with "
                        "--tls-ca FILE, and if the agent requires client certificates "
                        "--tls-cert FILE --tls-key FILE (or $FERRY_TLS_CA, $FERRY_TLS_CERT, "
                        "$FERRY_TLS_KEY, or the config file)");
  if (o.cert.empty())
    return absl::StrCat("TLS error: the handshake with the agent at ", address,
                        " failed: it requires a client certificate (give --tls-cert FILE "
                        "--tls-key FILE, signed by the agents' CA), or its certificate is not "
                        "signed by the CA in --tls-ca ", o.ca);
  return absl::StrCat("TLS error: the handshake with the agent at ", address,
                      " failed: its certificate is not signed by the CA in --tls-ca ", o.ca,
                      " (an unknown CA), or it does not accept the client certificate ", o.cert,
                      " (signed by another CA), or ", address,
                      " is not among its certificate's names");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ferry::v1::Control::Stub>> Connect(
    const std::string& address, const ConnectOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!options.ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFileToString(options.ca));
    if (!options.cert.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFileToString(options.cert));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFileToString(options.key));
    }
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // A silent agent (stopped, partitioned) breaks a long call such as a
  // watch within seconds; the watch then reconnects (Follow).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  auto channel = grpc::CreateCustomChannel(address, creds, args);
  // Up to the timeout for an agent that does not answer yet; at once for
  // one that refuses (nothing listens there) or cannot be resolved.
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::milliseconds(options.timeout_ms);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN)
      return absl::UnavailableError(ConnectFailure(address, options));
    if (!channel->WaitForStateChange(state, deadline))
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the agent at ", address, ": no answer within ", options.timeout_ms,
          " ms (--connect-timeout-ms); is ferryd running there?"));
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return ferry::v1::Control::NewStub(channel);
}

absl::Status CallError(const grpc::Status& status, const std::string& what,
                       const std::string& address) {
  absl::Status s = FromGrpcStatus(status);
  return absl::Status(s.code(), absl::StrCat(what, " (agent ", address, "): ", s.message()));
}

}  // namespace ferry::cli
