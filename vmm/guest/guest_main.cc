// The KVM guest: runs one vCPU's workload (ops.h) in 64-bit long mode, set
// up by the VMM (boot.h: page tables, stack, boot and status pages), then
// halts. Built freestanding into a flat image (BUILD.bazel): no library, no
// globals that need initialising, no floating point.
//
// Entry: RIP = kFirmwareVa (_start), RDI = the boot page, RSI = the status
// page, RSP = the top of the vCPU's stack, interrupts off.
#include "vmm/guest/boot.h"
#include "vmm/guest/ops.h"

namespace ferry::vmm::guest {
namespace {

inline void Out32(uint16_t port, uint32_t value) {
  asm volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}

}  // namespace
}  // namespace ferry::vmm::guest

extern "C" [[noreturn]] void GuestMain(const ferry::vmm::guest::BootParams* boot,
                                       ferry::vmm::guest::VcpuStatus* status) {
  using namespace ferry::vmm::guest;
  const volatile BootParams* live = boot;  // what the VMM may rewrite between ops
  uint64_t generation = live->map_generation;
  volatile uint64_t* region = reinterpret_cast<volatile uint64_t*>(live->region_va);
  uint64_t i = status->ops_done;
  uint64_t acc = status->acc;
  const uint64_t limit = boot->ops_limit;
  while (limit == 0 || i < limit) {
    if (status->pause_requested) Out32(kPortPaused, static_cast<uint32_t>(i));
    if (boot->paced) Out32(kPortPace, static_cast<uint32_t>(i));
    status->in_op = 1;
    asm volatile("" ::: "memory");
    // After in_op is set: a VMM that stops this vCPU from here on lets it
    // finish the op first, so the map cannot change between this check and
    // the op; one that stopped it before gets this check on the way back.
    if (live->map_generation != generation) {
      // The memory map changed while this vCPU was out: new page tables
      // (flush every translation) and a new region.
      generation = live->map_generation;
      uint64_t cr3;
      asm volatile("mov %%cr3, %0" : "=r"(cr3));
      asm volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
      region = reinterpret_cast<volatile uint64_t*>(live->region_va);
    }
    acc = Step(boot->ops, region, i, acc);
    asm volatile("" ::: "memory");
    ++i;
    status->acc = acc;
    status->ops_done = i;  // the commit
    status->in_op = 0;
    if ((i & 0xfff) == 0) Out32(kPortProgress, static_cast<uint32_t>(i));
  }
  Out32(kPortDone, static_cast<uint32_t>(i));
  for (;;) asm volatile("hlt");
}

asm(R"(
  .section .text.entry, "ax"
  .global _start
_start:
  call GuestMain
1:
  hlt
  jmp 1b
)");
