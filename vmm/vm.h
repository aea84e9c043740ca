// Vm: one virtual machine: its guest memory, its vCPUs and their threads,
// and (on a destination) the demand pager that fills missing memory.
//
// vCPU run states (docs/architecture.md draws the diagram):
//   paused   --Resume/Start-->  running
//   running  --Pause-------->   paused     (Run() returned kPaused)
//   running  --workload done->  finished
//   running  --error-------->   failed     (a fault could not be resolved)
// A request that does not fit the VM's state fails with FailedPrecondition
// naming the request and the state.
//
// Each vCPU has its own thread, which runs:
//   Run() -> kMemoryFault -> pager->ResolveFault() (fetch, install) -> Run()
// so in exit mode a fault is resolved on the faulting vCPU's thread.
//
// Pause guarantee: when Pause() returns OK, no vCPU is executing guest code
// and none will until Resume(): every vCPU is paused, finished or failed,
// and guest memory changes only through the pager (installs) or the caller.
// A vCPU that is resolving a fault (exit mode: fetching a page) or asleep on
// one in the kernel (blocking mode) is not in guest code yet but will be once
// the page arrives; Pause() waits for that page, so it can take as long as
// one fault.
//
// Threads: all methods are thread-safe; Stop() and the destructor join the
// vCPU threads.
//
//   ASSIGN_OR_RETURN(auto vm, Vm::Create(config));
//   RETURN_IF_ERROR(vm->LoadInitialMemory());
//   RETURN_IF_ERROR(vm->Start());
//   RETURN_IF_ERROR(vm->WaitUntilHalted(absl::Seconds(60)));
#ifndef FERRY_VMM_VM_H_
#define FERRY_VMM_VM_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "vmm/demand_pager.h"
#include "vmm/digest.h"
#include "vmm/dirty_log.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/kvm_machine.h"
#include "vmm/memory_transaction.h"
#include "vmm/ops_meter.h"
#include "vmm/soft_vcpu.h"
#include "vmm/throttle.h"
#include "vmm/vcpu.h"
#include "vmm/workload.h"

