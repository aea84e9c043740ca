#include "migration/fetch/remote_page_source.h"

#include <sys/socket.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/net.h"
#include "base/status_macros.h"
#include "sys/io_uring.h"

namespace ferry::migration::fetch {
namespace {

constexpr uint64_t kSendTag = 1;
constexpr uint64_t kRecvTag = 2;

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

struct RemotePageSource::Lane {
  UniqueFd fd;
  std::unique_ptr<sys::IoUring> ring;
  uint32_t next_tag = 1;
  uint8_t request[kRequestSize];
  std::vector<uint8_t> rx;
};

struct RemotePageSource::Inflight {
  int waiters = 0;  // guarded by the shard's mutex
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);
  vmm::PageContent content ABSL_GUARDED_BY(mu) = vmm::PageContent::kData;
  std::vector<uint8_t> data ABSL_GUARDED_BY(mu);
};

RemotePageSource::RemotePageSource(FetcherOptions options)
    : options_(std::move(options)), generation_(next_generation.fetch_add(1)) {}

RemotePageSource::~RemotePageSource() { Close(); }

void RemotePageSource::Close() {
  closed_.store(true);
  absl::MutexLock lock(&lanes_mu_);
  for (auto& lane : lanes_) shutdown(lane->fd.get(), SHUT_RDWR);
}

void RemotePageSource::PrepareThread() { (void)MyLane(); }

absl::StatusOr<std::unique_ptr<RemotePageSource::Lane>> RemotePageSource::Connect() {
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
  // Created on the thread that will use it (SINGLE_ISSUER).
  ASSIGN_OR_RETURN(lane->ring, sys::IoUring::Create(4, /*single_issuer=*/true));
  lane->rx.resize(kReplyHeaderSize + options_.page_size);
  lane_count_.fetch_add(1);
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
    RETURN_IF_ERROR(lane.ring->SubmitAndWait(1, deadline - MonotonicNowNanos()));
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
      RETURN_IF_ERROR(FromWireStatus(header.status, gpa));
      need = kReplyHeaderSize + header.data_len;
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
  rtt_.Record(MonotonicNowNanos() - t0);
  requests_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(got, std::memory_order_relaxed);
  if (header.zero_mask & 1) return vmm::FetchedPage{vmm::PageContent::kZero, nullptr};
  std::memcpy(out.data(), lane.rx.data() + kReplyHeaderSize, ps);
  return vmm::FetchedPage{vmm::PageContent::kData, out.data()};
}

absl::StatusOr<vmm::FetchedPage> RemotePageSource::Fetch(uint64_t gpa,
                                                         absl::Span<uint8_t> out) {
  const uint32_t ps = options_.page_size;
  if (out.size() < ps) return absl::InvalidArgumentError("fetch buffer is smaller than a page");
  Shard& shard = shards_[(gpa / ps) % kShards];
  std::shared_ptr<Inflight> flight;
  bool owner = false;
  {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.inflight.find(gpa);
    if (it != shard.inflight.end()) {
      flight = it->second;
      ++flight->waiters;
    } else {
      flight = std::make_shared<Inflight>();
      shard.inflight.emplace(gpa, flight);
      owner = true;
    }
  }
  if (!owner) {
    // Another thread is fetching this page: share its request.
    shared_.fetch_add(1, std::memory_order_relaxed);
    absl::MutexLock lock(&flight->mu);
    flight->mu.Await(absl::Condition(&flight->done));
    if (!flight->status.ok()) return flight->status;
    if (flight->content == vmm::PageContent::kZero)
      return vmm::FetchedPage{vmm::PageContent::kZero, nullptr};
    std::memcpy(out.data(), flight->data.data(), ps);
    return vmm::FetchedPage{vmm::PageContent::kData, out.data()};
  }

  absl::StatusOr<vmm::FetchedPage> result = [&]() -> absl::StatusOr<vmm::FetchedPage> {
    ASSIGN_OR_RETURN(Lane * lane, MyLane());
    auto r = FetchOnLane(*lane, gpa, out);
    if (!r.ok() && r.status().code() != absl::StatusCode::kOutOfRange &&
        r.status().code() != absl::StatusCode::kFailedPrecondition)
      DropLane(lane);
    return r;
  }();
  if (closed_.load() && !result.ok())
    result = absl::UnavailableError(absl::StrCat("fetch channel closed: ",
                                                 result.status().message()));

  int waiters;
  {
    absl::MutexLock lock(&shard.mu);
    shard.inflight.erase(gpa);
    waiters = flight->waiters;
  }
  if (waiters > 0) {
    absl::MutexLock lock(&flight->mu);
    flight->status = result.status();
    if (result.ok()) {
      flight->content = result->content;
      if (result->content == vmm::PageContent::kData)
        flight->data.assign(out.begin(), out.begin() + ps);
    }
    flight->done = true;
  }
  return result;
}

FetcherStats RemotePageSource::Stats() const {
  FetcherStats s;
  s.requests = requests_.load();
  s.shared = shared_.load();
  s.lanes = lane_count_.load();
  s.bytes_received = bytes_.load();
  s.round_trip = rtt_.Snapshot();
  return s;
}

}  // namespace ferry::migration::fetch
