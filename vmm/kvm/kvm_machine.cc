#include "vmm/kvm/kvm_machine.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "sys/kvm_abi.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace ferry::vmm::kvm {
namespace {

// Dirty ring size per vCPU: 4096 entries.
constexpr size_t kDirtyRingBytes = 64 << 10;

// Slot numbers: RAM slots 0..n-1 in map order (at most twice the regions:
// the main region has two), the firmware past them all.
constexpr uint32_t kFirmwareSlot = 2 * kMaxMemoryRegions;

}  // namespace

// KVM's dirty log over the RAM slots: KVM_GET_DIRTY_LOG, then
// KVM_CLEAR_DIRTY_LOG of exactly the bits seen (manual protect), so a write
// that races with Collect() is reported now or by the next call. KVM may
// report pages the guest only read (it maps writable host pages writable),
// and writes the VMM makes are not in it.
class KvmDirtyLog final : public DirtyLog {
 public:
  explicit KvmDirtyLog(KvmMachine* machine) : machine_(machine) {}
  ~KvmDirtyLog() override { (void)machine_->SetRamSlotFlags(0); }

  absl::Status Collect(std::vector<uint64_t>* pages) override {
    pages->clear();
    const MemoryMap& map = machine_->memory_->map();
    const uint32_t ps = map.page_size();
    for (size_t i = 0; i < map.slots().size(); ++i) {
      const MemorySlot& slot = map.slots()[i];
      const uint64_t n = slot.size / ps;
      bitmap_.assign((n + 63) / 64, 0);
      RETURN_IF_ERROR(machine_->vm_.GetDirtyLog(static_cast<uint32_t>(i), bitmap_.data()));
      const uint64_t first = slot.offset / ps;
      for (uint64_t w = 0; w < bitmap_.size(); ++w)
        for (uint64_t bits = bitmap_[w]; bits != 0; bits &= bits - 1)
          pages->push_back(first + w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)));
      RETURN_IF_ERROR(machine_->vm_.ClearDirtyLog(static_cast<uint32_t>(i), 0,
                                                  static_cast<uint32_t>(n), bitmap_.data()));
    }
    return absl::OkStatus();
  }
  const char* Name() const override {
    return "KVM dirty bitmap (KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG, manual protect)";
  }

 private:
  KvmMachine* const machine_;
  std::vector<uint64_t> bitmap_;
};

// KVM's dirty rings: every vCPU's ring harvested, then
// KVM_RESET_DIRTY_RINGS re-protects what was harvested. Like the bitmap, a
// write racing with Collect() is reported now or next time (the page is
// read for sending after Collect() returns), pages only read may be
// reported, and writes the VMM makes are not.
class KvmDirtyRingLog final : public DirtyLog {
 public:
  explicit KvmDirtyRingLog(KvmMachine* machine) : machine_(machine) {}
  ~KvmDirtyRingLog() override {
    (void)machine_->SetRamSlotFlags(0);
    std::vector<uint64_t> drop;
    (void)machine_->CollectRings(&drop);
  }
  absl::Status Collect(std::vector<uint64_t>* pages) override {
    pages->clear();
    RETURN_IF_ERROR(machine_->CollectRings(pages));
    std::sort(pages->begin(), pages->end());
    pages->erase(std::unique(pages->begin(), pages->end()), pages->end());
    return absl::OkStatus();
  }
  const char* Name() const override { return "KVM dirty rings (harvest + KVM_RESET_DIRTY_RINGS)"; }

 private:
  KvmMachine* const machine_;
};

KvmMachine::KvmMachine(sys::Kvm kvm, GuestMemory* memory, const WorkloadSpec& spec, int vcpus,
                       bool dirty_ring)
    : kvm_(std::move(kvm)), memory_(memory), spec_(spec), vcpus_(vcpus), dirty_ring_(dirty_ring) {}

