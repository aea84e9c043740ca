// Memory map transactions: a list of region changes (add, remove, resize)
// applied to a MemoryMap all at once. PlanMemoryTransaction checks every
// change against the map as the changes before it left it, then the result
// against the VM's limits, and returns the new map or the first reason the
// transaction cannot apply (naming the change); nothing is half applied,
// because nothing is applied here: the Vm applies the planned map with its
// vCPUs held off (Vm::ChangeMemory).
//
// Semantics, what a guest sees:
//   add     a new region at [gpa, gpa + size), all zeros
//   remove  the region's pages are gone (its addresses are no longer RAM)
//   resize  grow: the new tail reads zeros; shrink: the pages past the new
//           end are gone; size 0 is a remove. The main region cannot be
//           removed (a VM always has RAM at gpa 0), only shrunk.
// A grow that would run into a neighbour or the PC hole is refused; nothing
// ever moves in guest-physical space.
//
//   MemoryTransaction t;
//   t.changes.push_back(MemoryChange::Resize("ram", 2ull << 30));
//   t.changes.push_back(MemoryChange::Add("dimm0", 8ull << 30, 1ull << 30));
//   ASSIGN_OR_RETURN(MemoryMap next, PlanMemoryTransaction(vm_map, t, limits));
#ifndef FERRY_VMM_MEMORY_TRANSACTION_H_
#define FERRY_VMM_MEMORY_TRANSACTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/memory_map.h"

namespace ferry::vmm {

struct MemoryChange {
  enum class Kind { kAdd = 1, kRemove, kResize };

  static MemoryChange Add(std::string region, uint64_t gpa, uint64_t size) {
    return {Kind::kAdd, std::move(region), gpa, size};
  }
  static MemoryChange Remove(std::string region) {
    return {Kind::kRemove, std::move(region), 0, 0};
  }
  static MemoryChange Resize(std::string region, uint64_t size) {
    return {Kind::kResize, std::move(region), 0, size};
  }

  Kind kind = Kind::kResize;
  std::string region;
  uint64_t gpa = 0;   // add only
  uint64_t size = 0;  // add and resize
};

struct MemoryTransaction {
  std::vector<MemoryChange> changes;
};

// "resize ram to 2 GiB", "add dimm0 (1 GiB at 0x200000000)", "remove dimm0".
std::string ChangeString(const MemoryChange& change);

// What a VM's map may become.
struct MemoryLimits {
  uint64_t max_bytes = 0;     // all regions together (the VM's maximum memory)
  uint64_t min_bytes = 0;     // all regions together (each vCPU needs a page)
  uint64_t alignment = 4096;  // every region's gpa and size (KVM: 2 MiB)
  size_t max_regions = kMaxMemoryRegions;
};

// The map after `t`, or why `t` cannot apply: InvalidArgument for a change
// that is malformed or does not fit the map (unknown region, overlap, the
// hole, alignment), ResourceExhausted past a limit. An empty transaction is
// InvalidArgument.
absl::StatusOr<MemoryMap> PlanMemoryTransaction(const MemoryMap& map, const MemoryTransaction& t,
                                                const MemoryLimits& limits);

// What a transaction did to each region, for reports and the replay: in
// RAM offset space, where each surviving region was and is.
struct RegionMove {
  std::string region;
  uint64_t old_size = 0;  // 0: added
  uint64_t new_size = 0;  // 0: removed
};
std::vector<RegionMove> DescribeChange(const MemoryMap& before, const MemoryMap& after);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_MEMORY_TRANSACTION_H_
