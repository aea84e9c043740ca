#include "vmm/kvm/firmware.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "sys/kvm_abi.h"
#include "vmm/guest/guest_image.h"

namespace ferry::vmm::kvm {
namespace {

namespace abi = sys::abi;
using guest::kFirmwareVa;

constexpr uint64_t kPage = 4096;
constexpr uint64_t k2M = 2ull << 20;
constexpr uint64_t k1G = 1ull << 30;
// Page-table entry bits. Accessed and dirty are preset so the guest's MMU
// never writes the tables.
constexpr uint64_t kPresent = 1ull << 0;
constexpr uint64_t kWritable = 1ull << 1;
constexpr uint64_t kAccessed = 1ull << 5;
constexpr uint64_t kDirty = 1ull << 6;
constexpr uint64_t kLarge = 1ull << 7;  // a 2 MiB page in a PD entry
constexpr uint64_t kTable = kPresent | kWritable | kAccessed;
constexpr uint64_t kLeaf2M = kPresent | kWritable | kAccessed | kDirty | kLarge;
constexpr uint64_t kAddrMask = 0x000ffffffffff000ull;

// GDT: null, 64-bit code (selector 8), data (selector 16).
constexpr uint64_t kGdt[3] = {0, 0x00af9b000000ffffull, 0x00cf93000000ffffull};

uint64_t* Entry(absl::Span<uint8_t> fw, uint64_t table_offset, uint64_t index) {
  return reinterpret_cast<uint64_t*>(fw.data() + table_offset) + index;
}

}  // namespace

namespace {

// Table offsets inside the firmware area: GDT, PML4, low PDPT (RAM), high
// PDPT (firmware), firmware PD, then one PD per GiB of RAM up to the vCPU
// areas.
constexpr uint64_t kGdtOffset = guest::kTablesOffset;
constexpr uint64_t kPml4Offset = kGdtOffset + kPage;
constexpr uint64_t kPdptLoOffset = kPml4Offset + kPage;
constexpr uint64_t kPdptHiOffset = kPdptLoOffset + kPage;
constexpr uint64_t kPdFwOffset = kPdptHiOffset + kPage;
constexpr uint64_t kPdRamOffset = kPdFwOffset + kPage;
static_assert(kPdRamOffset + kMaxRamGib * kPage <= guest::kVcpuAreaOffset);

absl::Status CheckRam(const MemoryMap& map) {
  const uint64_t ram = map.memory_bytes();
  if (ram % k2M != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "a KVM VM's memory must be a multiple of 2 MiB; %d bytes is not", ram));
  if ((ram + k1G - 1) / k1G > kMaxRamGib)
    return absl::InvalidArgumentError(
        absl::StrFormat("%d GiB of RAM needs more page tables than the firmware area holds",
                        (ram + k1G - 1) / k1G));
  for (const MemorySlot& s : map.slots())
    if (s.gpa % k2M != 0 || s.size % k2M != 0)
      return absl::InvalidArgumentError(absl::StrFormat(
          "a KVM VM's memory slots must be 2 MiB aligned; [%#x, +%#x) is not", s.gpa, s.size));
  return absl::OkStatus();
}

// The RAM half of the page tables: VA = RAM offset, each 2 MiB to wherever
// the map puts it; entries past RAM cleared.
void WriteRamTables(const MemoryMap& map, const FirmwareLayout& l, absl::Span<uint8_t> fw) {
  const uint64_t ram = map.memory_bytes();
  const uint64_t ram_gib = (ram + k1G - 1) / k1G;
  std::memset(fw.data() + kPdptLoOffset, 0, kPage);
  std::memset(fw.data() + kPdRamOffset, 0, kMaxRamGib * kPage);
  for (uint64_t g = 0; g < ram_gib; ++g)
    *Entry(fw, kPdptLoOffset, g) = (l.gpa + kPdRamOffset + g * kPage) | kTable;
  for (uint64_t off = 0; off < ram; off += k2M)
    *Entry(fw, kPdRamOffset + (off / k1G) * kPage, (off / k2M) % 512) =
        map.OffsetToGpa(off) | kLeaf2M;
}

void WriteOps(const MemoryMap& map, const WorkloadSpec& spec, int v, int vcpus,
              guest::BootParams* b) {
  b->ops = MakeOpParams(spec, map.num_pages(), map.page_size(), v, vcpus);
  b->region_va = b->ops.pages * static_cast<uint64_t>(v) * map.page_size();
}

}  // namespace

absl::Status CheckFirmwareMap(const MemoryMap& map) { return CheckRam(map); }