void KvmMachine::HarvestRing(Ring& ring, std::vector<uint64_t>* pages) {
  const MemoryMap& map = memory_->map();
  const uint32_t ps = map.page_size();
  absl::MutexLock lock(&ring.mu);
  while (true) {
    kvm_dirty_gfn& g = ring.gfns[ring.fetch % ring.entries];
    if (!(__atomic_load_n(&g.flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY)) break;
    if (g.slot < map.slots().size()) {
      const MemorySlot& slot = map.slots()[g.slot];
      if (g.offset < slot.size / ps) pages->push_back(slot.offset / ps + g.offset);
    }
    __atomic_store_n(&g.flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
    ++ring.fetch;
  }
}

absl::Status KvmMachine::CollectRings(std::vector<uint64_t>* pages) {
  for (auto& ring : rings_)
    if (ring->gfns != nullptr) HarvestRing(*ring, pages);
  {
    absl::MutexLock lock(&ring_full_mu_);
    pages->insert(pages->end(), ring_full_pages_.begin(), ring_full_pages_.end());
    ring_full_pages_.clear();
  }
  return vm_.ResetDirtyRings().status();
}

absl::Status KvmMachine::OnDirtyRingFull(int index) {
  if (index < 0 || index >= static_cast<int>(rings_.size()) || rings_[index]->gfns == nullptr)
    return absl::InternalError("a dirty-ring-full exit without a dirty ring");
  std::vector<uint64_t> pages;
  HarvestRing(*rings_[index], &pages);
  {
    absl::MutexLock lock(&ring_full_mu_);
    ring_full_pages_.insert(ring_full_pages_.end(), pages.begin(), pages.end());
  }
  return vm_.ResetDirtyRings().status();
}

KvmMachine::~KvmMachine() {
  if (firmware_ != nullptr) munmap(firmware_, firmware_size_);
}

absl::StatusOr<std::unique_ptr<KvmMachine>> KvmMachine::Create(GuestMemory* memory,
                                                               const WorkloadSpec& spec, int vcpus,
                                                               bool dirty_ring) {
  ASSIGN_OR_RETURN(sys::Kvm kvm, sys::Kvm::Open());
  if (dirty_ring && kvm.caps().dirty_log_ring_bytes < static_cast<int>(kDirtyRingBytes))
    return absl::FailedPreconditionError(
        "KVM lacks KVM_CAP_DIRTY_LOG_RING (Linux 5.11) of 64 KiB per vCPU");
  std::unique_ptr<KvmMachine> m(new KvmMachine(std::move(kvm), memory, spec, vcpus, dirty_ring));
  RETURN_IF_ERROR(m->Init());
  return m;
}

absl::Status KvmMachine::Init() {
  ASSIGN_OR_RETURN(vm_, kvm_.CreateVm());
  ASSIGN_OR_RETURN(cpuid_, kvm_.SupportedCpuid());
  // A deleted or moved slot drops its own stage-2 mappings only, not the
  // whole VM's: the zap-all quirk exists for assigned devices, which Ferry
  // VMs have none of. Kernels that cannot turn it off zap all.
  const int quirks = vm_.CheckExtension(KVM_CAP_DISABLE_QUIRKS2);
  // Should the kernel refuse, the VM runs on with the quirk (a cost, not
  // an error) and ApplyMemoryMap counts every deletion as dropping all.
  if (quirks > 0 && (static_cast<uint64_t>(quirks) & sys::abi::kKvmX86QuirkSlotZapAll) != 0)
    slot_zap_all_ = !vm_.EnableCap(KVM_CAP_DISABLE_QUIRKS2, sys::abi::kKvmX86QuirkSlotZapAll).ok();
  if (dirty_ring_) {
    // Before any vCPU exists; the rings then replace the bitmap.
    RETURN_IF_ERROR(vm_.EnableCap(KVM_CAP_DIRTY_LOG_RING, kDirtyRingBytes));
    for (int i = 0; i < vcpus_; ++i) rings_.push_back(std::make_unique<Ring>());
  } else if (kvm_.caps().manual_dirty_log_protect) {
    RETURN_IF_ERROR(
        vm_.EnableCap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE));
  }
  firmware_size_ = guest::FirmwareBytes(static_cast<uint64_t>(vcpus_));
  void* fw = mmap(nullptr, firmware_size_, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (fw == MAP_FAILED) return ErrnoStatus("mmap firmware", errno);
  firmware_ = static_cast<uint8_t*>(fw);
  ASSIGN_OR_RETURN(layout_, BuildFirmware(memory_->map(), spec_, vcpus_, firmware()));
  RETURN_IF_ERROR(SetRamSlotFlags(0));
  RETURN_IF_ERROR(vm_.SetMemoryRegion(kFirmwareSlot, 0, layout_.gpa, firmware_size_, firmware_));
  absl::MutexLock lock(&prefault_mu_);
  ASSIGN_OR_RETURN(prefault_vcpu_, vm_.CreateVcpu(vcpus_, kvm_.vcpu_mmap_size()));
  return PrepareVcpu(prefault_vcpu_, 0);
}

absl::Status KvmMachine::SetRamSlotFlags(uint32_t flags) {
  absl::MutexLock lock(&slots_mu_);
  ram_flags_ = flags;
  return ApplyRamSlotsLocked();
}

absl::Status KvmMachine::ApplyRamSlotsLocked() {
  const MemoryMap& map = memory_->map();
  const uint32_t ps = map.page_size();
  for (size_t i = 0; i < map.slots().size(); ++i) {
    const MemorySlot& s = map.slots()[i];
    const auto slot = static_cast<uint32_t>(i);
    if (userfault_bitmap_ == nullptr) {
      RETURN_IF_ERROR(
          vm_.SetMemoryRegion(slot, ram_flags_, s.gpa, s.size, memory_->host() + s.offset));
      continue;
    }
    // The slot's bits start at its first RAM page, which is a whole word
    // in: slots start on 2 MiB boundaries of RAM (512 pages).
    if ((s.offset / ps) % 64 != 0)
      return absl::InternalError(
          absl::StrFormat("RAM slot %d starts at page %d, not on a 64-page word of the bitmap",
                          slot, s.offset / ps));
    RETURN_IF_ERROR(vm_.SetMemoryRegion2(slot, ram_flags_, s.gpa, s.size,
                                         memory_->host() + s.offset,
                                         userfault_bitmap_ + s.offset / ps / 64));
  }
  return absl::OkStatus();
}

absl::Status KvmMachine::CheckMemoryMap(const MemoryMap& next) {
  {
    absl::MutexLock lock(&slots_mu_);
    if (userfault_bitmap_ != nullptr || ram_flags_ != 0)
      return absl::FailedPreconditionError(
          "KVM memslots cannot change while exit mode or a dirty log is on");
  }
  return CheckFirmwareMap(next);
}

absl::StatusOr<KvmMachine::SlotChange> KvmMachine::ApplyMemoryMap(const MemoryMap& before) {
  absl::MutexLock lock(&slots_mu_);
  if (userfault_bitmap_ != nullptr || ram_flags_ != 0)
    return absl::FailedPreconditionError(
        "KVM memslots cannot change while exit mode or a dirty log is on");
  const MemoryMap& map = memory_->map();
  auto same = [&](size_t i) {
    if (i >= before.slots().size() || i >= map.slots().size()) return false;
    const MemorySlot& a = before.slots()[i];
    const MemorySlot& b = map.slots()[i];
    // The same region too: another one in its place was mapped afresh, and
    // the remap zapped the slot's stage-2 mappings (MMU notifier) anyway.
    return a.gpa == b.gpa && a.size == b.size && a.offset == b.offset &&
           before.regions()[a.region].name == map.regions()[b.region].name;
  };
  // Only the size changed (the same region at the same gpa and host
  // address): the kernel may resize the slot in place.
  const bool in_place = resize_in_place_ && kvm_.caps().memslot_resize;
  auto resizable = [&](size_t i) {
    if (!in_place || i >= before.slots().size() || i >= map.slots().size()) return false;
    const MemorySlot& a = before.slots()[i];
    const MemorySlot& b = map.slots()[i];
    return a.gpa == b.gpa && a.offset == b.offset && a.size != b.size &&
           before.regions()[a.region].name == map.regions()[b.region].name;
  };
  // Tries the in-place resize of slot i to its new size; false when the
  // kernel refused (the slot is then as it was).
  auto resize = [&](size_t i) {
    const MemorySlot& s = map.slots()[i];
    return vm_
        .ResizeMemoryRegion(static_cast<uint32_t>(i), s.gpa, s.size, memory_->host() + s.offset)
        .ok();
  };
  SlotChange c;
  std::vector<bool> done(map.slots().size(), false);  // resized in place
  for (size_t i = 0; i < before.slots().size(); ++i) {
    if (same(i)) continue;
    // A shrink goes first, with the deletions: its tail may be where a
    // new slot comes.
    if (resizable(i) && map.slots()[i].size < before.slots()[i].size && resize(i)) {
      done[i] = true;
      ++c.resized;
      c.bytes_dropped += before.slots()[i].size - map.slots()[i].size;
      continue;
    }
    // A grow waits until the deletions made room for it.
    if (resizable(i) && map.slots()[i].size > before.slots()[i].size) continue;
    RETURN_IF_ERROR(vm_.SetMemoryRegion(static_cast<uint32_t>(i), 0, before.slots()[i].gpa, 0,
                                        memory_->host() + before.slots()[i].offset));
    c.bytes_dropped += before.slots()[i].size;
    if (i < map.slots().size()) {
      ++c.recreated;
    } else {
      ++c.deleted;
    }
  }
  for (size_t i = 0; i < map.slots().size(); ++i) {
    if (same(i)) {
      ++c.kept;
      continue;
    }
    if (done[i]) continue;
    if (resizable(i) && map.slots()[i].size > before.slots()[i].size) {
      if (resize(i)) {
        ++c.resized;
        continue;
      }
      // Refused: delete and create after all.
      RETURN_IF_ERROR(vm_.SetMemoryRegion(static_cast<uint32_t>(i), 0, before.slots()[i].gpa, 0,
                                          memory_->host() + before.slots()[i].offset));
      c.bytes_dropped += before.slots()[i].size;
      ++c.recreated;
    }
    const MemorySlot& s = map.slots()[i];
    RETURN_IF_ERROR(vm_.SetMemoryRegion(static_cast<uint32_t>(i), 0, s.gpa, s.size,
                                        memory_->host() + s.offset));
    if (i >= before.slots().size()) ++c.created;
  }
  // Where deleting a slot zaps the whole VM's mappings, any delete or
  // recreate dropped them all (a resize in place alone does not).
  if (slot_zap_all_ && c.recreated + c.deleted > 0) {
    c.bytes_dropped = 0;
    for (const MemorySlot& s : before.slots()) c.bytes_dropped += s.size;
  }
  RETURN_IF_ERROR(UpdateFirmwareForMap(map, spec_, vcpus_, layout_, firmware()));
  return c;
}

absl::Status KvmMachine::EnableExitOnMissing(const std::atomic<uint64_t>* bitmap) {
  static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t));
  if (!kvm_.caps().exit_on_missing)
    return absl::FailedPreconditionError(
        "this kernel's memslots cannot exit on missing pages (no KVM userfault)");
  absl::MutexLock lock(&slots_mu_);
  userfault_bitmap_ = bitmap;
  absl::Status s = ApplyRamSlotsLocked();
  if (!s.ok()) {
    userfault_bitmap_ = nullptr;
    (void)ApplyRamSlotsLocked();
  }
  return s;
}

