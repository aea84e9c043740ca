// KVM (/dev/kvm): the system, VM and vCPU file descriptors and every ioctl
// Ferry issues on them. All raw KVM calls live in kvm.cc; each returns a
// Status naming the ioctl. Kernel structs come from <linux/kvm.h>, what
// Debian 12's headers lack from kvm_abi.h.
//
// Ownership: each object owns its fd (and a vCPU its kvm_run mapping).
// Threads: a KvmVcpuFd's ioctls are for the thread that runs it (KVM
// serialises vCPU ioctls on a per-vCPU lock: an ioctl from another thread
// waits until KVM_RUN returns); run() may be read and immediate_exit set
// from any thread. KvmVmFd ioctls are thread-safe.
//
//   ASSIGN_OR_RETURN(Kvm kvm, Kvm::Open());
//   ASSIGN_OR_RETURN(KvmVmFd vm, kvm.CreateVm());
//   RETURN_IF_ERROR(vm.SetMemoryRegion(0, 0, 0, size, host));
//   ASSIGN_OR_RETURN(KvmVcpuFd vcpu, vm.CreateVcpu(0, kvm.vcpu_mmap_size()));
#ifndef FERRY_SYS_KVM_H_
#define FERRY_SYS_KVM_H_

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace ferry::sys {

// What this kernel's KVM offers, probed once at Open().
struct KvmCapabilities {
  int api_version = 0;
  bool user_memory2 = false;            // KVM_CAP_USER_MEMORY2 (231)
  bool memory_fault_info = false;       // KVM_CAP_MEMORY_FAULT_INFO (232)
  bool pre_fault_memory = false;        // KVM_CAP_PRE_FAULT_MEMORY (236)
  bool manual_dirty_log_protect = false;  // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (168)
  int dirty_log_ring_bytes = 0;         // KVM_CAP_DIRTY_LOG_RING (192): max ring size
  bool guest_memfd = false;             // KVM_CAP_GUEST_MEMFD (234)
  bool xsave2 = false;                  // KVM_CAP_XSAVE2 (208)
  bool immediate_exit = false;          // KVM_CAP_IMMEDIATE_EXIT (136)
  // Whether memslots can turn a missing shared page into an annotated
  // KVM_EXIT_MEMORY_FAULT: Ferry's KVM patch (kernel/kvm-userfault/), the
  // uAPI of the unmerged "KVM Userfault" proposal. True only when the VM
  // fd reports the capability AND a memslot with KVM_MEM_USERFAULT and a
  // bitmap is accepted (stock kernels refuse the flag with EINVAL).
  bool exit_on_missing = false;
  // Whether an existing memslot can be resized in place
  // (KVM_MEM_RESIZE_IN_PLACE, Ferry's second KVM patch; none upstream):
  // true only when a scratch VM's two-page slot accepts a shrink to one
  // page with the flag (stock kernels refuse the unknown flag: EINVAL).
  bool memslot_resize = false;

  // "api 12, memory-fault-info, pre-fault, manual-dirty-log-protect, ..."
  std::string ToString() const;
};

class KvmVcpuFd;

// The bytes KVM_GET_XSAVE(2) writes and KVM_SET_XSAVE reads: the XSAVE2
// size where the kernel has it (`xsave2_size` > 0), else struct kvm_xsave.
size_t KvmXsaveBytes(int xsave2_size);

class KvmVmFd {
 public:
  KvmVmFd() = default;
  explicit KvmVmFd(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }

  // Memory slot `slot`: guest-physical [gpa, gpa + size) backed by `host`.
  // `flags`: KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY. Size 0 deletes.
  absl::Status SetMemoryRegion(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
                               void* host);
  // KVM_SET_USER_MEMORY_REGION2 (6.8). With `userfault_bitmap` (one bit per
  // page of the slot, 8-byte aligned, alive as long as the slot has the
  // flag) the slot gets KVM_MEM_USERFAULT: a stage-2 fault on a page whose
  // bit is set exits (KVM_EXIT_MEMORY_FAULT, flag USERFAULT). Null: no flag.
  absl::Status SetMemoryRegion2(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
                                void* host, const void* userfault_bitmap);
  // KVM_MEM_RESIZE_IN_PLACE: gives existing slot `slot` (at `gpa`, backed
  // by `host`, no flags) the size `size`, keeping the stage-2 mappings of
  // the pages that stay; a shrink drops only the tail's. The kernel refuses
  // (Unimplemented: EOPNOTSUPP where its per-slot arrays would lose state,
  // e.g. under a shadow MMU) and the caller deletes and creates instead.
  absl::Status ResizeMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host);
  // The VM's stage-2 mappings now, in 4 KiB pages: its binary stats
  // (KVM_GET_STATS_FD, 5.14) pages_4k + 512 x pages_2m + 262144 x
  // pages_1g (x86). Unavailable where the kernel has no such stats.
  absl::StatusOr<uint64_t> StageTwoMappedPages() const;
  // KVM_CHECK_EXTENSION on the VM fd: the value, 0 when absent.
  int CheckExtension(int cap) const;
  absl::Status EnableCap(uint32_t cap, uint64_t arg0);
  // KVM_GET_DIRTY_LOG into `bitmap` (one bit per page of the slot).
  absl::Status GetDirtyLog(uint32_t slot, uint64_t* bitmap);
  // KVM_CLEAR_DIRTY_LOG: re-protects the pages whose bits are set in
  // `bitmap` (bit 0 = page `first_page`); `first_page` and `num_pages` are
  // multiples of 64 unless the range ends the slot.
  absl::Status ClearDirtyLog(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                             uint64_t* bitmap);
  absl::StatusOr<KvmVcpuFd> CreateVcpu(int id, int mmap_size);
  // KVM_RESET_DIRTY_RINGS: re-protects the pages of every harvested entry
  // and recycles the entries. Returns how many were reset.
  absl::StatusOr<int> ResetDirtyRings();

 private:
  UniqueFd fd_;
};