absl::StatusOr<FirmwareLayout> BuildFirmware(const MemoryMap& map, const WorkloadSpec& spec,
                                             int vcpus, absl::Span<uint8_t> fw) {
  RETURN_IF_ERROR(CheckRam(map));
  if (fw.size() != guest::FirmwareBytes(vcpus))
    return absl::InvalidArgumentError("firmware buffer has the wrong size");
  if (guest::kImage_size > guest::kImageMaxBytes)
    return absl::InternalError("the guest image is larger than its 1 MiB slot");
  FirmwareLayout l;
  l.size = fw.size();

  std::memcpy(fw.data(), guest::kImage, guest::kImage_size);

  l.gdt_gpa = l.gpa + kGdtOffset;
  l.pml4_gpa = l.gpa + kPml4Offset;
  l.tables_end_gpa = l.gpa + kPdRamOffset + kMaxRamGib * kPage;
  std::memcpy(fw.data() + kGdtOffset, kGdt, sizeof(kGdt));

  *Entry(fw, kPml4Offset, 0) = (l.gpa + kPdptLoOffset) | kTable;
  *Entry(fw, kPml4Offset, (kFirmwareVa >> 39) & 511) = (l.gpa + kPdptHiOffset) | kTable;
  WriteRamTables(map, l, fw);
  // The firmware area at kFirmwareVa.
  *Entry(fw, kPdptHiOffset, (kFirmwareVa >> 30) & 511) = (l.gpa + kPdFwOffset) | kTable;
  for (uint64_t off = 0; off < l.size; off += k2M)
    *Entry(fw, kPdFwOffset, ((kFirmwareVa >> 21) & 511) + off / k2M) = (l.gpa + off) | kLeaf2M;

  // Boot pages.
  const bool paced = OpIntervalNanos(spec, map.page_size()) > 0;
  for (int v = 0; v < vcpus; ++v) {
    absl::Span<uint8_t> area = VcpuArea(fw, v);
    guest::BootParams b{};
    b.magic = guest::kBootMagic;
    b.vcpu = static_cast<uint64_t>(v);
    b.ops_limit = spec.ops_per_vcpu;
    WriteOps(map, spec, v, vcpus, &b);
    b.paced = paced ? 1 : 0;
    std::memcpy(area.data() + guest::kBootPageOffset, &b, sizeof(b));
  }
  return l;
}

absl::Status UpdateFirmwareForMap(const MemoryMap& map, const WorkloadSpec& spec, int vcpus,
                                  const FirmwareLayout& l, absl::Span<uint8_t> fw) {
  RETURN_IF_ERROR(CheckRam(map));
  if (fw.size() != guest::FirmwareBytes(vcpus))
    return absl::InvalidArgumentError("firmware buffer has the wrong size");
  WriteRamTables(map, l, fw);
  for (int v = 0; v < vcpus; ++v) {
    absl::Span<uint8_t> area = VcpuArea(fw, v);
    guest::BootParams b;
    std::memcpy(&b, area.data() + guest::kBootPageOffset, sizeof(b));
    WriteOps(map, spec, v, vcpus, &b);
    ++b.map_generation;
    std::memcpy(area.data() + guest::kBootPageOffset, &b, sizeof(b));
  }
  return absl::OkStatus();
}

absl::Span<uint8_t> VcpuArea(absl::Span<uint8_t> fw, int index) {
  return fw.subspan(guest::kVcpuAreaOffset + static_cast<uint64_t>(index) * guest::kVcpuAreaBytes,
                    guest::kVcpuAreaBytes);
}

kvm_regs InitialRegs(int index) {
  const uint64_t area = kFirmwareVa + guest::kVcpuAreaOffset +
                        static_cast<uint64_t>(index) * guest::kVcpuAreaBytes;
  kvm_regs r{};
  r.rip = kFirmwareVa;
  r.rsp = area + guest::kStackTopOffset;
  r.rdi = area + guest::kBootPageOffset;
  r.rsi = area + guest::kStatusPageOffset;
  r.rflags = 2;  // reserved bit 1; interrupts off
  return r;
}

kvm_sregs LongModeSregs(const FirmwareLayout& l, kvm_sregs s) {
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 8;
  code.type = 11;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 16;
  data.type = 3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.gdt.base = kFirmwareVa + (l.gdt_gpa - l.gpa);
  s.gdt.limit = sizeof(kGdt) - 1;
  s.idt.base = 0;
  s.idt.limit = 0;  // no IDT: an exception is a triple fault (KVM_EXIT_SHUTDOWN)
  s.cr3 = l.pml4_gpa;
  s.cr4 = abi::kCr4Pae | abi::kCr4Osfxsr | abi::kCr4Osxmmexcpt;
  s.cr0 = abi::kCr0Pe | abi::kCr0Mp | abi::kCr0Et | abi::kCr0Ne | abi::kCr0Wp | abi::kCr0Pg;
  s.efer = abi::kEferLme | abi::kEferLma;
  return s;
}

absl::StatusOr<uint64_t> TranslateVa(absl::Span<const uint8_t> fw, const FirmwareLayout& l,
                                     uint64_t va) {
  auto read = [&](uint64_t gpa, uint64_t index) -> absl::StatusOr<uint64_t> {
    if (gpa < l.gpa || gpa + kPage > l.gpa + fw.size())
      return absl::NotFoundError(absl::StrFormat("table at gpa %#x is outside the firmware", gpa));
    uint64_t e;
    std::memcpy(&e, fw.data() + (gpa - l.gpa) + index * 8, 8);
    return e;
  };
  absl::StatusOr<uint64_t> e = read(l.pml4_gpa, (va >> 39) & 511);
  for (int level = 3; level >= 2 && e.ok(); --level) {
    if (!(*e & kPresent)) return absl::NotFoundError(absl::StrFormat("va %#x is not mapped", va));
    e = read(*e & kAddrMask, (va >> (12 + 9 * (level - 1))) & 511);
  }
  if (!e.ok()) return e.status();
  if (!(*e & kPresent) || !(*e & kLarge))
    return absl::NotFoundError(absl::StrFormat("va %#x is not mapped by a 2 MiB page", va));
  return (*e & kAddrMask & ~(k2M - 1)) + (va & (k2M - 1));
}

}  // namespace ferry::vmm::kvm
