// TCP helpers: "host:port" parsing, listening and connecting, with errors
// that name the address. IPv4 and IPv6 ("[::1]:7000").
//
//   ASSIGN_OR_RETURN(TcpListener l, ListenTcp("127.0.0.1:0"));   // l.port chosen
//   ASSIGN_OR_RETURN(UniqueFd fd, ConnectTcp("127.0.0.1:7000", 5000));
#ifndef FERRY_BASE_NET_H_
#define FERRY_BASE_NET_H_

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/unique_fd.h"

namespace ferry {

// Splits "host:port" / "[v6]:port"; InvalidArgument naming the text.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view address);
// The inverse: "host:port", "[v6]:port" for a host with a ':'.
std::string JoinHostPort(absl::string_view host, int port);

// Whether a host (as in SplitHostPort) is only reachable from this machine:
// every address it resolves to is in 127.0.0.0/8 or ::1 (so "localhost" is,
// and a name such as "127.example" that resolves elsewhere is not). An
// empty host, a wildcard, or a name that does not resolve is not. May block
// on the resolver.
bool IsLoopbackHost(absl::string_view host);

struct TcpListener {
  UniqueFd fd;
  int port = 0;  // the bound port (the chosen one for port 0)
};
absl::StatusOr<TcpListener> ListenTcp(absl::string_view address);

// Connects with TCP_NODELAY; fails after timeout_ms with DeadlineExceeded,
// or Unavailable when refused.
absl::StatusOr<UniqueFd> ConnectTcp(absl::string_view address, int timeout_ms);

// Blocking full-length send and receive on a blocking socket.
absl::Status SendAll(int fd, const void* data, size_t len);
absl::Status RecvAll(int fd, void* data, size_t len, int timeout_ms);

}  // namespace ferry

#endif  // FERRY_BASE_NET_H_
