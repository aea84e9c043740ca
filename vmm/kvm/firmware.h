// The KVM guest's firmware area (vmm/guest/boot.h): the guest image, a GDT,
// the page tables and one boot page per vCPU, written by the VMM. The same
// layout and workload always give the same bytes, so a destination rebuilds
// exactly what the source had. Pure functions over a buffer: tested on
// machines without KVM (tests/vmm/kvm/firmware_test.cc walks the tables).
#ifndef FERRY_VMM_KVM_FIRMWARE_H_
#define FERRY_VMM_KVM_FIRMWARE_H_

#include <linux/kvm.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/guest/boot.h"
#include "vmm/memory_map.h"
#include "vmm/workload.h"

namespace ferry::vmm::kvm {

// The most RAM the firmware's page tables can map (the PD pages between the
// tables' start and the vCPU areas: 251 GiB).
inline constexpr uint64_t kMaxRamGib =
    ((guest::kVcpuAreaOffset - guest::kTablesOffset) / 4096 - 5) < 512
        ? (guest::kVcpuAreaOffset - guest::kTablesOffset) / 4096 - 5
        : 512;
inline constexpr uint64_t kMaxRamBytes = kMaxRamGib << 30;

// Where the VMM put things (guest-physical addresses).
struct FirmwareLayout {
  uint64_t gpa = guest::kFirmwareGpa;
  uint64_t size = 0;
  uint64_t gdt_gpa = 0;
  uint64_t pml4_gpa = 0;
  uint64_t tables_end_gpa = 0;
};

// Writes the firmware for a VM with `map`'s RAM, `vcpus` vCPUs running
// `spec`, into `firmware` (guest::FirmwareBytes(vcpus) bytes, zeroed by the
// caller). InvalidArgument when RAM is not a multiple of 2 MiB or the page
// tables would not fit.
absl::StatusOr<FirmwareLayout> BuildFirmware(const MemoryMap& map, const WorkloadSpec& spec,
                                             int vcpus, absl::Span<uint8_t> firmware);

// OK when the firmware can map `map`'s RAM: every slot 2 MiB aligned, at
// most kMaxRamBytes; InvalidArgument naming the problem otherwise.
absl::Status CheckFirmwareMap(const MemoryMap& map);

// Rewrites what depends on the memory map, for a map that changed while
// every vCPU was out at an op boundary: the RAM page tables (VA = RAM offset
// to wherever `map` puts it) and each vCPU's op parameters and region in its
// boot page, then bumps each boot page's map generation so the guest
// flushes its TLB and reloads its region. Everything else in the boot page
// and the status page is left alone. InvalidArgument as BuildFirmware.
absl::Status UpdateFirmwareForMap(const MemoryMap& map, const WorkloadSpec& spec, int vcpus,
                                  const FirmwareLayout& layout, absl::Span<uint8_t> firmware);

// vCPU `index`'s initial registers: 64-bit mode at the image's entry, its
// own stack, boot page and status page.
kvm_regs InitialRegs(int index);
// The special registers for long mode with `layout`'s GDT and page tables,
// starting from the vCPU's current `sregs` (which keeps fields KVM fills).
kvm_sregs LongModeSregs(const FirmwareLayout& layout, kvm_sregs sregs);

// vCPU `index`'s area (boot page, status page, stack) inside `firmware`.
absl::Span<uint8_t> VcpuArea(absl::Span<uint8_t> firmware, int index);

// Translates `va` through the page tables in `firmware` (a software walk of
// what the guest's MMU does); NotFound for an unmapped address.
absl::StatusOr<uint64_t> TranslateVa(absl::Span<const uint8_t> firmware,
                                     const FirmwareLayout& layout, uint64_t va);

}  // namespace ferry::vmm::kvm

#endif  // FERRY_VMM_KVM_FIRMWARE_H_
