// SourceCounters: what the source of one migration has sent, by page and by
// byte, for progress and for the report. Recorded from the session thread
// (precopy rounds, stop-and-copy, the postcopy push) and from the page
// server thread (demand pages); every counter is a relaxed atomic, read at
// any time without a lock.
#ifndef FERRY_MIGRATION_SOURCE_COUNTERS_H_
#define FERRY_MIGRATION_SOURCE_COUNTERS_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace ferry::migration {

// Where page bytes went.
enum class SendPath { kPrecopy = 0, kStopAndCopy, kPush, kDemand };
inline constexpr int kSendPaths = 4;

struct SourceCounterValues {
  uint64_t bytes_sent = 0;           // page data and zero bitmaps, every path
  uint64_t distinct_pages_sent = 0;  // pages the destination was sent at least once
  uint64_t data_pages_sent = 0;      // on the stream (demand pages not included)
  uint64_t data_pages_resent = 0;    // data pages sent after an earlier send
  uint64_t zero_pages_sent = 0;      // as zero-bitmap bits
  uint64_t pages_pushed = 0;         // by the postcopy push
  uint64_t pages_demand = 0;         // served on the fetch channel
  uint64_t bytes_by_path[kSendPaths] = {};
};

class SourceCounters {
 public:
  explicit SourceCounters(uint64_t num_pages);

  // A page was sent (`is_data`: as data, else as a zero bit).
  void PageSent(uint64_t page, bool is_data);
  void BytesSent(SendPath path, uint64_t bytes);
  void DataPagesSent(uint64_t n) { data_pages_sent_.fetch_add(n, kRelaxed); }
  void ZeroPagesSent(uint64_t n) { zero_pages_sent_.fetch_add(n, kRelaxed); }
  void PagesPushed(uint64_t n) { pages_pushed_.fetch_add(n, kRelaxed); }
  void DemandPageServed() { pages_demand_.fetch_add(1, kRelaxed); }

  uint64_t bytes_sent() const { return bytes_sent_.load(kRelaxed); }
  uint64_t distinct_pages_sent() const { return distinct_pages_sent_.load(kRelaxed); }
  uint64_t pages_pushed() const { return pages_pushed_.load(kRelaxed); }
  SourceCounterValues Values() const;

 private:
  static constexpr std::memory_order kRelaxed = std::memory_order_relaxed;
  // Bit per page: sent at least once (any path).
  std::unique_ptr<std::atomic<uint64_t>[]> sent_once_;
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> distinct_pages_sent_{0};
  std::atomic<uint64_t> data_pages_sent_{0};
  std::atomic<uint64_t> data_pages_resent_{0};
  std::atomic<uint64_t> zero_pages_sent_{0};
  std::atomic<uint64_t> pages_pushed_{0};
  std::atomic<uint64_t> pages_demand_{0};
  std::atomic<uint64_t> bytes_by_path_[kSendPaths] = {};
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SOURCE_COUNTERS_H_
