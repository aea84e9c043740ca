// GuestMemory: a VM's RAM. Each memory region (vmm/memory_map.h) is backed by
// its own memfd; the slots are mapped shared, in RAM offset order, into one
// reserved range of host address space, so RAM offset space is contiguous at
// host() and every path (vCPUs, userfaultfd, KVM memslots, the migration
// engine) sees one copy of each page. The reservation is as large as the
// VM's maximum memory, so host() never moves.
//
// The map can change (ApplyMap): regions are added, removed, grown and
// shrunk, and the ones that move in RAM offset space are moved with their
// page tables (mremap), never copied and never faulted in again. map() returns the map in force;
// every map this memory ever had stays alive with it, so a reference taken from map() is always
// valid.
//
// Ownership: owns the files, the reservation and the maps. Threads: the
// memory itself may be read and written from any thread, and every method
// may be called from any thread (the file calls wait out a change), except
// that ApplyMap must not run while anything accesses guest memory through
// host() or uses host addresses from before it
// (the Vm holds its vCPUs off and refuses changes while memory is tracked,
// demand paged or being copied).
//
// A page is "missing" while its memory file has a hole there (never written,
// or discarded). Without userfaultfd a missing page reads as zeros; with
// MISSING registration an access to it faults.
//
//   ASSIGN_OR_RETURN(auto mem, GuestMemory::Create(map));
//   ASSIGN_OR_RETURN(uint8_t* p, mem->HostAddress(gpa, 4096));
#ifndef FERRY_VMM_GUEST_MEMORY_H_
#define FERRY_VMM_GUEST_MEMORY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "sys/memfd_file.h"
#include "vmm/memory_map.h"

namespace ferry::vmm {

class GuestMemory {
 public:
  // `max_bytes` (0: the map's size) reserves room for the map to grow into.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Create(const MemoryMap& map,
                                                             uint64_t max_bytes = 0);

  // The map in force (see the class comment for lifetime).
  const MemoryMap& map() const { return state()->map; }
  uint64_t size() const { return map().memory_bytes(); }
  uint32_t page_size() const { return map().page_size(); }
  uint64_t num_pages() const { return map().num_pages(); }
  // The most the map may grow to.
  uint64_t max_bytes() const { return reservation_.size(); }

  // RAM offset space: [host(), host() + size()).
  uint8_t* host() const { return reservation_.base(); }
  // Writes RAM offset range [offset, offset + len) through the files, which
  // userfaultfd does not watch: pages fill without a fault. Only while no
  // vCPU runs (the write is not atomic).
  absl::Status Load(uint64_t offset, const uint8_t* data, uint64_t len);
  // Reads RAM offset range [offset, offset + len) through the files (the
  // page cache), not through host(): no page of the mapping is touched.
  absl::Status Read(uint64_t offset, uint8_t* out, uint64_t len) const;
  // Bytes of guest memory actually allocated (touched pages).
  absl::StatusOr<uint64_t> AllocatedBytes() const;
  // The host address of [gpa, gpa + len); OutOfRange outside RAM.
  absl::StatusOr<uint8_t*> HostAddress(uint64_t gpa, uint64_t len) const;
  // True when `addr` lies inside this memory.
  bool Contains(const void* addr) const;

  // Makes the pages of RAM offset range [offset, offset + len) missing again.
  absl::Status DiscardOffsets(uint64_t offset, uint64_t len);

  // A bitmap (one bit per page, RAM offset order) of pages that hold data.
  // Reads only the files' extent maps: it never touches, allocates or
  // faults a page.
  absl::StatusOr<std::vector<bool>> PresentPages() const;

  // Makes `next` the map: creates and grows files, maps every slot at its
  // RAM offset (moving the regions that moved), unmaps what is no longer
  // RAM, then shrinks and closes files, freeing the pages that left. Pages
  // of regions that stay keep their contents; new pages read as zeros.
  // FailedPrecondition when `next` is larger than max_bytes() or has
  // another page size. On a failure of the kernel's, the old map is put
  // back and the error returned; DataLoss when even that failed (neither map
  // is in force: the VM cannot run on). See the class comment for
  // when it may be called.
  absl::Status ApplyMap(const MemoryMap& next);

 private:
  struct Region {
    std::string name;
    sys::MemfdFile file;
  };
  struct State {
    MemoryMap map;
    std::vector<Region*> slot_files;  // one per slot of map; cleared once not in force
  };

  GuestMemory(sys::AddressReservation reservation) : reservation_(std::move(reservation)) {}

  const State* state() const { return state_.load(std::memory_order_acquire); }
  // Calls fn(file, file_offset, ram_offset, len) for each slot piece of
  // [offset, offset + len); OutOfRange when the range leaves RAM.
  template <typename Fn>
  absl::Status ForEachPiece(uint64_t offset, uint64_t len, Fn fn) const;
  absl::Status MapSlots(const MemoryMap& map, const std::vector<Region*>& files);
  absl::Status RemapSlots(const MemoryMap& before, const MemoryMap& next,
                          const std::vector<Region*>& files);

  sys::AddressReservation reservation_;
  // Writer: ApplyMap. Readers: every call that reaches the files (Load,
  // Read, DiscardOffsets, AllocatedBytes, PresentPages), so none uses a
  // file a change is closing.
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Region>> regions_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<State>> states_ ABSL_GUARDED_BY(mu_);  // every map, the last in force
  std::atomic<const State*> state_{nullptr};
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_GUEST_MEMORY_H_
