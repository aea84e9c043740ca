// KVM ABI that Debian 12's linux-libc-dev (6.1) lacks, from upstream's
// include/uapi/linux/kvm.h, defined once and pinned with static_asserts;
// and the uAPI of Ferry's own KVM patch (kernel/kvm-userfault/), which
// follows the posted, unmerged "KVM Userfault" proposal. Its capability
// number moved between postings and collides with merged ones elsewhere,
// so it is kept here alone and a kernel is believed only when the memslot
// flag itself is accepted (sys/kvm.cc, ProbeUserfault).
#ifndef FERRY_SYS_KVM_ABI_H_
#define FERRY_SYS_KVM_ABI_H_

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace ferry::sys::abi {

// Capabilities (KVM_CHECK_EXTENSION), with the release that added them.
inline constexpr int kKvmCapUserMemory2 = 231;       // 6.8
inline constexpr int kKvmCapMemoryFaultInfo = 232;   // 6.8
inline constexpr int kKvmCapGuestMemfd = 234;        // 6.8
inline constexpr int kKvmCapVmTypes = 235;           // 6.8
inline constexpr int kKvmCapPreFaultMemory = 236;    // 6.11
inline constexpr int kKvmCapGuestMemfdFlags = 244;   // 6.18
static_assert(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 == 168);
static_assert(KVM_CAP_DIRTY_LOG_RING == 192);
static_assert(KVM_CAP_XSAVE2 == 208);
static_assert(KVM_CAP_IMMEDIATE_EXIT == 136);

// KVM_EXIT_MEMORY_FAULT (6.8) and its kvm_run member.
inline constexpr uint32_t kKvmExitMemoryFault = 39;
inline constexpr uint64_t kKvmMemoryExitFlagPrivate = 1ull << 3;

// KVM_SET_USER_MEMORY_REGION2 (6.8), with the patch's field: the
// userfault bitmap is taken from the padding (pad2[14] -> 13), so the size
// and the ioctl number are upstream's.
struct KvmUserspaceMemoryRegion2 {
  uint32_t slot;
  uint32_t flags;
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t guest_memfd_offset;
  uint32_t guest_memfd;
  uint32_t pad1;
  uint64_t userfault_bitmap;  // Ferry's patch: one bit per page, 1 = exit
  uint64_t pad2[13];
};
static_assert(sizeof(KvmUserspaceMemoryRegion2) == 160);
static_assert(offsetof(KvmUserspaceMemoryRegion2, userfault_bitmap) == 48);
inline constexpr unsigned long kKvmSetUserMemoryRegion2 =
    _IOW(KVMIO, 0x49, KvmUserspaceMemoryRegion2);
static_assert(kKvmSetUserMemoryRegion2 == 0x40a0ae49);

// Ferry's KVM patch ("KVM Userfault"): a memslot flag and a per-slot
// bitmap of pages whose stage-2 fault exits with KVM_EXIT_MEMORY_FAULT,
// flagged USERFAULT. The capability number is the patch's (the proposal's
// moved: 239, 243, 245): this is the one place it is written.
inline constexpr int kKvmCapUserfault = 245;
inline constexpr uint32_t kKvmMemUserfault = 1u << 3;
// Ferry's second KVM patch (kernel/kvm-userfault/0002-*): KVM_SET_USER_MEMORY_REGION2 with this
// request flag (never stored in the slot) on an existing slot sets its size, keeping its base
// gfn, host address, flags and the stage-2 mappings of the pages that stay.
inline constexpr int kKvmCapMemslotResize = 1000;
// KVM_X86_QUIRK_SLOT_ZAP_ALL (6.12; not in Debian 12's headers): while on
// (the default), deleting or moving any memslot zaps every stage-2 mapping
// of the VM. Turned off with KVM_CAP_DISABLE_QUIRKS2; before 6.12 every
// slot deletion zaps all, with no way to turn it off.
inline constexpr uint64_t kKvmX86QuirkSlotZapAll = 1ull << 7;
inline constexpr uint32_t kKvmMemResizeInPlace = 1u << 4;
inline constexpr uint64_t kKvmMemoryExitFlagUserfault = 1ull << 4;
struct KvmMemoryFault {
  uint64_t flags;
  uint64_t gpa;
  uint64_t size;
};
// The exit union of struct kvm_run starts here on x86-64.
inline constexpr size_t kKvmRunExitUnionOffset = 32;
static_assert(offsetof(kvm_run, hw) == kKvmRunExitUnionOffset);

// KVM_PRE_FAULT_MEMORY (6.11): a vCPU ioctl.
struct KvmPreFaultMemory {
  uint64_t gpa;
  uint64_t size;
  uint64_t flags;
  uint64_t padding[5];
};
static_assert(sizeof(KvmPreFaultMemory) == 64);
inline constexpr unsigned long kKvmPreFaultMemory = _IOWR(KVMIO, 0xd5, KvmPreFaultMemory);
static_assert(kKvmPreFaultMemory == 0xc040aed5);

// The variable-length structs, as C lays them out. In C++, Debian 12's
// <asm/kvm.h> declares their flexible arrays with __DECLARE_FLEX_ARRAY,
// which adds an empty struct: a different size (so different ioctl
// numbers) and a different offset for the array. These headers are
// followed directly by their entries.
struct KvmCpuid2Header {
  uint32_t nent;
  uint32_t padding;
};
struct KvmMsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
};
struct KvmMsrListHeader {
  uint32_t nmsrs;
};
// struct kvm_xsave: 4096 bytes in C (4100 in C++ with the flexible array).
struct KvmXsave {
  uint32_t region[1024];
};
inline constexpr unsigned long kKvmGetXsave = _IOR(KVMIO, 0xa4, KvmXsave);
inline constexpr unsigned long kKvmSetXsave = _IOW(KVMIO, 0xa5, KvmXsave);
inline constexpr unsigned long kKvmGetXsave2 = _IOR(KVMIO, 0xcf, KvmXsave);
static_assert(kKvmGetXsave == 0x9000aea4);
static_assert(kKvmSetXsave == 0x5000aea5);
static_assert(kKvmGetXsave2 == 0x9000aecf);
static_assert(sizeof(kvm_cpuid_entry2) == 40);
static_assert(sizeof(kvm_msr_entry) == 16);
inline constexpr unsigned long kKvmGetSupportedCpuid = _IOWR(KVMIO, 0x05, KvmCpuid2Header);
inline constexpr unsigned long kKvmSetCpuid2 = _IOW(KVMIO, 0x90, KvmCpuid2Header);
inline constexpr unsigned long kKvmGetMsrs = _IOWR(KVMIO, 0x88, KvmMsrsHeader);
inline constexpr unsigned long kKvmSetMsrs = _IOW(KVMIO, 0x89, KvmMsrsHeader);
inline constexpr unsigned long kKvmGetMsrIndexList = _IOWR(KVMIO, 0x02, KvmMsrListHeader);
static_assert(kKvmGetSupportedCpuid == 0xc008ae05);
static_assert(kKvmSetCpuid2 == 0x4008ae90);
static_assert(kKvmGetMsrs == 0xc008ae88);
static_assert(kKvmSetMsrs == 0x4008ae89);
static_assert(kKvmGetMsrIndexList == 0xc004ae02);

