// The contract between the VMM and the KVM guest image (guest_main.cc):
// where the image, its page tables and each vCPU's pages live, what the VMM
// writes for the guest to read at boot, and the I/O ports the guest uses.
// Freestanding: included by both.
//
// Guest-physical layout. RAM is where vmm::MemoryMap puts it (below 3 GiB,
// the rest above 4 GiB). The firmware area is a second memory slot at
// kFirmwareGpa, inside the PC hole at [3 GiB, 4 GiB) that RAM never uses:
//
//   firmware + 0          the image (code and read-only data, < 1 MiB)
//   firmware + 1 MiB      the GDT, then the page tables
//   firmware + 2 MiB      one 64 KiB area per vCPU: boot page, status page,
//                         stack (56 KiB)
//
// Virtual layout (4-level paging, 2 MiB pages, built by the VMM):
//   [0, RAM size)                     RAM, linearly: VA = RAM offset (so
//                                     the first 3 GiB are identity-mapped)
//   kFirmwareVa + [0, firmware size)  the firmware area (-mcmodel=kernel)
//
// The firmware area is the VMM's, not the guest's RAM: the image and the
// page tables are rebuilt identically on a destination, and each vCPU's
// pages travel with its state (vmm/kvm/kvm_vcpu.h). Memory digests cover
// RAM only, so a workload leaves the same digest on both backends.
#ifndef FERRY_VMM_GUEST_BOOT_H_
#define FERRY_VMM_GUEST_BOOT_H_

#include <stdint.h>

#include "vmm/guest/ops.h"

namespace ferry::vmm::guest {

inline constexpr uint64_t kFirmwareGpa = 0xC0000000ull;
inline constexpr uint64_t kFirmwareVa = 0xFFFFFFFF80000000ull;
inline constexpr uint64_t kImageMaxBytes = 1ull << 20;
inline constexpr uint64_t kTablesOffset = 1ull << 20;  // GDT, then page tables
inline constexpr uint64_t kVcpuAreaOffset = 2ull << 20;
inline constexpr uint64_t kVcpuAreaBytes = 64ull << 10;
inline constexpr uint64_t kBootPageOffset = 0;      // in a vCPU's area
inline constexpr uint64_t kStatusPageOffset = 4096;
inline constexpr uint64_t kStackTopOffset = kVcpuAreaBytes;

// The firmware area's size for `vcpus` vCPUs, a multiple of 2 MiB.
inline constexpr uint64_t FirmwareBytes(uint64_t vcpus) {
  const uint64_t bytes = kVcpuAreaOffset + vcpus * kVcpuAreaBytes;
  return (bytes + (2ull << 20) - 1) & ~((2ull << 20) - 1);
}

// I/O ports (OUT of a 32-bit value).
enum Port : uint16_t {
  kPortProgress = 0x3f0,  // every 4096 ops: the committed op count (low 32 bits)
  kPortPace = 0x3f1,      // before each op of a paced workload: wait for its slot
  kPortPaused = 0x3f2,    // at an op boundary, because pause_requested was set
  kPortDone = 0x3f3,      // the workload finished; HLT follows
};

inline constexpr uint64_t kBootMagic = 0x31544f4f42595246ull;  // "FRYBOOT1"

// Written by the VMM into a vCPU's boot page before it first runs.
struct BootParams {
  uint64_t magic;
  uint64_t vcpu;
  uint64_t ops_limit;  // 0: run until stopped
  uint64_t region_va;  // the vCPU's region (RAM offset of its first page)
  uint64_t paced;      // 1: OUT kPortPace before each op
  OpParams ops;
  // Bumped by the VMM when the memory map changed (vmm::Vm::ChangeMemory),
  // while the vCPU is out at an op boundary: the RAM page tables, ops and
  // region_va are new. The guest reloads CR3 (flushing its TLB) and its
  // region before its next op.
  uint64_t map_generation;
};

// A vCPU's status page: written by the guest, read by the VMM at any time.
struct VcpuStatus {
  volatile uint64_t ops_done;         // committed ops
  volatile uint64_t acc;              // the accumulator after them
  volatile uint64_t in_op;            // 1 from an op's start to its commit
  volatile uint64_t pause_requested;  // set by the VMM: stop at the next boundary
};

}  // namespace ferry::vmm::guest

#endif  // FERRY_VMM_GUEST_BOOT_H_
