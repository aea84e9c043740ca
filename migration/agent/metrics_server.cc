#include "migration/agent/metrics_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "base/net.h"
#include "base/status_macros.h"

namespace ferry::agent {
namespace {

constexpr size_t kMaxRequestHead = 8192;
constexpr int kReadTimeoutMs = 2000;

// Best effort: a client that went away gets nothing more.
void Reply(int fd, const std::string& response) {
  (void)SendAll(fd, response.data(), response.size());
}

std::string Response(const char* status, const char* type, const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n",
                      body);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    absl::string_view address, std::function<std::string()> render) {
  ASSIGN_OR_RETURN(TcpListener l, ListenTcp(address));
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return ErrnoStatus("eventfd", errno);
  auto server = std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(l.fd), l.port, std::move(stop), std::move(render)));
  server->thread_ = std::thread(&MetricsServer::Loop, server.get());
  return server;
}

MetricsServer::MetricsServer(UniqueFd listener, int port, UniqueFd stop,
                             std::function<std::string()> render)
    : listener_(std::move(listener)),
      port_(port),
      stop_(std::move(stop)),
      render_(std::move(render)) {}

MetricsServer::~MetricsServer() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

void MetricsServer::Loop() {
  pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  while (true) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn.valid()) {
      // Out of descriptors or a connection reset before accept: the next
      // poll tries again; back off a moment so a flood cannot spin us.
      if (errno == EMFILE || errno == ENFILE) ::usleep(10'000);
      continue;
    }
    Serve(conn.get());
  }
}

void MetricsServer::Serve(int fd) {
  // The request head, up to its blank line, bounded in size and time.
  std::string head;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kReadTimeoutMs);
  char buf[1024];
  while (head.find("\r\n\r\n") == std::string::npos && head.find("\n\n") == std::string::npos) {
    if (head.size() > kMaxRequestHead) {
      Reply(fd, Response("431 Request Header Fields Too Large", "text/plain", "too large\n"));
      return;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return;
    head.append(buf, static_cast<size_t>(n));
  }
  const std::string line = head.substr(0, head.find_first_of("\r\n"));
  if (!absl::StartsWith(line, "GET ")) {
    Reply(fd, Response("405 Method Not Allowed", "text/plain", "only GET /metrics\n"));
    return;
  }
  const size_t path_end = line.find(' ', 4);
  const std::string path = line.substr(4, path_end == std::string::npos ? std::string::npos
                                                                        : path_end - 4);
  if (path != "/metrics" && !absl::StartsWith(path, "/metrics?")) {
    Reply(fd, Response("404 Not Found", "text/plain", "see /metrics\n"));
    return;
  }
  Reply(fd, Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render_()));
}

}  // namespace ferry::agent
