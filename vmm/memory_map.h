// MemoryMap: the guest-physical address space as memory slots. Each slot maps
// guest-physical [gpa, gpa + size) onto the guest memory file at
// [offset, offset + size). Offsets of consecutive slots are contiguous from
// 0, so the file (and its one host mapping) is "RAM offset" space; gpa space
// may have holes (the PC layout leaves [3 GiB, 4 GiB) for devices).
//
// Immutable after creation; safe to share between threads.
//
//   ASSIGN_OR_RETURN(MemoryMap map, MemoryMap::ForSize(6ull << 30, 4096));
//   ASSIGN_OR_RETURN(uint64_t off, map.GpaToOffset(gpa, 8));  // OutOfRange if not RAM
#ifndef FERRY_VMM_MEMORY_MAP_H_
#define FERRY_VMM_MEMORY_MAP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::vmm {

struct MemorySlot {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t offset = 0;
};

class MemoryMap {
 public:
  // The default layout for `memory_bytes` of RAM: one slot at gpa 0 up to
  // 3 GiB, the rest above 4 GiB.
  static absl::StatusOr<MemoryMap> ForSize(uint64_t memory_bytes, uint32_t page_size);
  // Validates explicit slots: page aligned, sorted by gpa, not overlapping,
  // offsets contiguous from 0.
  static absl::StatusOr<MemoryMap> Create(std::vector<MemorySlot> slots,
                                          uint32_t page_size);

  uint64_t memory_bytes() const { return memory_bytes_; }
  uint32_t page_size() const { return page_size_; }
  uint64_t num_pages() const { return memory_bytes_ / page_size_; }
  const std::vector<MemorySlot>& slots() const { return slots_; }

  // The RAM offset of guest-physical [gpa, gpa + len), which must lie inside
  // one slot; OutOfRange otherwise, naming the address.
  absl::StatusOr<uint64_t> GpaToOffset(uint64_t gpa, uint64_t len) const;
  // The gpa of RAM offset `offset` (< memory_bytes()).
  uint64_t OffsetToGpa(uint64_t offset) const;

  std::string DebugString() const;

 private:
  MemoryMap(std::vector<MemorySlot> slots, uint32_t page_size, uint64_t bytes)
      : slots_(std::move(slots)), page_size_(page_size), memory_bytes_(bytes) {}

  std::vector<MemorySlot> slots_;
  uint32_t page_size_ = 4096;
  uint64_t memory_bytes_ = 0;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_MEMORY_MAP_H_