class KvmVcpuFd {
 public:
  KvmVcpuFd() = default;
  KvmVcpuFd(UniqueFd fd, kvm_run* run, int mmap_size)
      : fd_(std::move(fd)), run_(run), mmap_size_(mmap_size) {}
  KvmVcpuFd(KvmVcpuFd&& other) noexcept;
  KvmVcpuFd& operator=(KvmVcpuFd&& other) noexcept;
  ~KvmVcpuFd();

  kvm_run* run() const { return run_; }

  // Maps this vCPU's dirty ring (`bytes`, as enabled on the VM with
  // KVM_CAP_DIRTY_LOG_RING before the vCPU was created). Unmapped with the
  // vCPU.
  absl::StatusOr<kvm_dirty_gfn*> MapDirtyRing(size_t bytes);

  // KVM_RUN. OK when the vCPU exited (run()->exit_reason says why),
  // including KVM_EXIT_MEMORY_FAULT, which KVM reports as EFAULT with the
  // exit annotated; Cancelled when a signal or immediate_exit interrupted
  // it (EINTR); other errors name the ioctl.
  absl::Status Run();

  absl::Status GetRegs(kvm_regs* regs);
  absl::Status SetRegs(const kvm_regs& regs);
  absl::Status GetSregs(kvm_sregs* sregs);
  absl::Status SetSregs(const kvm_sregs& sregs);
  // XSAVE state: KVM_GET_XSAVE2 where the kernel has it (its size from
  // KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)), else KVM_GET_XSAVE.
  absl::StatusOr<std::string> GetXsave(int xsave2_size);
  // KVM_SET_XSAVE reads as many bytes as the kernel's XSAVE size (the
  // XSAVE2 size where the kernel has it): `xsave` must be exactly that size
  // (InvalidArgument otherwise), so the kernel never reads past it.
  absl::Status SetXsave(const std::string& xsave, int xsave2_size);
  absl::Status GetXcrs(kvm_xcrs* xcrs);
  absl::Status SetXcrs(const kvm_xcrs& xcrs);
  // Reads the MSRs `indices`; those KVM refuses are left out.
  absl::StatusOr<std::vector<std::pair<uint32_t, uint64_t>>> GetMsrs(
      const std::vector<uint32_t>& indices);
  absl::Status SetMsrs(const std::vector<std::pair<uint32_t, uint64_t>>& msrs);
  absl::Status GetMpState(uint32_t* state);
  absl::Status SetMpState(uint32_t state);
  // KVM_SET_CPUID2 from KVM_GET_SUPPORTED_CPUID's entries.
  absl::Status SetCpuid(const std::vector<kvm_cpuid_entry2>& entries);
  // KVM_PRE_FAULT_MEMORY over [gpa, gpa + size): loops on partial progress,
  // EINTR and EAGAIN. Unimplemented (EOPNOTSUPP) where the MMU cannot (no
  // two-dimensional paging). Only over memory that is present: a missing
  // page blocks inside the ioctl.
  absl::Status PreFaultMemory(uint64_t gpa, uint64_t size);

 private:
  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  int mmap_size_ = 0;
  void* ring_ = nullptr;
  size_t ring_bytes_ = 0;
};

class Kvm {
 public:
  // Opens `path`, checks the API version and probes the capabilities.
  // NotFound / PermissionDenied when there is no usable KVM. /dev/kvm, once
  // held (HoldDevice), is a duplicate of the held descriptor.
  static absl::StatusOr<Kvm> Open(const char* path = "/dev/kvm");
  // Opens /dev/kvm now and keeps it open for the process's life: for a
  // process about to drop its privileges (ferry-vmm --user), so that it
  // can create a KVM VM later although its new user could not open the
  // device. NotFound / PermissionDenied as Open; a caller that can do
  // without KVM may ignore them.
  static absl::Status HoldDevice();

  const KvmCapabilities& caps() const { return caps_; }
  int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  int xsave2_size() const { return xsave2_size_; }

  absl::StatusOr<KvmVmFd> CreateVm() const;
  // KVM_GET_SUPPORTED_CPUID.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> SupportedCpuid() const;
  // KVM_GET_MSR_INDEX_LIST.
  absl::StatusOr<std::vector<uint32_t>> MsrIndexList() const;

 private:
  Kvm(UniqueFd fd, KvmCapabilities caps, int mmap_size, int xsave2_size)
      : fd_(std::move(fd)), caps_(caps), vcpu_mmap_size_(mmap_size), xsave2_size_(xsave2_size) {}

  UniqueFd fd_;
  KvmCapabilities caps_;
  int vcpu_mmap_size_ = 0;
  int xsave2_size_ = 0;
};

}  // namespace ferry::sys

#endif  // FERRY_SYS_KVM_H_
