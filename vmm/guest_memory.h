// GuestMemory: a VM's RAM. One memfd holds all of it (RAM offset space) and
// is mapped once, shared; the MemoryMap places it in guest-physical space.
// vCPUs access RAM through this mapping, and the destination registers the
// same mapping with userfaultfd, so every path sees one copy of each page.
//
// Ownership: owns the memfd and the mapping. Threads: the memory itself may
// be read and written from any thread; the object is immutable otherwise.
//
// A page is "missing" while the memory file has a hole there (never written,
// or discarded). Without userfaultfd a missing page reads as zeros; with
// MISSING registration an access to it faults.
//
//   ASSIGN_OR_RETURN(auto mem, GuestMemory::Create(map));
//   ASSIGN_OR_RETURN(uint8_t* p, mem->HostAddress(gpa, 4096));
#ifndef FERRY_VMM_GUEST_MEMORY_H_
#define FERRY_VMM_GUEST_MEMORY_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/memory_map.h"
#include "sys/memfd.h"

namespace ferry::vmm {

class GuestMemory {
 public:
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Create(const MemoryMap& map);

  const MemoryMap& map() const { return map_; }
  uint64_t size() const { return map_.memory_bytes(); }
  uint32_t page_size() const { return map_.page_size(); }
  uint64_t num_pages() const { return map_.num_pages(); }

  // RAM offset space: [host(), host() + size()).
  uint8_t* host() const { return file_.data(); }
  // Writes RAM offset range [offset, offset + len) through the file, which
  // userfaultfd does not watch: pages fill without a fault. Only while no
  // vCPU runs (the write is not atomic).
  absl::Status Load(uint64_t offset, const uint8_t* data, uint64_t len) {
    return file_.WriteAt(offset, data, len);
  }
  // Reads RAM offset range [offset, offset + len) through the file (the
  // page cache), not through host(): no page of the mapping is touched.
  absl::Status Read(uint64_t offset, uint8_t* out, uint64_t len) const {
    return file_.ReadAt(offset, out, len);
  }
  // Bytes of guest memory actually allocated (touched pages).
  absl::StatusOr<uint64_t> AllocatedBytes() const { return file_.AllocatedBytes(); }
  // The host address of [gpa, gpa + len); OutOfRange outside RAM.
  absl::StatusOr<uint8_t*> HostAddress(uint64_t gpa, uint64_t len) const;
  // True when `addr` lies inside this memory.
  bool Contains(const void* addr) const;

  // Makes the pages of RAM offset range [offset, offset + len) missing again.
  absl::Status DiscardOffsets(uint64_t offset, uint64_t len);

  // A bitmap (one bit per page, RAM offset order) of pages that hold data.
  // Reads only the file's extent map: it never touches, allocates or faults
  // a page.
  absl::StatusOr<std::vector<bool>> PresentPages() const;

 private:
  GuestMemory(MemoryMap map, sys::MemfdMapping file)
      : map_(std::move(map)), file_(std::move(file)) {}

  MemoryMap map_;
  sys::MemfdMapping file_;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_GUEST_MEMORY_H_