absl::Status KvmMachine::DisableExitOnMissing() {
  absl::MutexLock lock(&slots_mu_);
  if (userfault_bitmap_ == nullptr) return absl::OkStatus();
  userfault_bitmap_ = nullptr;
  return ApplyRamSlotsLocked();
}

absl::Status KvmMachine::PrepareVcpu(sys::KvmVcpuFd& fd, int index) {
  RETURN_IF_ERROR(fd.SetCpuid(cpuid_));
  kvm_sregs sregs;
  RETURN_IF_ERROR(fd.GetSregs(&sregs));
  RETURN_IF_ERROR(fd.SetSregs(LongModeSregs(layout_, sregs)));
  return fd.SetRegs(InitialRegs(index));
}

absl::StatusOr<std::unique_ptr<KvmVcpu>> KvmMachine::CreateVcpu(int index, const Clock* clock,
                                                                const Throttle* throttle) {
  if (index < 0 || index >= vcpus_)
    return absl::InvalidArgumentError(absl::StrFormat("no vCPU %d in a %d-vCPU VM", index, vcpus_));
  ASSIGN_OR_RETURN(sys::KvmVcpuFd fd, vm_.CreateVcpu(index, kvm_.vcpu_mmap_size()));
  RETURN_IF_ERROR(PrepareVcpu(fd, index));
  if (dirty_ring_) {
    ASSIGN_OR_RETURN(rings_[index]->gfns, fd.MapDirtyRing(kDirtyRingBytes));
    rings_[index]->entries = kDirtyRingBytes / sizeof(kvm_dirty_gfn);
  }
  return std::make_unique<KvmVcpu>(index, this, std::move(fd), clock, throttle);
}

