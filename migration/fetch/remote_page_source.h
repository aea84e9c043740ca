// RemotePageSource: the destination end of the fetch channel, as a
// vmm::PageSource. The thread that faults fetches its page itself: each
// thread (vCPU or fault handler) has its own lane, a TCP connection to the
// source's page server with its own io_uring (SINGLE_ISSUER, DEFER_TASKRUN),
// created by PrepareThread() or at the thread's first fetch. A fetch is one
// io_uring_enter in the common case: the 16-byte request is sent and the
// reply received by linked operations. Faults on different vCPUs are
// requests in flight at once, each on its own lane; no fault waits for a
// thread hop or behind bulk data (the push runs on the gRPC stream).
//
// Concurrent faults on one page share one request: the first thread fetches;
// the others wait for its result and get a copy of the page. The table of
// fetches in flight is fixed (kShards x kSlots, preallocated); when a
// shard's slots are all taken a fetch goes ahead unshared (an install that
// finds its page present is success).
//
// Batches (FetchRuns, for blocking-mode fault handlers): many requests in
// flight on one lane at once (the page server answers a connection's
// requests in order), each reply's pages delivered as it completes.
//
// Failures: a broken lane is dropped and the fetch retried on a new one
// (backoff 1 ms doubling to `retry_max_backoff_ns`) for as long as the
// channel is broken (any error but a refusal: a reset, DeadlineExceeded
// after `request_timeout`, a garbled reply); the server's refusals fail at
// once (OutOfRange, FailedPrecondition for "not in postcopy yet", NotFound,
// PermissionDenied, Unauthenticated).
// Close() (the migration failed) ends every retry: waiting and later
// fetches fail with Unavailable.
//
// Threads: Fetch, PrepareThread, Close and ReleaseLanes from any thread.
#ifndef FERRY_MIGRATION_FETCH_REMOTE_PAGE_SOURCE_H_
#define FERRY_MIGRATION_FETCH_REMOTE_PAGE_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "base/histogram.h"
#include "migration/fetch/wire.h"
#include "vmm/page_source.h"

namespace ferry::migration::fetch {

struct FetcherOptions {
  std::string address;  // the source's page server, HOST:PORT
  std::string migration_id;
  Secret secret{};
  uint32_t page_size = 4096;
  int connect_timeout_ms = 5000;
  // A request unanswered this long means a dead or stopped page server
  // (TCP alone would not tell): the lane is dropped and the fetch retried.
  int64_t request_timeout_ns = 5'000'000'000;
  // A fetch that fails because the channel broke (Unavailable, a deadline)
  // is retried on a new connection, with backoff from 1 ms up to this, until
  // it succeeds or Close() (the migration failed): a vCPU never fails on a
  // transient break.
  int64_t retry_max_backoff_ns = 1'000'000'000;
  // The source seals its replies (seal.h): Hello.fetch_encrypted.
  bool encrypt = false;
};

struct FetcherStats {
  uint64_t requests = 0;      // sent on the wire
  uint64_t shared = 0;        // fetches answered by another thread's request
  uint64_t lanes = 0;         // connections opened
  uint64_t bytes_received = 0;
  uint64_t retries = 0;       // fetches retried after a broken channel
  HistogramSnapshot round_trip;  // ns, request sent to reply complete
};

class RemotePageSource final : public vmm::PageSource {
 public:
  explicit RemotePageSource(FetcherOptions options);
  ~RemotePageSource() override;

  absl::StatusOr<vmm::FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t> out) override;
  // On this thread's lane: every request of the batch (runs split into
  // requests of at most kMaxPagesPerRequest pages, up to kMaxInFlight at a
  // time) goes out before the first reply is read; each reply's pages are
  // handed to `arrived` as soon as the reply is complete. Concurrent
  // fetches of a page by other threads are not shared here (an install that
  // finds the page present is success).
  absl::Status FetchRuns(absl::Span<const vmm::PageRunRequest> runs, uint32_t page_size,
                         const vmm::PageArrivedFn& arrived) override;
  // Takes a connection made ahead by Preconnect, if one is left, for the
  // calling thread; otherwise the thread connects at its first fetch.
  void PrepareThread() override;
  // Opens `lanes` connections now (handshake included) for threads to take
  // later, so that no fetch after resume waits for a connection. A broken
  // handshake is retried (10 tries, about 1 s). Errors: the source's page
  // server cannot be reached or refuses the handshake.
  absl::Status Preconnect(int lanes);
  void Close();
  // Close(), then, once no call (Fetch, FetchRuns, PrepareThread) is inside
  // the fetcher any more, frees every lane: its socket, its ring and its
  // buffers. Called when nothing is missing, so that a migrated VM holds no
  // connection or buffer of the migration that brought it. Calls after it
  // fail at once (closed).
  void ReleaseLanes();

  FetcherStats Stats() const;

 private:
  struct Lane;
  struct Slot;
  absl::StatusOr<Lane*> MyLane();
  // A connected lane for the calling thread: a spare one, or a new one.
  absl::StatusOr<std::unique_ptr<Lane>> Connect();
  // A new connection through the handshake, without its ring.
  absl::StatusOr<std::unique_ptr<Lane>> Handshake();
  absl::StatusOr<vmm::FetchedPage> FetchOnLane(Lane& lane, uint64_t gpa,
                                               absl::Span<uint8_t> out);
  // Whether a failed fetch should be retried, after waiting out *backoff_ns
  // (doubled for the next time); false once closed.
  bool RetryAfter(const absl::Status& status, int64_t* backoff_ns);
  absl::Status FetchRunsOnce(absl::Span<const vmm::PageRunRequest> runs, uint32_t page_size,
                             const vmm::PageArrivedFn& arrived);
  void DropLane(Lane* lane);
  absl::Status FetchRoundOnLane(Lane& lane, absl::Span<const Request> requests,
                                const vmm::PageArrivedFn& arrived);

  const FetcherOptions options_;
  const uint64_t generation_;  // tells this source's lanes from another's
  std::atomic<bool> closed_{false};
  // Calls inside the fetcher now (ReleaseLanes waits for none).
  std::atomic<int> calls_{0};
  struct CallGuard {
    explicit CallGuard(std::atomic<int>& n) : n(n) { n.fetch_add(1); }
    ~CallGuard() { n.fetch_sub(1); }
    std::atomic<int>& n;
  };
  absl::Notification closed_note_;
  std::atomic<uint64_t> retries_{0};

  mutable absl::Mutex lanes_mu_;
  std::vector<std::unique_ptr<Lane>> lanes_ ABSL_GUARDED_BY(lanes_mu_);
  std::vector<std::unique_ptr<Lane>> spare_ ABSL_GUARDED_BY(lanes_mu_);  // Preconnect
  FetcherStats released_ ABSL_GUARDED_BY(lanes_mu_);  // of the lanes ReleaseLanes freed

  // Claims the slot for `gpa` (owner) or joins the fetch already in flight
  // (waiter); null when the shard is full.
  Slot* Claim(uint64_t gpa, bool* owner);

  static constexpr int kShards = 16;
  static constexpr int kSlots = 8;
  struct Shard {
    absl::Mutex mu;
    Slot* slots;  // kSlots, in slots_
  };
  std::unique_ptr<Slot[]> slots_;
  Shard shards_[kShards];

  std::atomic<uint64_t> shared_{0};
  std::atomic<uint64_t> lane_count_{0};
};

}  // namespace ferry::migration::fetch

#endif  // FERRY_MIGRATION_FETCH_REMOTE_PAGE_SOURCE_H_
