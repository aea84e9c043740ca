#include "vmm/guest_memory.h"

#include "base/status_macros.h"

namespace ferry::vmm {

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Create(
    const MemoryMap& map) {
  ASSIGN_OR_RETURN(sys::MemfdMapping file,
                   sys::MemfdMapping::Create("ferry-guest-ram", map.memory_bytes(),
                                        map.page_size()));
  return std::unique_ptr<GuestMemory>(new GuestMemory(map, std::move(file)));
}

absl::StatusOr<uint8_t*> GuestMemory::HostAddress(uint64_t gpa, uint64_t len) const {
  ASSIGN_OR_RETURN(uint64_t offset, map_.GpaToOffset(gpa, len));
  return host() + offset;
}

bool GuestMemory::Contains(const void* addr) const {
  auto a = reinterpret_cast<uintptr_t>(addr);
  auto base = reinterpret_cast<uintptr_t>(host());
  return a >= base && a - base < size();
}

absl::Status GuestMemory::DiscardOffsets(uint64_t offset, uint64_t len) {
  return file_.PunchHole(offset, len);
}

absl::StatusOr<std::vector<bool>> GuestMemory::PresentPages() const {
  ASSIGN_OR_RETURN(auto ranges, file_.DataRanges());
  std::vector<bool> present(num_pages(), false);
  for (const auto& [begin, end] : ranges)
    for (uint64_t p = begin / page_size(); p < (end + page_size() - 1) / page_size();
         ++p)
      present[p] = true;
  return present;
}

}  // namespace ferry::vmm
