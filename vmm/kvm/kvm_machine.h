// KvmMachine: the KVM half of a Vm whose backend is KVM. It owns the VM fd,
// the memory slots (the guest's RAM, over the same memfd mapping the
// software backend uses, plus the firmware area of vmm/guest/boot.h), the
// firmware's contents, and one extra vCPU that never runs and serves
// KVM_PRE_FAULT_MEMORY (a vCPU ioctl waits for KVM_RUN to return, so a
// running vCPU's fd cannot be used from another thread; stage-2 tables are
// shared by every vCPU of the VM, so pre-faulting on the extra one maps the
// pages for all).
//
// Threads: CreateVcpu() once per vCPU before the VM starts; PreFault() from
// any thread but never from one that serves userfaultfd (it may wait for a
// page); dirty logging from one thread.
#ifndef FERRY_VMM_KVM_KVM_MACHINE_H_
#define FERRY_VMM_KVM_KVM_MACHINE_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/clock.h"
#include "sys/kvm.h"
#include "vmm/dirty_log.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/firmware.h"
#include "vmm/throttle.h"
#include "vmm/workload.h"

namespace ferry::vmm::kvm {

class KvmVcpu;

// What pre-fault did, for the report.
struct PreFaultStats {
  uint64_t ranges = 0;
  uint64_t pages = 0;        // stage-2 faults the guest will not take
  uint64_t unsupported = 0;  // ranges skipped: the MMU cannot (no TDP)
  uint64_t failed = 0;       // ranges whose ioctl failed otherwise
};

class KvmMachine {
 public:
  // Opens /dev/kvm (NotFound / PermissionDenied when there is none), creates
  // the VM, its memory slots and firmware for `memory` (which must outlive
  // the machine) and `spec` on `vcpus` vCPUs.
  // `dirty_ring`: track writes with KVM's per-vCPU dirty rings instead of
  // the dirty bitmap (chosen at creation: the ring must be enabled before
  // any vCPU exists, and a VM with rings has no bitmap).
  static absl::StatusOr<std::unique_ptr<KvmMachine>> Create(GuestMemory* memory,
                                                            const WorkloadSpec& spec, int vcpus,
                                                            bool dirty_ring = false);
  ~KvmMachine();

  const sys::KvmCapabilities& caps() const { return kvm_.caps(); }
  // KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2): the XSAVE buffer size (0: none).
  int xsave2_size() const { return kvm_.xsave2_size(); }

  // vCPU `index` in its initial state (64-bit, at the image's entry).
  absl::StatusOr<std::unique_ptr<KvmVcpu>> CreateVcpu(int index, const Clock* clock,
                                                      const Throttle* throttle = nullptr);

  // Starts KVM's dirty log over RAM: the bitmap (KVM_MEM_LOG_DIRTY_PAGES
  // with manual protect: KVM_GET_DIRTY_LOG, then KVM_CLEAR_DIRTY_LOG of what
  // was seen) or, for a machine created with dirty rings, the rings
  // (harvest every vCPU's ring, then KVM_RESET_DIRTY_RINGS).
  absl::StatusOr<std::unique_ptr<DirtyLog>> StartDirtyLog();
  bool dirty_ring() const { return dirty_ring_; }
  // Whether ApplyMemoryMap resizes slots in place where the kernel can (the
  // default); off, it deletes and creates them (a comparison for benches).
  void set_resize_in_place(bool on) {
    absl::MutexLock lock(&slots_mu_);
    resize_in_place_ = on;
  }

  // vCPU `index`'s ring is full (KVM_EXIT_DIRTY_RING_FULL): harvests it
  // into the pages the next Collect() reports and resets it. vCPU thread.
  absl::Status OnDirtyRingFull(int index);

  // Exit mode (caps().exit_on_missing: Ferry's KVM patch): gives every RAM
  // slot KVM_MEM_USERFAULT with its part of `bitmap` (one bit per RAM page,
  // 1 = missing: a stage-2 fault there exits with KVM_EXIT_MEMORY_FAULT).
  // `bitmap` must outlive the flag (DisableExitOnMissing, or the machine).
  // FailedPrecondition on a kernel without the patch.
  absl::Status EnableExitOnMissing(const std::atomic<uint64_t>* bitmap);
  // Takes the flag off again (nothing is missing any more): KVM stops
  // reading the bitmap. A no-op when it was never on.
  absl::Status DisableExitOnMissing();

  // Maps guest-physical [gpa, gpa + size) in the stage-2 tables now, so the
  // guest takes no fault there. Only over pages that are present.
  // Unsupported MMUs (no two-dimensional paging) are counted, not errors.
  absl::Status PreFault(uint64_t gpa, uint64_t size);
  PreFaultStats pre_fault_stats() const;
  // The VM's stage-2 mappings, in 4 KiB pages (KvmVmFd::StageTwoMappedPages).
  absl::StatusOr<uint64_t> StageTwoMappedPages() const { return vm_.StageTwoMappedPages(); }

