#include "base/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/errno_status.h"

namespace ferry {
namespace {

absl::Status WithAddress(absl::Status s, absl::string_view address) {
  return absl::Status(s.code(), absl::StrCat(address, ": ", s.message()));
}

absl::StatusOr<addrinfo*> Resolve(absl::string_view address, bool passive) {
  auto hp = SplitHostPort(address);
  if (!hp.ok()) return hp.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string port = std::to_string(hp->second);
  int rc = getaddrinfo(hp->first.empty() ? nullptr : hp->first.c_str(), port.c_str(),
                       &hints, &res);
  if (rc != 0)
    return absl::UnavailableError(
        absl::StrCat(address, ": cannot resolve host: ", gai_strerror(rc)));
  return res;
}

}  // namespace

std::string JoinHostPort(absl::string_view host, int port) {
  if (host.find(':') != absl::string_view::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view address) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos)
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' is not HOST:PORT"));
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535)
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' has no valid port (0-65535)"));
  return std::make_pair(std::string(host), port);
}

absl::StatusOr<TcpListener> ListenTcp(absl::string_view address) {
  auto res = Resolve(address, true);
  if (!res.ok()) return res.status();
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(*res, freeaddrinfo);
  addrinfo* ai = *res;
  UniqueFd fd(socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return WithAddress(ErrnoStatus("socket", errno), address);
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0)
    return WithAddress(ErrnoStatus("bind", errno), address);
  if (listen(fd.get(), 128) != 0) return WithAddress(ErrnoStatus("listen", errno), address);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  int port = bound.ss_family == AF_INET6
                 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                 : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return TcpListener{std::move(fd), port};
}

absl::StatusOr<UniqueFd> ConnectTcp(absl::string_view address, int timeout_ms) {
  auto res = Resolve(address, false);
  if (!res.ok()) return res.status();
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(*res, freeaddrinfo);
  addrinfo* ai = *res;
  UniqueFd fd(socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return WithAddress(ErrnoStatus("socket", errno), address);
  if (connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return WithAddress(ErrnoStatus("connect", errno), address);
    pollfd p{fd.get(), POLLOUT, 0};
    int rc = poll(&p, 1, timeout_ms);
    if (rc == 0)
      return absl::DeadlineExceededError(
          absl::StrCat(address, ": connect timed out after ", timeout_ms, " ms"));
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return WithAddress(ErrnoStatus("connect", err), address);
  }
  int flags = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

absl::Status SendAll(int fd, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("send", errno);
    }
    p += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status RecvAll(int fd, void* data, size_t len, int timeout_ms) {
  auto* p = static_cast<uint8_t*>(data);
  while (len > 0) {
    pollfd pfd{fd, POLLIN, 0};
    int rc = poll(&pfd, 1, timeout_ms);
    if (rc == 0) return absl::DeadlineExceededError("receive timed out");
    if (rc < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("poll", errno);
    }
    ssize_t n = recv(fd, p, len, 0);
    if (n == 0) return absl::UnavailableError("connection closed by the peer");
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("recv", errno);
    }
    p += n;
    len -= n;
  }
  return absl::OkStatus();
}

namespace {

bool IsLoopbackAddress(const sockaddr* a) {
  if (a->sa_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr) >> 24) == 127;
  if (a->sa_family == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    // ::ffff:127.x.y.z
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace

bool IsLoopbackHost(absl::string_view host) {
  std::string h(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) return false;  // the wildcard
  // Judged on what the name resolves to (a name that merely looks like
  // loopback, "127.example", may be routable): every address must be
  // loopback, and a name that does not resolve is not.
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(h.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return false;
  bool all = true;
  for (addrinfo* r = res; r != nullptr; r = r->ai_next)
    all = all && r->ai_addr != nullptr && IsLoopbackAddress(r->ai_addr);
  freeaddrinfo(res);
  return all;
}

}  // namespace ferry
