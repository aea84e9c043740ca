#include "migration/push_order.h"

#include <algorithm>

namespace ferry::migration {

PostcopyPushOrder::PostcopyPushOrder(uint64_t num_pages)
    : num_pages_(num_pages), unsent_(new std::atomic<uint64_t>[(num_pages + 63) / 64]()) {
  for (auto& f : fault_ring_) f.store(0, std::memory_order_relaxed);
}

void PostcopyPushOrder::MarkUnsent(uint64_t page) {
  const uint64_t bit = 1ull << (page % 64);
  if (!(unsent_[page / 64].fetch_or(bit, std::memory_order_acq_rel) & bit))
    left_.fetch_add(1, std::memory_order_acq_rel);
}

bool PostcopyPushOrder::Take(uint64_t page) {
  if (page >= num_pages_) return false;
  const uint64_t bit = 1ull << (page % 64);
  if (unsent_[page / 64].fetch_and(~bit, std::memory_order_acq_rel) & bit) {
    left_.fetch_sub(1, std::memory_order_acq_rel);
    return true;
  }
  return false;
}

void PostcopyPushOrder::RecordFault(uint64_t page) {
  const uint64_t n = faults_.fetch_add(1, std::memory_order_acq_rel);
  fault_ring_[n % kFaultRing].store(page, std::memory_order_release);
}

void PostcopyPushOrder::NextBatch(uint64_t max, std::vector<uint64_t>* batch) {
  batch->clear();
  // Pages near recent faults first.
  const uint64_t faults = faults_.load(std::memory_order_acquire);
  if (faults - faults_seen_ > kFaultRing) faults_seen_ = faults - kFaultRing;
  for (; faults_seen_ < faults && batch->size() < max; ++faults_seen_) {
    const uint64_t f = fault_ring_[faults_seen_ % kFaultRing].load(std::memory_order_acquire);
    const uint64_t end = std::min(num_pages_, f + 1 + kFaultWindow);
    for (uint64_t p = f + 1; p < end && batch->size() < max; ++p)
      if (Take(p)) batch->push_back(p);
  }
  // Then the rest, in order from where the last scan stopped.
  for (uint64_t scanned = 0; batch->size() < max && scanned < num_pages_ && left() > 0;
       ++scanned) {
    if (Take(cursor_)) batch->push_back(cursor_);
    cursor_ = (cursor_ + 1) % num_pages_;
  }
}

}  // namespace ferry::migration