  // What a map change cost on KVM (MemoryMapChangeCost in Vm reports).
  struct SlotChange {
    int kept = 0;                // slots left as they were (stage-2 mappings kept)
    int resized = 0;             // resized in place: their remaining pages' mappings kept
    int recreated = 0;           // slots deleted and created again (moved, or resized without
                                 // the kernel's in-place resize)
    int created = 0;             // slots that are new
    int deleted = 0;             // slots that are gone
    uint64_t bytes_dropped = 0;  // stage-2 coverage lost: deleted and recreated slots' bytes,
                                 // and the tails that shrinks in place cut off; on a kernel
                                 // where a deletion zaps the whole VM, all RAM once any
                                 // slot was deleted or recreated
  };
  // Brings the memslots and the firmware to the memory's map in force, after
  // GuestMemory::ApplyMap from `before`. Only while every vCPU is out of
  // KVM_RUN at an op boundary (the guest flushes its TLB and reloads its
  // region before its next op), and not while a dirty log or exit mode is
  // on (the Vm refuses changes then). A RAM slot whose gpa, size and host
  // address stay is kept; one whose gpa, host address and region stay but
  // whose size changed is resized in place where the kernel can
  // (KvmCapabilities::memslot_resize and resize_in_place()): shrinks with
  // the deletions, grows with the creations. Every other old slot is
  // deleted first, then the new ones are created, so no two slots ever
  // overlap; a resize the kernel refuses falls back to delete and create.
  // A failure leaves the machine unusable: the Vm fails the VM.
  absl::StatusOr<SlotChange> ApplyMemoryMap(const MemoryMap& before);
  // What ApplyMemoryMap would refuse, checked before anything moves:
  // FailedPrecondition while exit mode or a dirty log is on, InvalidArgument
  // for a map the firmware cannot map.
  absl::Status CheckMemoryMap(const MemoryMap& next);

  absl::Span<uint8_t> firmware() { return absl::MakeSpan(firmware_, firmware_size_); }
  const FirmwareLayout& layout() const { return layout_; }
  const WorkloadSpec& spec() const { return spec_; }
  uint32_t page_size() const { return memory_->page_size(); }

 private:
  friend class KvmDirtyLog;
  friend class KvmDirtyRingLog;
  KvmMachine(sys::Kvm kvm, GuestMemory* memory, const WorkloadSpec& spec, int vcpus,
             bool dirty_ring);
  // One vCPU's dirty ring and where harvesting stopped.
  struct Ring {
    absl::Mutex mu;
    kvm_dirty_gfn* gfns = nullptr;
    uint32_t entries = 0;
    uint32_t fetch ABSL_GUARDED_BY(mu) = 0;
  };
  // Appends the RAM page indices of `ring`'s dirty entries to `pages` and
  // marks the entries for reset.
  void HarvestRing(Ring& ring, std::vector<uint64_t>* pages);
  // Harvests every ring and the ring-full leftovers, then resets the rings.
  absl::Status CollectRings(std::vector<uint64_t>* pages);
  absl::Status Init();
  // Sets the flags of every RAM slot (plus KVM_MEM_USERFAULT while exit
  // mode is on).
  absl::Status SetRamSlotFlags(uint32_t flags);
  absl::Status ApplyRamSlotsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(slots_mu_);
  absl::Status PrepareVcpu(sys::KvmVcpuFd& fd, int index);

  sys::Kvm kvm_;
  GuestMemory* const memory_;
  const WorkloadSpec spec_;
  const int vcpus_;
  const bool dirty_ring_;
  sys::KvmVmFd vm_;
  std::vector<std::unique_ptr<Ring>> rings_;  // by vCPU index (dirty ring only)
  absl::Mutex ring_full_mu_;
  std::vector<uint64_t> ring_full_pages_ ABSL_GUARDED_BY(ring_full_mu_);
  uint8_t* firmware_ = nullptr;
  uint64_t firmware_size_ = 0;
  FirmwareLayout layout_;
  std::vector<kvm_cpuid_entry2> cpuid_;
  // Exit mode's bitmap (the pager's), null while it is off; and the flags
  // the RAM slots carry besides (the dirty log's).
  absl::Mutex slots_mu_;
  const std::atomic<uint64_t>* userfault_bitmap_ ABSL_GUARDED_BY(slots_mu_) = nullptr;
  uint32_t ram_flags_ ABSL_GUARDED_BY(slots_mu_) = 0;
  bool resize_in_place_ ABSL_GUARDED_BY(slots_mu_) = true;
  // Deleting or moving a slot zaps every stage-2 mapping of the VM: a
  // kernel without a way to turn KVM_X86_QUIRK_SLOT_ZAP_ALL off (Init).
  bool slot_zap_all_ = true;

  mutable absl::Mutex prefault_mu_;
  sys::KvmVcpuFd prefault_vcpu_ ABSL_GUARDED_BY(prefault_mu_);
  PreFaultStats prefault_stats_ ABSL_GUARDED_BY(prefault_mu_);
};

}  // namespace ferry::vmm::kvm

#endif  // FERRY_VMM_KVM_KVM_MACHINE_H_