// The dirty ring (5.11): per-vCPU rings of these, mmapped at page
// KVM_DIRTY_LOG_PAGE_OFFSET of the vCPU fd.
static_assert(KVM_DIRTY_LOG_PAGE_OFFSET == 64);
static_assert(sizeof(kvm_dirty_gfn) == 16);
static_assert(KVM_EXIT_DIRTY_RING_FULL == 31);
static_assert(KVM_RESET_DIRTY_RINGS == 0xaec7);

// MSRs the backend saves and restores (arch/x86/include/asm/msr-index.h).
inline constexpr uint32_t kMsrIa32Tsc = 0x10;
inline constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
inline constexpr uint32_t kMsrIa32SysenterCs = 0x174;
inline constexpr uint32_t kMsrIa32SysenterEsp = 0x175;
inline constexpr uint32_t kMsrIa32SysenterEip = 0x176;
inline constexpr uint32_t kMsrIa32CrPat = 0x277;
inline constexpr uint32_t kMsrStar = 0xc0000081;
inline constexpr uint32_t kMsrLstar = 0xc0000082;
inline constexpr uint32_t kMsrCstar = 0xc0000083;
inline constexpr uint32_t kMsrSyscallMask = 0xc0000084;
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
inline constexpr uint32_t kMsrTscAux = 0xc0000103;

// x86 control bits the backend sets for a 64-bit guest.
inline constexpr uint64_t kCr0Pe = 1ull << 0;
inline constexpr uint64_t kCr0Mp = 1ull << 1;
inline constexpr uint64_t kCr0Et = 1ull << 4;
inline constexpr uint64_t kCr0Ne = 1ull << 5;
inline constexpr uint64_t kCr0Wp = 1ull << 16;
inline constexpr uint64_t kCr0Pg = 1ull << 31;
inline constexpr uint64_t kCr4Pae = 1ull << 5;
inline constexpr uint64_t kCr4Osfxsr = 1ull << 9;
inline constexpr uint64_t kCr4Osxmmexcpt = 1ull << 10;
inline constexpr uint64_t kEferLme = 1ull << 8;
inline constexpr uint64_t kEferLma = 1ull << 10;

}  // namespace ferry::sys::abi

#endif  // FERRY_SYS_KVM_ABI_H_