namespace ferry::vmm {

// Which vCPUs run the guest: software vCPUs (anywhere) or KVM vCPUs
// running the guest image (vmm/guest/), where /dev/kvm opens.
enum class VmBackend { kSoft = 1, kKvm };

absl::StatusOr<VmBackend> ParseVmBackend(absl::string_view name);  // "soft", "kvm"
const char* VmBackendName(VmBackend backend);
// "auto": KVM where /dev/kvm opens, else soft; "soft" and "kvm" as given.
// The string says why when auto chose soft.
absl::StatusOr<std::pair<VmBackend, std::string>> ResolveVmBackend(absl::string_view name);

// One applied memory transaction, as a replay needs it: each vCPU ran
// ops_before[v] ops on the map before it, and goes on over `regions`.
struct MemoryEpoch {
  MemoryTransaction transaction;
  std::vector<MemoryRegion> regions;  // the map after it
  std::vector<uint64_t> ops_before;
};

struct VmConfig {
  VmBackend backend = VmBackend::kSoft;
  // KVM only: dirty rings instead of the dirty bitmap (docs/kvm.md).
  bool kvm_dirty_ring = false;
  // KVM only: memory map changes resize a slot in place where the kernel
  // can (Ferry's KVM patch, docs/kvm.md); false: delete and create it, as
  // on a stock kernel (a comparison for benches). Not migrated.
  bool kvm_resize_in_place = true;
  uint64_t memory_bytes = 1ull << 30;  // at creation: the main region's size
  // The most memory ChangeMemory may grow the VM to (the room reserved for
  // it); 0: four times memory_bytes.
  uint64_t max_memory_bytes = 0;
  // A VM whose map changed before it came here (a migration's destination):
  // its regions now (empty: the main region of memory_bytes alone) and the
  // transactions that made them, which MemoryHistory() starts from, so a
  // replay from memory_bytes still reaches this map.
  std::vector<MemoryRegion> regions;
  std::vector<MemoryEpoch> history;
  uint32_t page_size = 4096;
  int vcpus = 2;
  WorkloadSpec workload;
  SoftVcpuOptions vcpu_options;
};

// Checks sizes and counts; names the offending field.
absl::Status ValidateVmConfig(const VmConfig& config);
// config.max_memory_bytes, or its default.
uint64_t MaxMemoryBytes(const VmConfig& config);
// The memory a VM of `config` holds at creation: its regions together, or
// memory_bytes (what an agent admits for it).
uint64_t CreatedMemoryBytes(const VmConfig& config);
// The map a VM of `config` starts with: config.regions, or the main region
// of config.memory_bytes.
absl::StatusOr<MemoryMap> InitialMemoryMap(const VmConfig& config);

enum class VcpuRunState { kPaused, kRunning, kFinished, kFailed };
const char* VcpuRunStateName(VcpuRunState state);

struct VcpuStats {
  VcpuRunState state = VcpuRunState::kPaused;
  VcpuCounters counters;
};

// The fault mode a destination VM runs and why (Vm::EnableDemandPaging).
struct FaultModeChoice {
  FaultMode mode = FaultMode::kExit;
  std::string reason;
};
// The fault mode a VM of `backend` gets when `requested`, and why:
// `exit_on_missing` is what the host's KVM offers (KvmCapabilities).
FaultModeChoice ChooseFaultMode(VmBackend backend, bool exit_on_missing, FaultMode requested);

struct MemoryChangeResult {
  std::vector<MemoryRegion> regions;  // the map now
  uint64_t memory_bytes = 0;
  int64_t held_off_ns = 0;  // vCPUs kept out of guest code (0: none was running)
  int64_t apply_ns = 0;     // of which remapping memory, slots and page tables
  // KVM: what happened to the memslots (software vCPUs: all 0). A kept
  // slot keeps its stage-2 mappings; a recreated or deleted one loses them,
  // and the guest faults them back in. A slot resized in place keeps the
  // mappings of the pages that stay in it.
  int slots_kept = 0;
  int slots_resized = 0;
  int slots_recreated = 0;
  int slots_created = 0;
  int slots_deleted = 0;
  uint64_t stage2_bytes_dropped = 0;
};

// Holds a VM's memory map still: Vm::ChangeMemory refuses while one lives,
// saying why. Taken by whatever copies or tracks guest memory by RAM offset
// (a dirty log, a snapshot, a migration). May outlive the VM.
class MemoryMapPin {
 public:
  struct Holders {
    absl::Mutex mu;
    std::vector<std::pair<uint64_t, std::string>> why ABSL_GUARDED_BY(mu);
    uint64_t next_id ABSL_GUARDED_BY(mu) = 0;
  };
  MemoryMapPin() = default;
  MemoryMapPin(MemoryMapPin&& other) noexcept
      : holders_(std::move(other.holders_)), id_(other.id_) {}
  MemoryMapPin& operator=(MemoryMapPin&& other) noexcept;
  ~MemoryMapPin() { Release(); }

 private:
  friend class Vm;
  MemoryMapPin(std::shared_ptr<Holders> holders, uint64_t id)
      : holders_(std::move(holders)), id_(id) {}
  void Release();

  std::shared_ptr<Holders> holders_;
  uint64_t id_ = 0;
};

struct VmStats {
  std::vector<VcpuStats> vcpus;
  uint64_t total_ops = 0;
};

inline constexpr absl::Duration kOpsSampleInterval = absl::Milliseconds(2);
inline constexpr size_t kOpsSamples = 8192;  // 16 s at 2 ms

class Vm {
 public:
  static absl::StatusOr<std::unique_ptr<Vm>> Create(const VmConfig& config,
                                                    const Clock* clock = &RealClock());
  ~Vm();

  const VmConfig& config() const { return config_; }
  GuestMemory& memory() { return *memory_; }
  const GuestMemory& memory() const { return *memory_; }

  // Writes the workload's initial memory (the guest "booted"). Before Start().
  absl::Status LoadInitialMemory();

