#include "migration/source_counters.h"

namespace ferry::migration {

SourceCounters::SourceCounters(uint64_t num_pages)
    : sent_once_(new std::atomic<uint64_t>[(num_pages + 63) / 64]()) {}

void SourceCounters::PageSent(uint64_t page, bool is_data) {
  const uint64_t bit = 1ull << (page % 64);
  if (!(sent_once_[page / 64].fetch_or(bit, kRelaxed) & bit)) {
    distinct_pages_sent_.fetch_add(1, kRelaxed);
  } else if (is_data) {
    data_pages_resent_.fetch_add(1, kRelaxed);
  }
}

void SourceCounters::BytesSent(SendPath path, uint64_t bytes) {
  bytes_sent_.fetch_add(bytes, kRelaxed);
  bytes_by_path_[static_cast<int>(path)].fetch_add(bytes, kRelaxed);
}

SourceCounterValues SourceCounters::Values() const {
  SourceCounterValues v;
  v.bytes_sent = bytes_sent_.load(kRelaxed);
  v.distinct_pages_sent = distinct_pages_sent_.load(kRelaxed);
  v.data_pages_sent = data_pages_sent_.load(kRelaxed);
  v.data_pages_resent = data_pages_resent_.load(kRelaxed);
  v.zero_pages_sent = zero_pages_sent_.load(kRelaxed);
  v.pages_pushed = pages_pushed_.load(kRelaxed);
  v.pages_demand = pages_demand_.load(kRelaxed);
  for (int i = 0; i < kSendPaths; ++i) v.bytes_by_path[i] = bytes_by_path_[i].load(kRelaxed);
  return v;
}

}  // namespace ferry::migration
