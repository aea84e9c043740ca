#include "migration/fetch/page_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <iostream>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/errno_status.h"
#include "base/net.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "migration/fetch/seal.h"
#include "sys/io_uring.h"
#include "vmm/page_source.h"

namespace ferry::migration::fetch {
namespace {

constexpr unsigned kRingDepth = 256;
constexpr size_t kRecvBuffer = 64 * kRequestSize;
// Limits (docs/security.md): connections at once (past it a new one is
// closed at accept), the time a connection has to finish its handshake,
// and the replies queued on one connection (past it the server stops
// reading its requests until the peer reads replies: a client that sends
// and never reads costs at most this much memory).
constexpr size_t kMaxConnections = 1024;
// Of those, at most this many still in their handshake (unauthenticated):
// a new connection past it sheds the oldest unauthenticated one, so a flood
// of silent connections never crowds out a running migration's lanes (a
// lane finishes its handshake in one round trip).
constexpr size_t kMaxUnauthenticated = 64;
constexpr int64_t kHandshakeTimeoutNs = 5'000'000'000;
constexpr size_t kMaxQueuedReplyBytes = 4 << 20;
// The loop wakes at least this often to enforce the timeouts.
constexpr int64_t kTickNs = 250'000'000;
// After an accept error (e.g. no file descriptors left) accepting pauses
// this long instead of spinning.
constexpr int64_t kAcceptBackoffNs = 100'000'000;
enum Op : uint64_t { kAccept = 1, kRecv = 2, kSend = 3, kStop = 4 };
uint64_t Tag(uint64_t conn, Op op) { return (conn << 4) | op; }

}  // namespace

ServedMigration::ServedMigration(std::string id, Secret secret,
                                 const vmm::GuestMemory* memory, ServedFn on_served,
                                 bool encrypt)
    : id_(std::move(id)),
      secret_(secret),
      memory_(memory),
      on_served_(std::move(on_served)),
      encrypt_(encrypt) {}

void ServedMigration::EnableServing() {
  absl::MutexLock lock(&mu_);
  serving_ = true;
}

void ServedMigration::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

void ServedMigration::Serve(const Request& request, std::vector<uint8_t>* out) {
  const uint32_t ps = memory_->page_size();
  ReplyHeader h;
  h.tag = request.tag;
  h.count = request.count;
  h.gpa = request.gpa;
  const size_t header_at = out->size();
  out->resize(header_at + kReplyHeaderSize);
  requests_.fetch_add(1, std::memory_order_relaxed);
  {
    absl::ReaderMutexLock lock(&mu_);
    if (closed_) {
      h.status = WireStatus::kUnknownMigration;
    } else if (!serving_) {
      h.status = WireStatus::kNotReady;
    } else if (request.gpa % ps != 0 ||
               !memory_->map().GpaToOffset(request.gpa, uint64_t{request.count} * ps).ok()) {
      h.status = WireStatus::kOutOfRange;
    } else {
      const uint8_t* src = *memory_->HostAddress(request.gpa, uint64_t{request.count} * ps);
      for (int i = 0; i < request.count; ++i, src += ps) {
        if (vmm::IsZeroPage(src, ps)) {
          h.zero_mask |= 1u << i;
        } else {
          out->insert(out->end(), src, src + ps);
          h.data_len += ps;
        }
      }
      pages_served_.fetch_add(request.count, std::memory_order_relaxed);
      if (on_served_) on_served_(request.gpa, request.count);
    }
  }
  Encode(h, out->data() + header_at);
}

// One accepted connection. Owned by the loop; freed only when no operation
// referencing its buffers is in flight.
struct PageServer::Conn {
  uint64_t id = 0;
  UniqueFd fd;
  bool hello_done = false;
  bool closing = false;  // no more receives; close once queued bytes are sent
  bool aborted = false;  // drop queued bytes; close once operations complete
  Nonce nonce{};
  std::shared_ptr<ServedMigration> migration;
  std::unique_ptr<ReplySeal> seal;  // when the migration encrypts
  std::vector<uint8_t> in = std::vector<uint8_t>(kRecvBuffer);
  size_t in_len = 0;
  std::vector<uint8_t> sending, pending;
  size_t send_pos = 0;
  int in_flight = 0;
  bool recv_posted = false;
  bool send_posted = false;
  int64_t accepted_ns = 0;
  size_t queued() const { return pending.size() + (sending.size() - send_pos); }
  // Reply timing: bytes ever queued and ever sent on this connection, and
  // for each reply not yet sent whole, where it ends in that count and
  // when its request was read.
  uint64_t queued_total = 0;
  uint64_t sent_total = 0;
  // When the receive that brought the oldest unhandled byte of `in`
  // completed: requests held back (replies over kMaxQueuedReplyBytes) are
  // timed from their arrival, not from when they are handled.
  int64_t in_read_ns = 0;
  std::deque<std::pair<uint64_t, int64_t>> unsent_replies;
  void Queue(const uint8_t* bytes, size_t n) {
    pending.insert(pending.end(), bytes, bytes + n);
    queued_total += n;
  }
};

absl::StatusOr<std::unique_ptr<PageServer>> PageServer::Start(absl::string_view address) {
  ASSIGN_OR_RETURN(TcpListener l, ListenTcp(address));
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return ErrnoStatus("eventfd", errno);
  auto server = std::unique_ptr<PageServer>(
      new PageServer(std::move(l.fd), l.port, std::move(stop)));
  server->thread_ = std::thread(&PageServer::Loop, server.get());
  absl::Status started;
  {
    absl::MutexLock lock(&server->started_mu_);
    server->started_mu_.Await(absl::Condition(&server->started_));
    started = server->start_status_;
  }
  if (!started.ok()) {
    server->thread_.join();
    return started;
  }
  return server;
}

PageServer::PageServer(UniqueFd listener, int port, UniqueFd stop)
    : listener_(std::move(listener)), port_(port), stop_fd_(std::move(stop)) {}

PageServer::~PageServer() {
  uint64_t one = 1;
  (void)!write(stop_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  for (auto& [id, m] : migrations_) m->Close();
}

void PageServer::Register(std::shared_ptr<ServedMigration> migration) {
  absl::MutexLock lock(&mu_);
  migrations_[migration->id()] = std::move(migration);
}

void PageServer::Unregister(const std::string& id) {
  std::shared_ptr<ServedMigration> m;
  {
    absl::MutexLock lock(&mu_);
    auto it = migrations_.find(id);
    if (it == migrations_.end()) return;
    m = it->second;
    migrations_.erase(it);
  }
  m->Close();
}

std::shared_ptr<ServedMigration> PageServer::Find(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = migrations_.find(id);
  return it == migrations_.end() ? nullptr : it->second;
}

PageServerStats PageServer::Stats() const {
  return {connections_.load(), handshakes_failed_.load(), requests_.load(), malformed_.load(),
          refused_.load(), shed_.load()};
}

void PageServer::Loop() {
  absl::Status s = Run();
  if (!s.ok()) {
    absl::MutexLock lock(&started_mu_);
    if (!started_) {
      start_status_ = s;
      started_ = true;
      return;
    }
    std::cerr << "ferry page server stopped: " << s << "\n";
  }
}

absl::Status PageServer::Run() {
  // A faulting vCPU waits on this thread: it goes before the source's bulk
  // push and any other work of the agent when cores are scarce. Best
  // effort (raising priority needs CAP_SYS_NICE; a sandboxed ferry-vmm has
  // none, and its supervisor raises the thread it finds by name).
  pthread_setname_np(pthread_self(), kPageServerThreadName);
  SetThreadNice(-10);
  // The ring is created here: with SINGLE_ISSUER it belongs to this thread.
  ASSIGN_OR_RETURN(auto ring, sys::IoUring::Create(kRingDepth, true));
  {
    absl::MutexLock lock(&started_mu_);
    started_ = true;
  }
  std::map<uint64_t, std::unique_ptr<Conn>> conns;
  uint64_t next_conn = 1;
  uint64_t stop_value = 0;
  RETURN_IF_ERROR(ring->PrepareAccept(listener_.get(), Tag(0, kAccept)));
  RETURN_IF_ERROR(ring->PrepareRead(stop_fd_.get(), &stop_value, sizeof(stop_value),
                                    Tag(0, kStop)));

  auto post_recv = [&](Conn& c) -> absl::Status {
    if (c.recv_posted || c.closing) return absl::OkStatus();
    // Backpressure: no more requests while the peer leaves replies unread.
    if (c.queued() >= kMaxQueuedReplyBytes) return absl::OkStatus();
    if (c.hello_done && c.in_len == c.in.size()) return absl::OkStatus();
    size_t want = c.hello_done ? c.in.size() - c.in_len : kClientHelloSize - c.in_len;
    RETURN_IF_ERROR(ring->PrepareRecv(c.fd.get(), c.in.data() + c.in_len, want,
                                      Tag(c.id, kRecv)));
    c.recv_posted = true;
    ++c.in_flight;
    return absl::OkStatus();
  };
  auto flush = [&](Conn& c) -> absl::Status {
    if (c.send_posted) return absl::OkStatus();
    if (c.send_pos == c.sending.size()) {
      c.sending.clear();
      c.send_pos = 0;
      std::swap(c.sending, c.pending);
    }
    if (c.sending.empty()) return absl::OkStatus();
    RETURN_IF_ERROR(ring->PrepareSend(c.fd.get(), c.sending.data() + c.send_pos,
                                      c.sending.size() - c.send_pos, Tag(c.id, kSend)));
    c.send_posted = true;
    ++c.in_flight;
    return absl::OkStatus();
  };
  // Abort: queued bytes are dropped; shutting the socket down makes every
  // operation in flight on it complete promptly.
  auto abort_conn = [&](Conn& c) {
    c.closing = c.aborted = true;
    c.pending.clear();
    c.unsent_replies.clear();
    shutdown(c.fd.get(), SHUT_RDWR);
  };
  auto drained = [](const Conn& c) {
    return c.in_flight == 0 &&
           (c.aborted || (c.pending.empty() && c.send_pos == c.sending.size()));
  };
  auto handle_hello = [&](Conn& c) {
    HelloResult result;
    auto hello = DecodeClientHello(absl::MakeConstSpan(c.in.data(), kClientHelloSize));
    if (!hello.ok()) {
      result.status = WireStatus::kBadRequest;
    } else if (auto m = Find(hello->migration_id); m == nullptr) {
      result.status = WireStatus::kUnknownMigration;
    } else if (!ProofEquals(hello->proof,
                            ComputeProof(m->secret(), c.nonce, hello->migration_id))) {
      result.status = WireStatus::kBadProof;
    } else if (m->encrypt() &&
               !(c.seal = ReplySeal::Create(m->secret(), c.nonce, hello->migration_id)
                              .value_or(nullptr))) {
      result.status = WireStatus::kInternal;
    } else {
      c.migration = std::move(m);
      c.hello_done = true;
    }
    uint8_t out[kHelloResultSize];
    Encode(result, out);
    c.Queue(out, kHelloResultSize);
    c.in_len = 0;
    if (!c.hello_done) {
      handshakes_failed_.fetch_add(1);
      c.closing = true;  // close once the result is sent
    }
  };
  auto handle_requests = [&](Conn& c) {
    const int64_t read_ns = c.in_read_ns;
    size_t at = 0;
    while (c.in_len - at >= kRequestSize && c.queued() < kMaxQueuedReplyBytes) {
      auto req = DecodeRequest(absl::MakeConstSpan(c.in.data() + at, kRequestSize));
      at += kRequestSize;
      if (!req.ok()) {
        malformed_.fetch_add(1);
        abort_conn(c);
        return;
      }
      requests_.fetch_add(1, std::memory_order_relaxed);
      const size_t at0 = c.pending.size();
      c.migration->Serve(*req, &c.pending);
      if (c.seal) {
        const size_t len = c.pending.size() - at0 - kReplyHeaderSize;
        c.pending.resize(c.pending.size() + kSealTagSize);
        uint8_t* h = c.pending.data() + at0;
        if (!c.seal->Seal(h, h + kReplyHeaderSize, len, h + kReplyHeaderSize + len).ok()) {
          abort_conn(c);
          return;
        }
      }
      c.queued_total += c.pending.size() - at0;
      c.unsent_replies.emplace_back(c.queued_total, read_ns);
    }
    std::memmove(c.in.data(), c.in.data() + at, c.in_len - at);
    c.in_len -= at;
  };

  bool stopping = false;
  bool accept_armed = true;
  int64_t accept_resume_ns = 0;
  int64_t next_tick_ns = MonotonicNowNanos() + kTickNs;
  // Every tick: handshakes that took too long and connections of
  // migrations no longer served are closed; a paused accept is re-armed.
  auto tick = [&]() -> absl::Status {
    const int64_t now = MonotonicNowNanos();
    if (now < next_tick_ns) return absl::OkStatus();
    next_tick_ns = now + kTickNs;
    for (auto it = conns.begin(); it != conns.end();) {
      Conn& c = *it->second;
      const bool stale_handshake = !c.hello_done && now - c.accepted_ns > kHandshakeTimeoutNs;
      const bool gone = c.migration != nullptr && c.migration->closed();
      if ((stale_handshake || gone) && !c.aborted) {
        if (stale_handshake) handshakes_failed_.fetch_add(1);
        abort_conn(c);
      }
      it = c.aborted && c.in_flight == 0 ? conns.erase(it) : std::next(it);
    }
    if (!accept_armed && !stopping && now >= accept_resume_ns) {
      RETURN_IF_ERROR(ring->PrepareAccept(listener_.get(), Tag(0, kAccept)));
      accept_armed = true;
    }
    return absl::OkStatus();
  };
  while (!stopping || !conns.empty()) {
    absl::Status waited = ring->SubmitAndWait(1, kTickNs);
    if (!waited.ok() && !absl::IsDeadlineExceeded(waited)) return waited;
    RETURN_IF_ERROR(tick());
    sys::IoCompletion cqe;
    while (ring->PopCompletion(&cqe)) {
      const uint64_t conn_id = cqe.tag >> 4;
      const Op op = static_cast<Op>(cqe.tag & 0xf);
      if (op == kStop) {
        stopping = true;
        for (auto it = conns.begin(); it != conns.end();) {
          abort_conn(*it->second);
          it = it->second->in_flight == 0 ? conns.erase(it) : std::next(it);
        }
        continue;
      }
      if (op == kAccept) {
        accept_armed = false;
        size_t live = 0, unauthenticated = 0;
        Conn* oldest_unauthenticated = nullptr;
        for (auto& [id, conn] : conns) {
          if (conn->aborted) continue;
          ++live;
          if (!conn->hello_done && ++unauthenticated == 1) oldest_unauthenticated = conn.get();
        }
        if (cqe.result >= 0 && !stopping && oldest_unauthenticated != nullptr &&
            (unauthenticated >= kMaxUnauthenticated || live >= kMaxConnections)) {
          // Unauthenticated connections are shed first, oldest first.
          abort_conn(*oldest_unauthenticated);
          shed_.fetch_add(1);
          --live;
        }
        if (cqe.result >= 0 && !stopping && live >= kMaxConnections) {
          close(cqe.result);  // at the limit: refused at once
          refused_.fetch_add(1);
        } else if (cqe.result >= 0 && !stopping) {
          auto c = std::make_unique<Conn>();
          c->id = next_conn++;
          c->fd.Reset(cqe.result);
          c->accepted_ns = MonotonicNowNanos();
          int one = 1;
          setsockopt(c->fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          RETURN_IF_ERROR(RandomBytes(absl::MakeSpan(c->nonce)));
          uint8_t hello[kServerHelloSize];
          Encode(ServerHello{c->nonce}, hello);
          c->Queue(hello, kServerHelloSize);
          connections_.fetch_add(1);
          RETURN_IF_ERROR(flush(*c));
          RETURN_IF_ERROR(post_recv(*c));
          conns[c->id] = std::move(c);
        } else if (cqe.result >= 0) {
          close(cqe.result);
        }
        if (cqe.result < 0 && !stopping) {
          // EMFILE and the like: try again after a pause, not at once.
          accept_resume_ns = MonotonicNowNanos() + kAcceptBackoffNs;
        } else if (!stopping) {
          RETURN_IF_ERROR(ring->PrepareAccept(listener_.get(), Tag(0, kAccept)));
          accept_armed = true;
        }
        continue;
      }
      auto it = conns.find(conn_id);
      if (it == conns.end()) continue;
      Conn& c = *it->second;
      --c.in_flight;
      if (op == kRecv) {
        c.recv_posted = false;
        if (cqe.result <= 0) {
          if (!c.closing) abort_conn(c);  // peer closed or failed
        } else if (!c.closing) {
          if (c.in_len == 0) c.in_read_ns = MonotonicNowNanos();
          c.in_len += cqe.result;
          if (!c.hello_done) {
            if (c.in_len == kClientHelloSize) handle_hello(c);
          } else {
            handle_requests(c);
          }
        }
      } else if (op == kSend) {
        c.send_posted = false;
        if (cqe.result < 0) {
          abort_conn(c);
        } else {
          c.send_pos += cqe.result;
          c.sent_total += cqe.result;
          if (!c.unsent_replies.empty()) {
            const int64_t now = MonotonicNowNanos();
            while (!c.unsent_replies.empty() && c.unsent_replies.front().first <= c.sent_total) {
              if (c.migration) c.migration->RecordService(now - c.unsent_replies.front().second);
              c.unsent_replies.pop_front();
            }
          }
          // Replies drained: requests left waiting in the buffer go on.
          if (c.hello_done && !c.closing && c.queued() < kMaxQueuedReplyBytes)
            handle_requests(c);
        }
      }
      if (!c.aborted) RETURN_IF_ERROR(flush(c));
      RETURN_IF_ERROR(post_recv(c));
      if (c.closing && drained(c)) conns.erase(it);
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::migration::fetch
