#include "migration/fetch/remote_page_source.h"

#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "migration/fetch/seal.h"
#include "base/net.h"
#include "base/status_macros.h"
#include "sys/io_uring.h"

namespace ferry::migration::fetch {
namespace {

constexpr uint64_t kSendTag = 1;
constexpr uint64_t kRecvTag = 2;
// Requests of one batch on the wire at once (the page server reads up to 64
// requests per receive).
constexpr size_t kMaxInFlight = 32;
// Tries per lane in Preconnect (backoff 1 ms doubling: about 1 s in all at
// the default retry_max_backoff_ns).
constexpr int kPreconnectAttempts = 10;

std::atomic<uint64_t> next_generation{1};

// This thread's lanes, by the generation of the source that owns them.
struct LaneCacheEntry {
  uint64_t generation;
  void* lane;
};
thread_local std::vector<LaneCacheEntry> tls_lanes;

absl::Status FromWireStatus(WireStatus s, uint64_t gpa) {
  switch (s) {
    case WireStatus::kOk:
      return absl::OkStatus();
    case WireStatus::kOutOfRange:
      return absl::OutOfRangeError(
          absl::StrFormat("gpa %#x is outside the source VM's RAM", gpa));
    case WireStatus::kNotReady:
      return absl::FailedPreconditionError(
          "the source does not serve pages yet (the migration is not in postcopy)");
    case WireStatus::kUnknownMigration:
      return absl::NotFoundError("the source no longer serves this migration");
    case WireStatus::kBadRequest:
      return absl::InvalidArgumentError("the source rejected the request as malformed");
    case WireStatus::kBadProof:
      return absl::PermissionDeniedError(
          "the source rejected the proof of the migration secret");
    case WireStatus::kInternal:
      return absl::InternalError("the source failed to serve the page");
  }
  return absl::InternalError("unknown fetch status");
}

}  // namespace

// One thread's connection. Its counters are written by that thread only
// (relaxed atomics so Stats() may read them) and sit on its own lines.
struct alignas(64) RemotePageSource::Lane {
  UniqueFd fd;
  std::unique_ptr<sys::IoUring> ring;
  uint32_t next_tag = 1;
  uint8_t request[kRequestSize];
  std::vector<uint8_t> rx;
  std::vector<uint8_t> tx;  // batched requests (FetchRuns)
  std::unique_ptr<ReplySeal> seal;  // the replies' keys, when encrypted
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> bytes{0};
  LatencyHistogram rtt;
};

// A fetch in flight that other threads may wait on. Guarded by its shard's
// mutex, except `data`, written by the owner before `done` and read by
// waiters after it.
struct RemotePageSource::Slot {
  uint64_t gpa = 0;
  bool busy = false;
  bool done = false;
  int waiters = 0;
  absl::Status status;
  vmm::PageContent content = vmm::PageContent::kData;
  std::vector<uint8_t> data;  // one page, allocated once
};

RemotePageSource::RemotePageSource(FetcherOptions options)
    : options_(std::move(options)),
      generation_(next_generation.fetch_add(1)),
      slots_(new Slot[kShards * kSlots]) {
  for (int i = 0; i < kShards; ++i) shards_[i].slots = &slots_[i * kSlots];
  for (int i = 0; i < kShards * kSlots; ++i) slots_[i].data.resize(options_.page_size);
}

RemotePageSource::~RemotePageSource() { Close(); }

void RemotePageSource::Close() {
  closed_.store(true);
  if (!closed_note_.HasBeenNotified()) closed_note_.Notify();
  absl::MutexLock lock(&lanes_mu_);
  for (auto& lane : lanes_) shutdown(lane->fd.get(), SHUT_RDWR);
  spare_.clear();
}

void RemotePageSource::ReleaseLanes() {
  Close();
  // The shut-down sockets end every call soon, and closed_ stops retries;
  // a call that started just now sees closed_ before it takes a lane.
  while (calls_.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::vector<std::unique_ptr<Lane>> freed;
  {
    absl::MutexLock lock(&lanes_mu_);
    for (const auto& lane : lanes_) {  // their counters stay in Stats()
      released_.requests += lane->requests.load(std::memory_order_relaxed);
      released_.bytes_received += lane->bytes.load(std::memory_order_relaxed);
      released_.round_trip.Merge(lane->rtt.Snapshot());
    }
    freed.swap(lanes_);
    spare_.clear();
  }
}

void RemotePageSource::PrepareThread() {
  CallGuard guard(calls_);
  // Only a connection made ahead (Preconnect) is taken here: a thread that
  // never faults opens none, and none is opened at resume, when the
  // source may be busy releasing the VM.
  bool spare;
  {
    absl::MutexLock lock(&lanes_mu_);
    spare = !spare_.empty();
  }
  if (spare) (void)MyLane();
}

absl::Status RemotePageSource::Preconnect(int lanes) {
  for (int i = 0; i < lanes; ++i) {
    // A handshake the server shed (a flood of unauthenticated connections
    // on its port) or that broke is retried, a few times, before the
    // migration is failed for it; a refusal is final at once.
    absl::StatusOr<std::unique_ptr<Lane>> lane;
    int64_t backoff = 1'000'000;
    for (int attempt = 1;; ++attempt) {
      lane = Handshake();
      if (lane.ok() || attempt >= kPreconnectAttempts || !RetryAfter(lane.status(), &backoff))
        break;
    }
    RETURN_IF_ERROR(lane.status());
    absl::MutexLock lock(&lanes_mu_);
    spare_.push_back(*std::move(lane));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RemotePageSource::Lane>> RemotePageSource::Connect() {
  std::unique_ptr<Lane> lane;
  {
    absl::MutexLock lock(&lanes_mu_);
    if (!spare_.empty()) {
      lane = std::move(spare_.back());
      spare_.pop_back();
    }
  }
  if (lane == nullptr) {
    ASSIGN_OR_RETURN(lane, Handshake());
  }
  // Created on the thread that will use it (SINGLE_ISSUER).
  ASSIGN_OR_RETURN(lane->ring, sys::IoUring::Create(4, /*single_issuer=*/true));
  lane->rx.resize(kReplyHeaderSize + options_.page_size + kSealTagSize);
  lane_count_.fetch_add(1);
  return lane;
}

absl::StatusOr<std::unique_ptr<RemotePageSource::Lane>> RemotePageSource::Handshake() {
  auto lane = std::make_unique<Lane>();
  const int timeout = options_.connect_timeout_ms;
  ASSIGN_OR_RETURN(lane->fd, ConnectTcp(options_.address, timeout));
  uint8_t server_hello[kServerHelloSize];
  RETURN_IF_ERROR(RecvAll(lane->fd.get(), server_hello, sizeof(server_hello), timeout));
  ASSIGN_OR_RETURN(ServerHello sh, DecodeServerHello(server_hello));
  ClientHello ch{options_.migration_id,
                 ComputeProof(options_.secret, sh.nonce, options_.migration_id)};
  uint8_t client_hello[kClientHelloSize];
  Encode(ch, client_hello);
  RETURN_IF_ERROR(SendAll(lane->fd.get(), client_hello, sizeof(client_hello)));
  uint8_t result[kHelloResultSize];
  RETURN_IF_ERROR(RecvAll(lane->fd.get(), result, sizeof(result), timeout));
  ASSIGN_OR_RETURN(HelloResult hr, DecodeHelloResult(result));
  if (hr.status != WireStatus::kOk) {
    absl::Status s = FromWireStatus(hr.status, 0);
    return absl::Status(s.code(),
                        absl::StrCat("fetch channel handshake refused: ", s.message()));
  }
  if (options_.encrypt) {
    ASSIGN_OR_RETURN(lane->seal, ReplySeal::Create(options_.secret, sh.nonce,
                                                   options_.migration_id));
  }
  return lane;
}

absl::StatusOr<RemotePageSource::Lane*> RemotePageSource::MyLane() {
  if (closed_.load())
    return absl::UnavailableError("the fetch channel of this migration is closed");
  for (const LaneCacheEntry& e : tls_lanes)
    if (e.generation == generation_) return static_cast<Lane*>(e.lane);
  ASSIGN_OR_RETURN(std::unique_ptr<Lane> lane, Connect());
  Lane* raw = lane.get();
  {
    absl::MutexLock lock(&lanes_mu_);
    lanes_.push_back(std::move(lane));
  }
  tls_lanes.push_back({generation_, raw});
  return raw;
}

void RemotePageSource::DropLane(Lane* lane) {
  // The lane stays allocated (operations may still be in flight on its
  // buffers) until the source is destroyed; this thread opens a new one.
  shutdown(lane->fd.get(), SHUT_RDWR);
  for (auto it = tls_lanes.begin(); it != tls_lanes.end(); ++it)
    if (it->generation == generation_) {
      tls_lanes.erase(it);
      break;
    }
}

absl::StatusOr<vmm::FetchedPage> RemotePageSource::FetchOnLane(Lane& lane, uint64_t gpa,
                                                               absl::Span<uint8_t> out) {
  const uint32_t ps = options_.page_size;
  const Request request{lane.next_tag++, 1, gpa};
  Encode(request, lane.request);
  const int64_t t0 = MonotonicNowNanos();
  const int64_t deadline = t0 + options_.request_timeout_ns;

  // The common case is one io_uring_enter: send, then receive the reply.
  RETURN_IF_ERROR(lane.ring->PrepareSend(lane.fd.get(), lane.request, kRequestSize,
                                         kSendTag, /*link=*/true));
  RETURN_IF_ERROR(lane.ring->PrepareRecv(lane.fd.get(), lane.rx.data(), lane.rx.size(),
                                         kRecvTag));
  int outstanding = 2;
  size_t got = 0;
  size_t need = kReplyHeaderSize;
  bool header_done = false;
  ReplyHeader header;
  while (true) {
    // Waits for every operation in flight: the send's completion alone
    // does not end the wait (one io_uring_enter per fetch).
    RETURN_IF_ERROR(lane.ring->SubmitAndWait(outstanding, deadline - MonotonicNowNanos()));
    sys::IoCompletion c;
    while (lane.ring->PopCompletion(&c)) {
      --outstanding;
      if (c.tag == kSendTag) {
        if (c.result < 0) return sys::IoUring::CompletionError("send(fetch request)", c.result);
        if (c.result != static_cast<int32_t>(kRequestSize))
          return absl::UnavailableError("short send of a fetch request");
        continue;
      }
      if (c.result == 0)
        return absl::UnavailableError("the source closed the fetch channel");
      if (c.result < 0) return sys::IoUring::CompletionError("recv(fetch reply)", c.result);
      got += c.result;
    }
    if (!header_done && got >= kReplyHeaderSize) {
      ASSIGN_OR_RETURN(header, DecodeReplyHeader(
                                   absl::MakeConstSpan(lane.rx.data(), kReplyHeaderSize), ps));
      RETURN_IF_ERROR(MatchReply(header, request));
      // The whole reply (and its tag) is read before its status counts:
      // the lane stays in step for the next request.
      need = kReplyHeaderSize + header.data_len + (lane.seal ? kSealTagSize : 0);
      header_done = true;
    }
    if (got > need)
      return absl::InvalidArgumentError("the source sent more bytes than the reply holds");
    if (header_done && got == need && outstanding == 0) break;
    if (outstanding == 0) {
      // The reply arrived in pieces: receive the rest.
      RETURN_IF_ERROR(lane.ring->PrepareRecv(lane.fd.get(), lane.rx.data() + got,
                                             need - got, kRecvTag));
      ++outstanding;
    }
  }
  if (lane.seal) {
    uint8_t* data = lane.rx.data() + kReplyHeaderSize;
    RETURN_IF_ERROR(lane.seal->Open(lane.rx.data(), data, header.data_len, data + header.data_len));
  }
  RETURN_IF_ERROR(FromWireStatus(header.status, gpa));
  lane.rtt.Record(MonotonicNowNanos() - t0);
  lane.requests.store(lane.requests.load(std::memory_order_relaxed) + 1,
                      std::memory_order_relaxed);
  lane.bytes.store(lane.bytes.load(std::memory_order_relaxed) + got, std::memory_order_relaxed);
  if (header.zero_mask & 1) return vmm::FetchedPage{vmm::PageContent::kZero, nullptr};
  // Installed straight from the receive buffer: it stays as it is until
  // this thread's next fetch.
  (void)out;
  return vmm::FetchedPage{vmm::PageContent::kData, lane.rx.data() + kReplyHeaderSize};
}

RemotePageSource::Slot* RemotePageSource::Claim(uint64_t gpa, bool* owner) {
  Shard& shard = shards_[(gpa / options_.page_size) % kShards];
  absl::MutexLock lock(&shard.mu);
  Slot* free = nullptr;
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = shard.slots[i];
    if (s.busy && s.gpa == gpa && !s.done) {
      ++s.waiters;
      *owner = false;
      return &s;
    }
    if (!s.busy && free == nullptr) free = &s;
  }
  if (free == nullptr) return nullptr;
  free->busy = true;
  free->done = false;
  free->gpa = gpa;
  free->waiters = 0;
  free->status = absl::OkStatus();
  *owner = true;
  return free;
}

absl::StatusOr<vmm::FetchedPage> RemotePageSource::Fetch(uint64_t gpa,
                                                         absl::Span<uint8_t> out) {
  CallGuard guard(calls_);
  const uint32_t ps = options_.page_size;
  if (out.size() < ps) return absl::InvalidArgumentError("fetch buffer is smaller than a page");
  Shard& shard = shards_[(gpa / ps) % kShards];
  bool owner = true;
  Slot* slot = Claim(gpa, &owner);
  if (slot != nullptr && !owner) {
    // Another thread is fetching this page: share its request.
    shared_.fetch_add(1, std::memory_order_relaxed);
    absl::MutexLock lock(&shard.mu);
    shard.mu.Await(absl::Condition(&slot->done));
    absl::StatusOr<vmm::FetchedPage> r = vmm::FetchedPage{vmm::PageContent::kZero, nullptr};
    if (!slot->status.ok()) {
      r = slot->status;
    } else if (slot->content == vmm::PageContent::kData) {
      std::memcpy(out.data(), slot->data.data(), ps);
      r = vmm::FetchedPage{vmm::PageContent::kData, out.data()};
    }
    if (--slot->waiters == 0) slot->busy = false;  // the last one frees it
    return r;
  }

  absl::StatusOr<vmm::FetchedPage> result = absl::UnavailableError("not fetched");
  for (int64_t backoff = 1'000'000;;) {
    result = [&]() -> absl::StatusOr<vmm::FetchedPage> {
      ASSIGN_OR_RETURN(Lane * lane, MyLane());
      auto r = FetchOnLane(*lane, gpa, out);
      if (!r.ok() && r.status().code() != absl::StatusCode::kOutOfRange &&
          r.status().code() != absl::StatusCode::kFailedPrecondition)
        DropLane(lane);
      return r;
    }();
    if (result.ok() || !RetryAfter(result.status(), &backoff)) break;
  }
  if (closed_.load() && !result.ok())
    result = absl::UnavailableError(absl::StrCat("fetch channel closed: ",
                                                 result.status().message()));
  if (slot == nullptr) return result;  // the shard was full: unshared

  absl::MutexLock lock(&shard.mu);
  if (slot->waiters > 0) {
    slot->status = result.status();
    if (result.ok()) {
      slot->content = result->content;
      if (result->content == vmm::PageContent::kData)
        std::memcpy(slot->data.data(), result->data, ps);
    }
    slot->done = true;  // the last waiter frees the slot
  } else {
    slot->busy = false;
  }
  return result;
}

bool RemotePageSource::RetryAfter(const absl::Status& status, int64_t* backoff_ns) {
  // The page server's refusals are final; anything else (a reset, a
  // deadline, a garbled reply, no fds for a new lane) is the channel's.
  const absl::StatusCode c = status.code();
  const bool refused = c == absl::StatusCode::kOutOfRange ||
                       c == absl::StatusCode::kFailedPrecondition ||
                       c == absl::StatusCode::kNotFound ||
                       c == absl::StatusCode::kPermissionDenied ||
                       c == absl::StatusCode::kUnauthenticated;
  if (refused || closed_.load()) return false;
  retries_.fetch_add(1, std::memory_order_relaxed);
  if (closed_note_.WaitForNotificationWithTimeout(absl::Nanoseconds(*backoff_ns))) return false;
  *backoff_ns = std::min<int64_t>(*backoff_ns * 2, options_.retry_max_backoff_ns);
  return true;
}

absl::Status RemotePageSource::FetchRuns(absl::Span<const vmm::PageRunRequest> runs,
                                         uint32_t page_size,
                                         const vmm::PageArrivedFn& arrived) {
  CallGuard guard(calls_);
  // A broken channel: the whole batch again on a new lane (pages that
  // arrived before the break are installed already; installing one twice
  // is success).
  // The caller's own error (an install that failed) is not the channel's:
  // it ends the batch without a retry.
  absl::Status callers;
  const vmm::PageArrivedFn noted = [&](uint64_t gpa, const vmm::FetchedPage& page) {
    absl::Status st = arrived(gpa, page);
    if (!st.ok()) callers = st;
    return st;
  };
  absl::Status s;
  for (int64_t backoff = 1'000'000;;) {
    s = FetchRunsOnce(runs, page_size, noted);
    if (s.ok() || !callers.ok() || !RetryAfter(s, &backoff)) return s;
  }
}

absl::Status RemotePageSource::FetchRunsOnce(absl::Span<const vmm::PageRunRequest> runs,
                                             uint32_t page_size,
                                             const vmm::PageArrivedFn& arrived) {
  if (page_size != options_.page_size)
    return absl::InvalidArgumentError("fetch of another page size than the fetcher's");
  ASSIGN_OR_RETURN(Lane* lane, MyLane());
  std::vector<Request> requests;
  for (const vmm::PageRunRequest& run : runs)
    for (uint32_t done = 0; done < run.count; done += kMaxPagesPerRequest) {
      const uint32_t n = std::min<uint32_t>(kMaxPagesPerRequest, run.count - done);
      requests.push_back(Request{0, static_cast<uint8_t>(n), run.gpa + uint64_t{done} * page_size});
    }
  absl::Status s;
  for (size_t first = 0; first < requests.size() && s.ok(); first += kMaxInFlight) {
    const size_t n = std::min(kMaxInFlight, requests.size() - first);
    for (size_t i = first; i < first + n; ++i) requests[i].tag = lane->next_tag++;
    s = FetchRoundOnLane(*lane, absl::MakeConstSpan(requests).subspan(first, n), arrived);
  }
  if (!s.ok()) {
    // Replies may still be on their way: the lane's stream is out of step.
    DropLane(lane);
    if (closed_.load())
      s = absl::UnavailableError(absl::StrCat("fetch channel closed: ", s.message()));
  }
  return s;
}

absl::Status RemotePageSource::FetchRoundOnLane(Lane& lane, absl::Span<const Request> requests,
                                                const vmm::PageArrivedFn& arrived) {
  const uint32_t ps = options_.page_size;
  const size_t tag = lane.seal ? kSealTagSize : 0;
  const size_t max_reply = kReplyHeaderSize + size_t{kMaxPagesPerRequest} * ps + tag;
  if (lane.rx.size() < 2 * max_reply) lane.rx.resize(2 * max_reply);
  std::vector<uint8_t>& tx = lane.tx;
  tx.resize(requests.size() * kRequestSize);
  for (size_t i = 0; i < requests.size(); ++i) Encode(requests[i], tx.data() + i * kRequestSize);
  const int64_t t0 = MonotonicNowNanos();
  const int64_t deadline = t0 + options_.request_timeout_ns;
  // Every request out first (a few hundred bytes: the socket takes them).
  for (size_t sent = 0; sent < tx.size();) {
    RETURN_IF_ERROR(lane.ring->PrepareSend(lane.fd.get(), tx.data() + sent, tx.size() - sent,
                                           kSendTag, /*link=*/false));
    RETURN_IF_ERROR(lane.ring->SubmitAndWait(1, deadline - MonotonicNowNanos()));
    sys::IoCompletion c;
    while (lane.ring->PopCompletion(&c)) {
      if (c.result <= 0) return sys::IoUring::CompletionError("send(fetch requests)", c.result);
      sent += c.result;
    }
  }
  // Then the replies, in order, each delivered once complete.
  size_t begin = 0, end = 0, next = 0;
  while (next < requests.size()) {
    while (next < requests.size() && end - begin >= kReplyHeaderSize) {
      ASSIGN_OR_RETURN(ReplyHeader h, DecodeReplyHeader(
                                          absl::MakeConstSpan(lane.rx.data() + begin,
                                                              kReplyHeaderSize), ps));
      const Request& req = requests[next];
      RETURN_IF_ERROR(MatchReply(h, req));
      if (h.status != WireStatus::kOk) {
        // Failed: the lane is dropped by the caller, so the tag need not
        // be read.
        return FromWireStatus(h.status, req.gpa);
      }
      const uint32_t mask = req.count >= 32 ? ~0u : ((1u << req.count) - 1);
      const uint64_t data_pages = req.count - __builtin_popcount(h.zero_mask & mask);
      if (h.data_len != data_pages * ps)
        return absl::InvalidArgumentError(absl::StrFormat(
            "fetch reply for gpa %#x holds %d bytes for %d non-zero pages", req.gpa,
            h.data_len, data_pages));
      const size_t need = kReplyHeaderSize + h.data_len + tag;
      if (end - begin < need) break;
      uint8_t* data = lane.rx.data() + begin + kReplyHeaderSize;
      if (lane.seal)
        RETURN_IF_ERROR(lane.seal->Open(lane.rx.data() + begin, data, h.data_len,
                                        data + h.data_len));
      for (uint32_t i = 0; i < req.count; ++i) {
        const uint64_t gpa = req.gpa + uint64_t{i} * ps;
        if ((h.zero_mask >> i) & 1) {
          RETURN_IF_ERROR(arrived(gpa, vmm::FetchedPage{vmm::PageContent::kZero, nullptr}));
        } else {
          RETURN_IF_ERROR(arrived(gpa, vmm::FetchedPage{vmm::PageContent::kData, data}));
          data += ps;
        }
      }
      lane.rtt.Record(MonotonicNowNanos() - t0);
      lane.requests.store(lane.requests.load(std::memory_order_relaxed) + 1,
                          std::memory_order_relaxed);
      lane.bytes.store(lane.bytes.load(std::memory_order_relaxed) + need,
                       std::memory_order_relaxed);
      begin += need;
      ++next;
    }
    if (next == requests.size()) break;
    if (begin > 0) {
      std::memmove(lane.rx.data(), lane.rx.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    RETURN_IF_ERROR(lane.ring->PrepareRecv(lane.fd.get(), lane.rx.data() + end,
                                           lane.rx.size() - end, kRecvTag));
    RETURN_IF_ERROR(lane.ring->SubmitAndWait(1, deadline - MonotonicNowNanos()));
    sys::IoCompletion c;
    while (lane.ring->PopCompletion(&c)) {
      if (c.result == 0) return absl::UnavailableError("the source closed the fetch channel");
      if (c.result < 0) return sys::IoUring::CompletionError("recv(fetch replies)", c.result);
      end += c.result;
    }
  }
  if (end != begin)
    return absl::InvalidArgumentError("the source sent more bytes than the replies hold");
  return absl::OkStatus();
}

FetcherStats RemotePageSource::Stats() const {
  FetcherStats s;
  s.shared = shared_.load();
  s.retries = retries_.load();
  s.lanes = lane_count_.load();
  absl::MutexLock lock(&lanes_mu_);
  s.requests = released_.requests;  // lanes freed by ReleaseLanes
  s.bytes_received = released_.bytes_received;
  s.round_trip = released_.round_trip;
  for (const auto& lane : lanes_) {
    s.requests += lane->requests.load(std::memory_order_relaxed);
    s.bytes_received += lane->bytes.load(std::memory_order_relaxed);
    s.round_trip.Merge(lane->rtt.Snapshot());
  }
  return s;
}

}  // namespace ferry::migration::fetch
