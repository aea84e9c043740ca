// MemoryMap: the guest-physical address space as named memory regions and
// the memory slots they make. A region is a unit of RAM that can be added,
// removed, grown and shrunk (vmm/memory_transaction.h); each is backed by its
// own memory file. The main region, kMainRegion, starts at gpa 0 and is split
// around the PC hole [3 GiB, 4 GiB) into a low and a high slot; every other
// region is one slot and may not touch the hole (KVM's firmware lives there).
//
// Slots are sorted by gpa and laid out in "RAM offset" space in that order,
// contiguously from 0: RAM offset space is what GuestMemory maps, what page
// indices, bitmaps and digests count, and what the guest workloads address.
// A change of the map can therefore move a region in RAM offset space (one
// added below it, or one below it resized); GuestMemory moves the mapping,
// never the data.
//
// Immutable; safe to share between threads.
//
//   ASSIGN_OR_RETURN(MemoryMap map, MemoryMap::ForSize(6ull << 30, 4096));
//   ASSIGN_OR_RETURN(uint64_t off, map.GpaToOffset(gpa, 8));  // OutOfRange if not RAM
#ifndef FERRY_VMM_MEMORY_MAP_H_
#define FERRY_VMM_MEMORY_MAP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::vmm {

inline constexpr char kMainRegion[] = "ram";
inline constexpr uint64_t kLowMemoryTop = 3ull << 30;      // the PC hole's start
inline constexpr uint64_t kHighMemoryBase = 4ull << 30;    // and end
inline constexpr uint64_t kMaxGuestPhysical = 1ull << 40;  // every region ends below 1 TiB
inline constexpr size_t kMaxMemoryRegions = 32;            // the main region included

struct MemoryRegion {
  std::string name;  // [a-z0-9_-], 1 to 32 characters
  uint64_t gpa = 0;
  uint64_t size = 0;
};

struct MemorySlot {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t offset = 0;         // in RAM offset space
  int region = 0;              // index into MemoryMap::regions()
  uint64_t region_offset = 0;  // in the region's own memory file
};

class MemoryMap {
 public:
  // The default layout for `memory_bytes` of RAM: the main region alone.
  static absl::StatusOr<MemoryMap> ForSize(uint64_t memory_bytes, uint32_t page_size);
  // Validates regions and builds their slots: names valid and unique, the
  // main region present at gpa 0, sizes positive and page aligned, nothing
  // overlapping or past kMaxGuestPhysical, only the main region in the hole,
  // at most kMaxMemoryRegions. The reason names the region at fault.
  static absl::StatusOr<MemoryMap> FromRegions(std::vector<MemoryRegion> regions,
                                               uint32_t page_size);

  uint64_t memory_bytes() const { return memory_bytes_; }
  uint32_t page_size() const { return page_size_; }
  uint64_t num_pages() const { return memory_bytes_ / page_size_; }
  const std::vector<MemorySlot>& slots() const { return slots_; }
  // Sorted by name; the main region among them.
  const std::vector<MemoryRegion>& regions() const { return regions_; }
  // The region's index in regions(), or -1.
  int FindRegion(absl::string_view name) const;

  // The RAM offset of guest-physical [gpa, gpa + len), which must lie inside
  // one slot; OutOfRange otherwise, naming the address.
  absl::StatusOr<uint64_t> GpaToOffset(uint64_t gpa, uint64_t len) const;
  // The gpa of RAM offset `offset` (< memory_bytes()); ~0 outside.
  uint64_t OffsetToGpa(uint64_t offset) const;
  // True when both maps have the same regions (and so the same slots).
  bool SameLayout(const MemoryMap& other) const;

  // "{[0x0, 0x40000000), ...}": the slots.
  std::string DebugString() const;
  // "ram 1 GiB at 0x0, dimm0 512 MiB at 0x140000000": the regions.
  std::string RegionsString() const;

 private:
  MemoryMap(std::vector<MemoryRegion> regions, std::vector<MemorySlot> slots, uint32_t page_size,
            uint64_t bytes)
      : regions_(std::move(regions)),
        slots_(std::move(slots)),
        page_size_(page_size),
        memory_bytes_(bytes) {}

  std::vector<MemoryRegion> regions_;
  std::vector<MemorySlot> slots_;
  uint32_t page_size_ = 4096;
  uint64_t memory_bytes_ = 0;
};

// "1 GiB", "512 MiB", "12 KiB", "4097 bytes".
std::string BytesString(uint64_t bytes);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_MEMORY_MAP_H_