absl::StatusOr<std::unique_ptr<DirtyLog>> KvmMachine::StartDirtyLog() {
  if (dirty_ring_) {
    RETURN_IF_ERROR(SetRamSlotFlags(KVM_MEM_LOG_DIRTY_PAGES));
    return std::unique_ptr<DirtyLog>(new KvmDirtyRingLog(this));
  }
  if (!kvm_.caps().manual_dirty_log_protect)
    return absl::FailedPreconditionError(
        "KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (Linux 5.8): no dirty log without "
        "losing writes between read and clear");
  RETURN_IF_ERROR(SetRamSlotFlags(KVM_MEM_LOG_DIRTY_PAGES));
  return std::unique_ptr<DirtyLog>(new KvmDirtyLog(this));
}

absl::Status KvmMachine::PreFault(uint64_t gpa, uint64_t size) {
  absl::MutexLock lock(&prefault_mu_);
  ++prefault_stats_.ranges;
  absl::Status s = prefault_vcpu_.PreFaultMemory(gpa, size);
  if (s.ok()) {
    prefault_stats_.pages += size / memory_->page_size();
    return s;
  }
  if (absl::IsUnimplemented(s)) {  // EOPNOTSUPP: no TDP; the guest faults as usual
    ++prefault_stats_.unsupported;
    return absl::OkStatus();
  }
  ++prefault_stats_.failed;
  return s;
}

PreFaultStats KvmMachine::pre_fault_stats() const {
  absl::MutexLock lock(&prefault_mu_);
  return prefault_stats_;
}

}  // namespace ferry::vmm::kvm
