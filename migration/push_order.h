// PostcopyPushOrder: which pages the source still owes the destination after
// switchover, and in what order the background push sends them: pages just
// after recent demand faults first (a guest that faulted on page p is likely
// to touch p+1.. next), then the rest in ascending order, wrapping.
//
// A page is taken exactly once, by whichever path gets it first: the push
// (NextBatch) or the page server answering a demand fault (Take). Thread-
// safe: Take() and RecordFault() run on the page server thread while
// NextBatch() runs on the session thread; lock-free.
//
//   PostcopyPushOrder order(num_pages);
//   order.MarkUnsent(p);                       // for every page still owed
//   while (order.left() > 0) {
//     order.NextBatch(kPushFramePages, &batch);    // may be empty: demand took them
//     ...send batch...
//   }
#ifndef FERRY_MIGRATION_PUSH_ORDER_H_
#define FERRY_MIGRATION_PUSH_ORDER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace ferry::migration {

class PostcopyPushOrder {
 public:
  // Pages after each recent fault that go first.
  static constexpr uint64_t kFaultWindow = 32;
  // Recent faults remembered.
  static constexpr int kFaultRing = 64;

  explicit PostcopyPushOrder(uint64_t num_pages);

  // Marks `page` as owed (before the push starts; not thread-safe with Take).
  void MarkUnsent(uint64_t page);
  // Takes `page` if it is still owed: true exactly once per owed page.
  bool Take(uint64_t page);
  // A destination vCPU faulted on `page`: the push looks near it next.
  void RecordFault(uint64_t page);
  // Replaces *batch with up to `max` owed pages, taken, in push order.
  void NextBatch(uint64_t max, std::vector<uint64_t>* batch);

  uint64_t left() const { return left_.load(std::memory_order_acquire); }

 private:
  const uint64_t num_pages_;
  std::unique_ptr<std::atomic<uint64_t>[]> unsent_;  // bit per page
  std::atomic<uint64_t> left_{0};
  std::atomic<uint64_t> fault_ring_[kFaultRing];
  std::atomic<uint64_t> faults_{0};
  // Session thread only.
  uint64_t faults_seen_ = 0;
  uint64_t cursor_ = 0;
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_PUSH_ORDER_H_
