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
// Failures: a broken lane is dropped (the next fetch on that thread
// reconnects); a fetch fails with Unavailable when the connection breaks,
// DeadlineExceeded after `request_timeout`, and the server's status
// otherwise (OutOfRange, FailedPrecondition for "not in postcopy yet").
// Close() makes every waiting and later fetch fail with Unavailable.
//
// Threads: Fetch, PrepareThread and Close from any thread.
#ifndef FERRY_MIGRATION_FETCH_REMOTE_PAGE_SOURCE_H_
#define FERRY_MIGRATION_FETCH_REMOTE_PAGE_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
  int64_t request_timeout_ns = 30'000'000'000;
};

struct FetcherStats {
  uint64_t requests = 0;      // sent on the wire
  uint64_t shared = 0;        // fetches answered by another thread's request
  uint64_t lanes = 0;         // connections opened
  uint64_t bytes_received = 0;
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
  void PrepareThread() override;
  void Close();

  FetcherStats Stats() const;

 private:
  struct Lane;
  struct Slot;
  absl::StatusOr<Lane*> MyLane();
  absl::StatusOr<std::unique_ptr<Lane>> Connect();
  absl::StatusOr<vmm::FetchedPage> FetchOnLane(Lane& lane, uint64_t gpa,
                                               absl::Span<uint8_t> out);
  void DropLane(Lane* lane);
  absl::Status FetchRoundOnLane(Lane& lane, absl::Span<const Request> requests,
                                const vmm::PageArrivedFn& arrived);

  const FetcherOptions options_;
  const uint64_t generation_;  // tells this source's lanes from another's
  std::atomic<bool> closed_{false};

  mutable absl::Mutex lanes_mu_;
  std::vector<std::unique_ptr<Lane>> lanes_ ABSL_GUARDED_BY(lanes_mu_);

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
