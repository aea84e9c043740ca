#include "vmm/memory_map.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::vmm {
namespace {

constexpr uint64_t kLowMemoryTop = 3ull << 30;
constexpr uint64_t kHighMemoryBase = 4ull << 30;

}  // namespace

absl::StatusOr<MemoryMap> MemoryMap::ForSize(uint64_t memory_bytes,
                                             uint32_t page_size) {
  std::vector<MemorySlot> slots;
  if (memory_bytes <= kLowMemoryTop) {
    slots.push_back({0, memory_bytes, 0});
  } else {
    slots.push_back({0, kLowMemoryTop, 0});
    slots.push_back({kHighMemoryBase, memory_bytes - kLowMemoryTop, kLowMemoryTop});
  }
  return Create(std::move(slots), page_size);
}

absl::StatusOr<MemoryMap> MemoryMap::Create(std::vector<MemorySlot> slots,
                                            uint32_t page_size) {
  if (page_size == 0 || (page_size & (page_size - 1)) != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("page size ", page_size, " is not a power of two"));
  if (slots.empty()) return absl::InvalidArgumentError("a memory map needs a slot");
  uint64_t next_offset = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const MemorySlot& s = slots[i];
    if (s.size == 0 || s.gpa % page_size || s.size % page_size)
      return absl::InvalidArgumentError(absl::StrFormat(
          "slot %d [%#x, +%#x) is empty or not aligned to the %d-byte page", i,
          s.gpa, s.size, page_size));
    if (s.gpa + s.size < s.gpa)
      return absl::InvalidArgumentError(absl::StrFormat("slot %d wraps", i));
    if (i > 0 && s.gpa < slots[i - 1].gpa + slots[i - 1].size)
      return absl::InvalidArgumentError(absl::StrFormat(
          "slot %d at %#x overlaps or precedes slot %d", i, s.gpa, i - 1));
    if (s.offset != next_offset)
      return absl::InvalidArgumentError(absl::StrFormat(
          "slot %d has offset %#x; slots must be contiguous in the memory file "
          "(expected %#x)",
          i, s.offset, next_offset));
    next_offset += s.size;
  }
  return MemoryMap(std::move(slots), page_size, next_offset);
}

absl::StatusOr<uint64_t> MemoryMap::GpaToOffset(uint64_t gpa, uint64_t len) const {
  for (const MemorySlot& s : slots_) {
    if (gpa >= s.gpa && gpa - s.gpa < s.size) {
      if (len > s.size - (gpa - s.gpa)) break;
      return s.offset + (gpa - s.gpa);
    }
  }
  return absl::OutOfRangeError(absl::StrFormat(
      "guest-physical range [%#x, +%#x) is not inside one RAM slot of %s", gpa,
      len, DebugString()));
}

uint64_t MemoryMap::OffsetToGpa(uint64_t offset) const {
  for (const MemorySlot& s : slots_)
    if (offset >= s.offset && offset - s.offset < s.size)
      return s.gpa + (offset - s.offset);
  return ~0ull;
}

std::string MemoryMap::DebugString() const {
  std::string out = "{";
  for (size_t i = 0; i < slots_.size(); ++i)
    absl::StrAppendFormat(&out, "%s[%#x, %#x)", i ? ", " : "", slots_[i].gpa,
                          slots_[i].gpa + slots_[i].size);
  return out + "}";
}

}  // namespace ferry::vmm
