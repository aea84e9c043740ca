// MetricsServer: a minimal HTTP/1.x server for Prometheus scrapes. It
// answers GET /metrics with `render()` as text/plain (version 0.0.4) and
// anything else with 404 (405 for another method); one request per
// connection, handled one at a time on a thread of its own. Requests are
// bounded: at most 8 KiB of request head, read within 2 s; the server never
// keeps a connection open. Stopped by the destructor.
#ifndef FERRY_MIGRATION_AGENT_METRICS_SERVER_H_
#define FERRY_MIGRATION_AGENT_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/unique_fd.h"

namespace ferry::agent {

class MetricsServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      absl::string_view address, std::function<std::string()> render);
  ~MetricsServer();

  int port() const { return port_; }

 private:
  MetricsServer(UniqueFd listener, int port, UniqueFd stop, std::function<std::string()> render);
  void Loop();
  void Serve(int fd);

  UniqueFd listener_;
  const int port_;
  UniqueFd stop_;  // eventfd: the destructor wakes the loop
  const std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_METRICS_SERVER_H_