  // Destination: every page starts missing and is fetched from `source` when
  // touched. The VM shares ownership of the source: a vCPU may still be
  // fetching when the migration that supplied it ends. Before Start(), on
  // empty memory.
  absl::Status EnableDemandPaging(std::shared_ptr<PageSource> source, DemandPagerOptions options);
  DemandPager* pager() { return pager_.get(); }
  // Leaves demand paging once nothing is missing (DemandPager::Finish), on
  // KVM after taking the exit-on-missing flag off the memslots.
  // FailedPrecondition while pages are missing or without a pager.
  absl::Status FinishDemandPaging();
  // The fault mode demand paging uses, and why: the one place the choice is
  // made. KVM vCPUs exit on missing pages only on a kernel whose memslots
  // can (Ferry's KVM patch; none upstream yet); elsewhere blocking mode.
  FaultModeChoice ChooseFaultMode(FaultMode requested) const;
  const FaultModeChoice& fault_mode_choice() const { return fault_mode_choice_; }

  VmBackend backend() const { return config_.backend; }
  // KVM only: what the kernel offers ("" for a software VM).
  std::string BackendCapabilities() const;
  // KVM only: maps [gpa, gpa + size) (installed pages) in the stage-2
  // tables now; a no-op for software vCPUs. Never from a thread that serves
  // userfaultfd.
  absl::Status PreFault(uint64_t gpa, uint64_t size);
  // Stage-2 faults pre-faulting saved so far (pages mapped ahead).
  uint64_t PreFaultedPages() const;
  // KVM only: the guest memory mapped in the stage-2 tables now, in 4 KiB
  // pages (Unimplemented for software vCPUs, Unavailable without KVM's
  // binary stats).
  absl::StatusOr<uint64_t> StageTwoMappedPages() const;
  // The paths this VM's demand paging uses, for reports: the fault mode and
  // why, and on KVM whether pre-fault is available.
  std::string DemandPagingPaths() const;

  absl::Status Start();
  absl::Status Pause();
  absl::Status Resume();
  // Started, not stopping, and paused.
  bool paused() const;
  // Fails the VM for good with `why`: Health() returns it from now on and
  // Resume() refuses, every vCPU that had not finished is marked failed and
  // kicked out of guest code, and none re-enters (one halting meanwhile
  // stays failed). For a VM whose memory cannot be completed (a lazy
  // restore's read failed). Does not wait: a vCPU asleep on a page that
  // will never come stays asleep until Stop().
  void Fail(const absl::Status& why);
  // Stops every vCPU and joins the threads; idempotent. The VM cannot be
  // started again.
  void Stop();

  // Waits until every vCPU has finished its workload or failed. Returns the
  // first vCPU's error, DeadlineExceeded on timeout, FailedPrecondition for
  // a workload that runs until stopped.
  absl::Status WaitUntilHalted(absl::Duration timeout);

  // Auto-converge: each vCPU sleeps `percent` of every kThrottlePeriodNs
  // (10 ms) instead of running the guest (vmm/throttle.h), from its next
  // check (between ops; KVM: at its next exit). Clamped to 0..99; 0 (the
  // start): no throttle. Whoever sets it must set it back to 0: the VM
  // keeps it across Pause/Resume. Any thread.
  void SetThrottle(int percent) { throttle_->Set(percent); }
  int throttle_percent() const { return throttle_->percent(); }

  VmStats Stats() const;
  // The guest's per-vCPU op counts, sampled every kOpsSampleInterval from
  // Start() to Stop() (the last kOpsSamples samples are kept).
  const OpsMeter& ops_meter() const { return meter_; }
  std::vector<VcpuRunState> States() const;
  // OK unless the VM failed (Fail(): its reason) or a vCPU failed (the
  // first failed vCPU's error, naming it).
  // A VM that is not healthy cannot run its guest: a migration that
  // delivered it must not be reported as completed.
  absl::Status Health() const;

  // Starts tracking which pages the guest writes (the source of a
  // migration): the dirty log that fits this VM's vCPUs. The log must not
  // outlive the VM.
  absl::StatusOr<std::unique_ptr<DirtyLog>> StartDirtyLog();

  // vCPU state as bytes, one string per vCPU; only while no vCPU runs.
  absl::StatusOr<std::vector<std::string>> SaveVcpuStates() const;
  absl::Status RestoreVcpuStates(const std::vector<std::string>& states);

