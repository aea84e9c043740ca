#include "migration/cli/client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/grpc_status.h"
#include "base/status_macros.h"
#include "google/protobuf/util/json_util.h"
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
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the agent at ", address,
          ": the connection failed; is ferryd running there? (give its address with "
          "--agent, --from or --to)"));
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

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, o);
  return out;
}

}  // namespace ferry::cli
