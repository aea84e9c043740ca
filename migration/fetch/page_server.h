// PageServer: the source end of the fetch channel. One listening socket and
// one thread running an io_uring event loop serve the demand requests of
// every migration this host is the source of; each destination vCPU thread
// has its own connection ("lane").
//
// A connection must first prove the migration's secret: the server sends a
// random nonce, the client answers with HMAC-SHA256(secret, nonce | id). A
// bad proof or an unknown migration gets an error result and the connection
// is closed. After the handshake, each 16-byte request is answered with a
// reply header and the data of the non-zero pages; a request outside the
// VM's RAM gets an OutOfRange reply, a request before the migration serves
// gets NotReady; a malformed frame closes the connection. Serving never
// writes guest memory.
//
// Limits: at most 1024 connections (more are closed at accept), of which
// at most 64 unauthenticated (a new one past that sheds the oldest still in
// its handshake), 5 s to finish the handshake, 4 MiB of replies queued per connection (then the
// connection's requests wait until the peer reads), accept paused 100 ms
// after an error such as running out of fds. A connection of a migration
// that is no longer served (Unregister) is closed within 250 ms.
//
// Threads: Register/Unregister and Stats from any thread. The event loop is
// the only thread touching connections. Pages are copied out of guest memory
// under the migration's reader lock, so once ServedMigration::Close() returns
// the server reads no more of that VM's memory.
#ifndef FERRY_MIGRATION_FETCH_PAGE_SERVER_H_
#define FERRY_MIGRATION_FETCH_PAGE_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/histogram.h"
#include "base/unique_fd.h"
#include "migration/fetch/wire.h"
#include "vmm/guest_memory.h"

namespace ferry::migration::fetch {

// One migration as the page server sees it. Created by the source session.
class ServedMigration {
 public:
  // Called (on the server thread, under the migration's lock) for every
  // request served: the first gpa and the page count.
  using ServedFn = std::function<void(uint64_t gpa, uint32_t count)>;

  // `memory` must stay valid until Close() returns. `encrypt`: replies are
  // sealed (seal.h; the destination was told in Hello).
  ServedMigration(std::string id, Secret secret, const vmm::GuestMemory* memory,
                  ServedFn on_served, bool encrypt = false);
  bool encrypt() const { return encrypt_; }

  const std::string& id() const { return id_; }
  const Secret& secret() const { return secret_; }
  uint32_t page_size() const { return memory_->page_size(); }

  // From now on requests are served (the source VM is paused: memory is
  // final). Before this, requests get NotReady.
  void EnableServing();
  // Stops serving. When it returns, the server reads no more memory for
  // this migration and calls on_served no more. Idempotent.
  void Close();

  bool closed() const {
    absl::MutexLock lock(&mu_);
    return closed_;
  }

  // Builds the reply to `request` into `out` (header and page data).
  void Serve(const Request& request, std::vector<uint8_t>* out);

  uint64_t requests() const { return requests_.load(); }
  uint64_t pages_served() const { return pages_served_.load(); }
  // The source's part of each demand fetch, in ns: from the server thread
  // reading the request to the kernel taking the last byte of its reply
  // (the send's completion). Recorded on the server thread.
  void RecordService(uint64_t ns) { service_.Record(ns); }
  HistogramSnapshot service_time() const { return service_.Snapshot(); }

 private:
  const std::string id_;
  const Secret secret_;
  const vmm::GuestMemory* const memory_;
  const ServedFn on_served_;
  const bool encrypt_;
  mutable absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> pages_served_{0};
  LatencyHistogram service_;
};

struct PageServerStats {
  uint64_t connections = 0;
  uint64_t handshakes_failed = 0;
  uint64_t requests = 0;
  uint64_t malformed_frames = 0;
  uint64_t connections_refused = 0;  // at the connection limit
  // Closed unauthenticated to make room (kMaxUnauthenticated in handshake).
  uint64_t connections_shed = 0;
};

// The page server thread's name (/proc/PID/task/TID/comm): ferryd finds it
// by this name in each ferry-vmm process and raises its priority there
// (the sandboxed process cannot itself).
inline constexpr char kPageServerThreadName[] = "ferry-pagesrv";

class PageServer {
 public:
  // Listens on `address` ("HOST:PORT"; port 0 picks one) and starts the
  // event loop.
  static absl::StatusOr<std::unique_ptr<PageServer>> Start(absl::string_view address);
  // Stops the loop and closes every connection.
  ~PageServer();

  int port() const { return port_; }

  void Register(std::shared_ptr<ServedMigration> migration);
  // Forgets the migration and Close()s it; its connections are closed at
  // their next request.
  void Unregister(const std::string& id);

  PageServerStats Stats() const;

 private:
  struct Conn;
  PageServer(UniqueFd listener, int port, UniqueFd stop);
  void Loop();
  absl::Status Run();
  std::shared_ptr<ServedMigration> Find(const std::string& id);

  UniqueFd listener_;
  const int port_;
  UniqueFd stop_fd_;
  std::thread thread_;
  absl::Mutex started_mu_;
  bool started_ ABSL_GUARDED_BY(started_mu_) = false;
  absl::Status start_status_ ABSL_GUARDED_BY(started_mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<ServedMigration>> migrations_ ABSL_GUARDED_BY(mu_);

  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> handshakes_failed_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> malformed_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> shed_{0};
};

}  // namespace ferry::migration::fetch

#endif  // FERRY_MIGRATION_FETCH_PAGE_SERVER_H_