  // Applies a memory map transaction (vmm/memory_transaction.h) all at
  // once: plans it against the map in force and this VM's limits, holds
  // every running vCPU off guest code at an op boundary, remaps the memory,
  // points each vCPU's workload at the new map, records the epoch for the
  // replay and lets the vCPUs go on. A transaction that cannot apply is
  // refused whole (nothing changes): InvalidArgument or ResourceExhausted
  // from the planner, FailedPrecondition while the map is pinned (a
  // migration, a dirty log, a snapshot), while pages are demand paged, or
  // for a VM that failed or is stopping. On KVM the memslots and the
  // guest's page tables follow (KvmMachine::ApplyMemoryMap); if they cannot,
  // the VM fails (Internal) — its memory moved and its vCPUs cannot follow.
  absl::StatusOr<MemoryChangeResult> ChangeMemory(const MemoryTransaction& t);
  // Every transaction applied so far, in order.
  std::vector<MemoryEpoch> MemoryHistory() const;
  // What the map may become (the planner's limits for this VM).
  MemoryLimits memory_limits() const;
  // Holds the map still until the pin is dropped; `why` completes "the
  // memory map cannot change while ...".
  MemoryMapPin PinMemoryMap(std::string why) const;

  // The memory digest (the map held still while it reads). Call while paused or halted;
  // FailedPrecondition while the pager still has missing pages.
  absl::StatusOr<MemoryDigest> Digest() const;

 private:
  Vm(const VmConfig& config, std::unique_ptr<GuestMemory> memory,
     std::unique_ptr<kvm::KvmMachine> machine, std::unique_ptr<Throttle> throttle,
     std::vector<std::unique_ptr<Vcpu>> vcpus, const Clock* clock);

  void VcpuThread(int index);
  bool AnyRunningLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FailedPrecondition naming the first vCPU that failed, if one did.
  absl::Status NoFailedVcpuLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string LifecycleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const VmConfig config_;
  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<kvm::KvmMachine> machine_;  // KVM backend only
  const Clock* clock_;
  FaultModeChoice fault_mode_choice_;
  int handler_threads_ = 0;             // blocking mode, once demand paging is on
  std::shared_ptr<PageSource> source_;  // outlives pager_ (declared first)
  std::unique_ptr<DemandPager> pager_;
  std::unique_ptr<Throttle> throttle_;  // the vCPUs read it (declared before them)
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  std::vector<std::thread> threads_;
  OpsMeter meter_;  // after vcpus_, which it reads

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::vector<VcpuRunState> states_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Status> errors_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);  // Fail()'s reason
  bool demand_paging_done_ ABSL_GUARDED_BY(mu_) = false;
  bool changing_ ABSL_GUARDED_BY(mu_) = false;       // ChangeMemory holds the vCPUs
  std::vector<bool> in_guest_ ABSL_GUARDED_BY(mu_);  // a vCPU thread is inside Run()
  std::vector<MemoryEpoch> history_ ABSL_GUARDED_BY(mu_);
  const std::shared_ptr<MemoryMapPin::Holders> pins_ = std::make_shared<MemoryMapPin::Holders>();
};

// The digest of a run of `config`'s workload without faults or migration:
// fresh memory, initial content, ops_per_vcpu ops per vCPU, or ops[v] ops
// on vCPU v (for a workload that ran until it was paused).
absl::StatusOr<MemoryDigest> ReferenceDigest(const VmConfig& config);
// deadline_ns (CLOCK_MONOTONIC; 0: none) bounds the replay:
// DeadlineExceeded past it.
absl::StatusOr<MemoryDigest> ReferenceDigest(const VmConfig& config,
                                             const std::vector<uint64_t>& ops,
                                             int64_t deadline_ns = 0);
// The same for a VM whose memory map changed: the ops of each epoch run on
// the map they ran on, and each transaction is applied in between
// (Vm::MemoryHistory). InvalidArgument for a history that does not fit
// `ops` (op counts that go backwards or past ops).
absl::StatusOr<MemoryDigest> ReferenceDigest(const VmConfig& config,
                                             const std::vector<uint64_t>& ops,
                                             const std::vector<MemoryEpoch>& history,
                                             int64_t deadline_ns = 0);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_VM_H_
