#include "vmm/vm.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "sys/kvm.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace ferry::vmm {
namespace {

constexpr int kMaxVcpus = 256;

}  // namespace

absl::StatusOr<VmBackend> ParseVmBackend(absl::string_view name) {
  if (name == "soft") return VmBackend::kSoft;
  if (name == "kvm") return VmBackend::kKvm;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", name, "': choose kvm, soft or auto"));
}

const char* VmBackendName(VmBackend backend) {
  switch (backend) {
    case VmBackend::kSoft:
      return "soft";
    case VmBackend::kKvm:
      return "kvm";
  }
  return "unknown";
}

absl::StatusOr<std::pair<VmBackend, std::string>> ResolveVmBackend(absl::string_view name) {
  if (name != "auto") {
    ASSIGN_OR_RETURN(VmBackend b, ParseVmBackend(name));
    return std::make_pair(b, std::string("as asked"));
  }
  absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();
  if (kvm.ok()) return std::make_pair(VmBackend::kKvm, std::string("auto: /dev/kvm opens"));
  return std::make_pair(VmBackend::kSoft,
                        absl::StrCat("auto: no usable KVM (", kvm.status().message(), ")"));
}

const char* VcpuRunStateName(VcpuRunState state) {
  switch (state) {
    case VcpuRunState::kPaused:
      return "paused";
    case VcpuRunState::kRunning:
      return "running";
    case VcpuRunState::kFinished:
      return "finished";
    case VcpuRunState::kFailed:
      return "failed";
  }
  return "unknown";
}

uint64_t MaxMemoryBytes(const VmConfig& config) {
  return config.max_memory_bytes != 0 ? config.max_memory_bytes : 4 * config.memory_bytes;
}

uint64_t CreatedMemoryBytes(const VmConfig& config) {
  if (config.regions.empty()) return config.memory_bytes;
  uint64_t total = 0;
  for (const MemoryRegion& r : config.regions) total += r.size;
  return total;
}

absl::StatusOr<MemoryMap> InitialMemoryMap(const VmConfig& config) {
  if (config.regions.empty()) return MemoryMap::ForSize(config.memory_bytes, config.page_size);
  return MemoryMap::FromRegions(config.regions, config.page_size);
}

absl::Status ValidateVmConfig(const VmConfig& config) {
  if (config.vcpus < 1 || config.vcpus > kMaxVcpus)
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpus %d is not in [1, %d]", config.vcpus, kMaxVcpus));
  if (config.page_size == 0 || config.memory_bytes == 0 ||
      config.memory_bytes % config.page_size != 0)
    return absl::InvalidArgumentError(
        absl::StrFormat("memory size %d is not a positive multiple of the %d-byte page",
                        config.memory_bytes, config.page_size));
  if (config.backend == VmBackend::kKvm && config.memory_bytes % (2ull << 20) != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "a KVM VM's memory must be a multiple of 2 MiB; %d bytes is not", config.memory_bytes));
  if (config.memory_bytes / config.page_size < static_cast<uint64_t>(config.vcpus))
    return absl::InvalidArgumentError(
        absl::StrFormat("memory of %d bytes is too small for %d vCPUs (each needs a page)",
                        config.memory_bytes, config.vcpus));
  if (config.max_memory_bytes != 0 && (config.max_memory_bytes < config.memory_bytes ||
                                       config.max_memory_bytes % config.page_size != 0))
    return absl::InvalidArgumentError(absl::StrFormat(
        "maximum memory %d is below the memory size %d or not a multiple of the page",
        config.max_memory_bytes, config.memory_bytes));
  if (config.backend == VmBackend::kKvm && MaxMemoryBytes(config) % (2ull << 20) != 0)
    return absl::InvalidArgumentError(
        absl::StrFormat("a KVM VM's maximum memory must be a multiple of 2 MiB; %d bytes is not",
                        config.max_memory_bytes));
  if (!config.regions.empty()) {
    absl::StatusOr<MemoryMap> map = InitialMemoryMap(config);
    if (!map.ok()) return map.status();
    if (map->memory_bytes() > MaxMemoryBytes(config))
      return absl::InvalidArgumentError(
          absl::StrFormat("the regions hold %s, more than the maximum memory of %s",
                          BytesString(map->memory_bytes()), BytesString(MaxMemoryBytes(config))));
    if (map->num_pages() < static_cast<uint64_t>(config.vcpus))
      return absl::InvalidArgumentError("the regions are too small for one page per vCPU");
    for (const MemoryRegion& r : map->regions())
      if (config.backend == VmBackend::kKvm && (r.gpa % (2ull << 20) || r.size % (2ull << 20)))
        return absl::InvalidArgumentError(
            absl::StrFormat("a KVM VM's regions must be 2 MiB aligned; %s is not", r.name));
    // A replay starts from memory_bytes and applies the history: it must
    // end at these regions.
    absl::StatusOr<MemoryMap> end =
        config.history.empty()
            ? MemoryMap::ForSize(config.memory_bytes, config.page_size)
            : MemoryMap::FromRegions(config.history.back().regions, config.page_size);
    if (!end.ok() || !end->SameLayout(*map))
      return absl::InvalidArgumentError(absl::StrFormat(
          "the regions (%s) are not the map the memory history leads to", map->RegionsString()));
  } else if (!config.history.empty()) {
    return absl::InvalidArgumentError("a memory history needs the regions it led to");
  }
  for (size_t e = 0; e < config.history.size(); ++e)
    if (config.history[e].ops_before.size() != static_cast<size_t>(config.vcpus))
      return absl::InvalidArgumentError(
          absl::StrFormat("memory epoch %d has %d op counts for %d vCPUs", e,
                          config.history[e].ops_before.size(), config.vcpus));
  if (MaxMemoryBytes(config) > kMaxGuestPhysical / 2)
    return absl::InvalidArgumentError(absl::StrFormat("maximum memory %s is more than %s",
                                                      BytesString(MaxMemoryBytes(config)),
                                                      BytesString(kMaxGuestPhysical / 2)));
  return ValidateWorkload(config.workload);
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const VmConfig& config, const Clock* clock) {
  RETURN_IF_ERROR(ValidateVmConfig(config));
  ASSIGN_OR_RETURN(MemoryMap map, InitialMemoryMap(config));
  ASSIGN_OR_RETURN(std::unique_ptr<GuestMemory> memory,
                   GuestMemory::Create(map, MaxMemoryBytes(config)));
  std::unique_ptr<kvm::KvmMachine> machine;
  std::vector<std::unique_ptr<Vcpu>> vcpus;
  auto throttle = std::make_unique<Throttle>();
  if (config.backend == VmBackend::kKvm) {
    ASSIGN_OR_RETURN(machine, kvm::KvmMachine::Create(memory.get(), config.workload, config.vcpus,
                                                      config.kvm_dirty_ring));
    machine->set_resize_in_place(config.kvm_resize_in_place);
    for (int i = 0; i < config.vcpus; ++i) {
      ASSIGN_OR_RETURN(std::unique_ptr<kvm::KvmVcpu> v,
                       machine->CreateVcpu(i, clock, throttle.get()));
      vcpus.push_back(std::move(v));
    }
  } else {
    for (int i = 0; i < config.vcpus; ++i)
      vcpus.push_back(std::make_unique<SoftVcpu>(i, config.vcpus, memory.get(), config.workload,
                                                 clock, config.vcpu_options, throttle.get()));
  }
  return std::unique_ptr<Vm>(new Vm(config, std::move(memory), std::move(machine),
                                    std::move(throttle), std::move(vcpus), clock));
}

Vm::Vm(const VmConfig& config, std::unique_ptr<GuestMemory> memory,
       std::unique_ptr<kvm::KvmMachine> machine, std::unique_ptr<Throttle> throttle,
       std::vector<std::unique_ptr<Vcpu>> vcpus, const Clock* clock)
    : config_(config),
      memory_(std::move(memory)),
      machine_(std::move(machine)),
      clock_(clock),
      throttle_(std::move(throttle)),
      vcpus_(std::move(vcpus)),
      meter_(
          config.vcpus,
          [this](uint64_t* ops) {
            for (size_t i = 0; i < vcpus_.size(); ++i) ops[i] = vcpus_[i]->ops();
          },
          kOpsSampleInterval, kOpsSamples, clock) {
  absl::MutexLock lock(&mu_);
  states_.assign(config.vcpus, VcpuRunState::kPaused);
  errors_.assign(config.vcpus, absl::OkStatus());
  history_ = config.history;
}

FaultModeChoice ChooseFaultMode(VmBackend backend, bool exit_on_missing, FaultMode requested) {
  if (requested == FaultMode::kBlocking) return {FaultMode::kBlocking, "as asked"};
  if (backend == VmBackend::kSoft)
    return {FaultMode::kExit, "as asked: software vCPUs exit on missing pages (SIGBUS)"};
  if (exit_on_missing)
    return {FaultMode::kExit,
            "as asked: this kernel's memslots exit on missing pages (KVM userfault)"};
  return {FaultMode::kBlocking,
          "exit mode unavailable on this kernel: no exit-on-missing memslots (KVM vCPUs "
          "fault through userfaultfd inside KVM_RUN), so blocking mode"};
}

FaultModeChoice Vm::ChooseFaultMode(FaultMode requested) const {
  return vmm::ChooseFaultMode(config_.backend,
                              machine_ != nullptr && machine_->caps().exit_on_missing, requested);
}

std::string Vm::BackendCapabilities() const {
  return machine_ ? machine_->caps().ToString() : "";
}

absl::Status Vm::PreFault(uint64_t gpa, uint64_t size) {
  if (!machine_) return absl::OkStatus();
  return machine_->PreFault(gpa, size);
}

std::string Vm::DemandPagingPaths() const {
  std::string out = absl::StrCat(VmBackendName(config_.backend), " vCPUs, ",
                                 FaultModeName(fault_mode_choice_.mode), " faults");
  if (fault_mode_choice_.mode == FaultMode::kBlocking)
    absl::StrAppend(&out, " (", handler_threads_,
                    handler_threads_ == 1 ? " handler thread" : " handler threads", ", batched)");
  else if (machine_)
    absl::StrAppend(&out, " (memslot userfault bitmap; userfaultfd backstop, 1 handler thread)");
  if (machine_)
    absl::StrAppend(&out, machine_->caps().pre_fault_memory
                              ? ", pre-fault with KVM_PRE_FAULT_MEMORY"
                              : ", no pre-fault (KVM_CAP_PRE_FAULT_MEMORY absent)");
  return out;
}

absl::StatusOr<uint64_t> Vm::StageTwoMappedPages() const {
  if (!machine_) return absl::UnimplementedError("software vCPUs have no stage-2 tables");
  return machine_->StageTwoMappedPages();
}

uint64_t Vm::PreFaultedPages() const { return machine_ ? machine_->pre_fault_stats().pages : 0; }

Vm::~Vm() {
  Stop();
  // The memslots must not point at the pager's exit bitmap once it is gone.
  if (machine_) (void)machine_->DisableExitOnMissing();
}

std::string Vm::LifecycleLocked() const {
  if (stopping_) return "stopped";
  if (!started_) return "created";
  return paused_ ? "paused" : "running";
}

absl::Status Vm::LoadInitialMemory() {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || pager_ != nullptr)
      return absl::FailedPreconditionError(
          absl::StrFormat("cannot load initial memory into a VM that is %s%s", LifecycleLocked(),
                          pager_ ? " and demand paged" : ""));
  }
  {
    absl::MutexLock lock(&mu_);
    if (!history_.empty())
      return absl::FailedPreconditionError(
          "cannot load initial memory after the memory map changed");
  }
  FillInitialPages(config_.workload, memory_->host(), memory_->page_size(), 0,
                   memory_->num_pages());
  return absl::OkStatus();
}

absl::Status Vm::EnableDemandPaging(std::shared_ptr<PageSource> source,
                                    DemandPagerOptions options) {
  absl::MutexLock lock(&mu_);
  if (started_ || pager_ != nullptr)
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot enable demand paging on a VM that is %s%s", LifecycleLocked(),
                        pager_ ? " and already demand paged" : ""));
  fault_mode_choice_ = ChooseFaultMode(options.mode);
  options.mode = fault_mode_choice_.mode;
  // KVM in exit mode: vCPUs exit through the memslots' userfault bitmap;
  // one handler thread serves the userfaultfd backstop (KVM's own accesses).
  options.exit_bitmap = machine_ != nullptr && options.mode == FaultMode::kExit;
  if (options.exit_bitmap) options.handler_threads = 1;
  if (options.handler_threads <= 0) options.handler_threads = std::max(1, config_.vcpus / 2);
  options.vcpus = config_.vcpus;
  handler_threads_ = options.handler_threads;
  ASSIGN_OR_RETURN(std::unique_ptr<DemandPager> pager,
                   DemandPager::Create(memory_.get(), source.get(), options));
  if (options.exit_bitmap) RETURN_IF_ERROR(machine_->EnableExitOnMissing(pager->exit_bitmap()));
  pager_ = std::move(pager);
  source_ = std::move(source);
  return absl::OkStatus();
}

absl::Status Vm::FinishDemandPaging() {
  if (pager_ == nullptr) return absl::FailedPreconditionError("the VM is not demand paged");
  if (uint64_t missing = pager_->missing_pages(); missing != 0)
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot leave userfault mode: %d pages are still missing", missing));
  // KVM first: with the flag off, KVM stops reading the bitmap, and a
  // known-zero hole a vCPU touches now is still resolved by the backstop.
  if (machine_) RETURN_IF_ERROR(machine_->DisableExitOnMissing());
  RETURN_IF_ERROR(pager_->Finish());
  absl::MutexLock lock(&mu_);
  demand_paging_done_ = true;
  return absl::OkStatus();
}

absl::Status Vm::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_)
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot start a VM that is %s", LifecycleLocked()));
  started_ = true;
  for (VcpuRunState& s : states_)
    if (s == VcpuRunState::kPaused) s = VcpuRunState::kRunning;
  for (int i = 0; i < config_.vcpus; ++i) threads_.emplace_back(&Vm::VcpuThread, this, i);
  meter_.Start();
  return absl::OkStatus();
}

bool Vm::AnyRunningLocked() const {
  return std::any_of(states_.begin(), states_.end(),
                     [](VcpuRunState s) { return s == VcpuRunState::kRunning; });
}

absl::Status Vm::Pause() {
  absl::MutexLock lock(&mu_);
  if (!started_ || stopping_ || paused_)
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot pause a VM that is %s", LifecycleLocked()));
  paused_ = true;
  for (auto& v : vcpus_) v->RequestExit();
  while (AnyRunningLocked()) cv_.Wait(&mu_);
  return absl::OkStatus();
}

void Vm::Fail(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  if (failure_.ok()) failure_ = why.ok() ? absl::InternalError("failed") : why;
  if (!started_ || stopping_) return;
  paused_ = true;
  // Marked failed first, then kicked: a vCPU in guest code leaves it at its
  // next exit and, failed, never re-enters; one asleep on a page that will
  // not come (blocking mode) sleeps until the VM is torn down. No wait here,
  // for that reason.
  for (size_t i = 0; i < states_.size(); ++i) {
    if (states_[i] == VcpuRunState::kFinished || states_[i] == VcpuRunState::kFailed) continue;
    states_[i] = VcpuRunState::kFailed;
    errors_[i] = why;
  }
  for (auto& v : vcpus_) v->RequestExit();
  cv_.SignalAll();
}

bool Vm::paused() const {
  absl::MutexLock lock(&mu_);
  return started_ && !stopping_ && paused_;
}

absl::Status Vm::Resume() {
  absl::MutexLock lock(&mu_);
  if (!failure_.ok())
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume a VM that failed: ", failure_.message()));
  if (!started_ || stopping_ || !paused_)
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot resume a VM that is %s", LifecycleLocked()));
  paused_ = false;
  for (int i = 0; i < config_.vcpus; ++i) {
    vcpus_[i]->ClearExitRequest();
    if (states_[i] == VcpuRunState::kPaused) states_[i] = VcpuRunState::kRunning;
  }
  cv_.SignalAll();
  return absl::OkStatus();
}

void Vm::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& v : vcpus_) v->RequestExit();
    cv_.SignalAll();
  }
  // Wakes a vCPU asleep on a missing page (blocking mode) so it can leave.
  if (pager_) pager_->Stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  meter_.Stop();
}

// Exits in a row for one page after which a vCPU is failed (Vm::VcpuThread).
constexpr int kMaxFaultRepeats = 8;

void Vm::VcpuThread(int index) {
  Vcpu* vcpu = vcpus_[index].get();
  if (pager_ != nullptr) {
    pager_->PrepareThread();
    pager_->RegisterVcpuThread(index);
  }
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      while (states_[index] != VcpuRunState::kRunning && !stopping_) cv_.Wait(&mu_);
      if (stopping_) return;
    }
    // Run, resolving memory faults on this thread and re-entering, until an
    // exit that changes the vCPU's run state. The fault path takes no lock.
    absl::StatusOr<VcpuExit> exit;
    absl::Status error;
    uint64_t last_gpa = ~0ull;  // the previous exit's page, to catch a loop
    int repeats = 0;
    while (true) {
      exit = vcpu->Run();
      error = exit.status();
      if (!error.ok() || exit->reason != VcpuExitReason::kMemoryFault) break;
      // An exit for a page that is present again and again means the
      // kernel's view and ours disagree (a bit we cannot clear): fail
      // instead of spinning. One repeat is normal (an install raced the exit).
      repeats = exit->fault.gpa == last_gpa ? repeats + 1 : 0;
      last_gpa = exit->fault.gpa;
      if (repeats >= kMaxFaultRepeats) {
        error = absl::InternalError(absl::StrFormat(
            "vcpu %d: %d exits in a row for gpa %#x, which is present: the vCPU would loop", index,
            repeats + 1, exit->fault.gpa));
        break;
      }
      if (pager_ == nullptr) {
        error = absl::InternalError(
            absl::StrFormat("vcpu %d: memory fault at gpa %#x but the VM has no demand pager",
                            index, exit->fault.gpa));
        break;
      }
      exit->fault.vcpu = index;
      error = pager_->ResolveFault(exit->fault);
      if (!error.ok()) {
        error =
            absl::Status(error.code(), absl::StrFormat("vcpu %d: resolving the fault at gpa "
                                                       "%#x: %s",
                                                       index, exit->fault.gpa, error.message()));
        break;
      }
    }
    absl::MutexLock lock(&mu_);
    if (states_[index] == VcpuRunState::kFailed) {
      // Failed by Fail() while it ran: it stays failed, whatever it did.
    } else if (!error.ok()) {
      states_[index] = VcpuRunState::kFailed;
      errors_[index] = error;
    } else if (exit->reason == VcpuExitReason::kHalted) {
      states_[index] = VcpuRunState::kFinished;
    } else if (states_[index] == VcpuRunState::kRunning) {
      states_[index] = VcpuRunState::kPaused;  // kPaused: an exit was requested
    }
    cv_.SignalAll();
  }
}

absl::Status Vm::WaitUntilHalted(absl::Duration timeout) {
  if (config_.workload.ops_per_vcpu == 0)
    return absl::FailedPreconditionError(
        "the workload runs until stopped (ops_per_vcpu is 0): it never halts");
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  auto halted = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::all_of(states_.begin(), states_.end(), [](VcpuRunState s) {
      return s == VcpuRunState::kFinished || s == VcpuRunState::kFailed;
    });
  };
  while (!halted()) {
    if (cv_.WaitWithDeadline(&mu_, deadline) && !halted())
      return absl::DeadlineExceededError(
          absl::StrFormat("the workload did not halt within %s", absl::FormatDuration(timeout)));
  }
  if (!failure_.ok()) return failure_;
  for (const absl::Status& e : errors_)
    if (!e.ok()) return e;
  return absl::OkStatus();
}

absl::Status Vm::Health() const {
  absl::MutexLock lock(&mu_);
  if (!failure_.ok()) return failure_;
  for (size_t i = 0; i < states_.size(); ++i)
    if (states_[i] == VcpuRunState::kFailed)
      return errors_[i].ok() ? absl::InternalError(absl::StrFormat("vcpu %d failed", i))
                             : errors_[i];
  return absl::OkStatus();
}

std::vector<VcpuRunState> Vm::States() const {
  absl::MutexLock lock(&mu_);
  return states_;
}

VmStats Vm::Stats() const {
  VmStats stats;
  std::vector<VcpuRunState> states = States();
  for (int i = 0; i < config_.vcpus; ++i) {
    VcpuStats s;
    s.state = states[i];
    s.counters = vcpus_[i]->Counters();
    stats.total_ops += s.counters.ops;
    stats.vcpus.push_back(std::move(s));
  }
  return stats;
}

namespace {

// A dirty log that holds the memory map still while it lives: it counts
// pages by RAM offset.
class PinnedDirtyLog final : public DirtyLog {
 public:
  PinnedDirtyLog(std::unique_ptr<DirtyLog> log, MemoryMapPin pin)
      : log_(std::move(log)), pin_(std::move(pin)) {}
  absl::Status Collect(std::vector<uint64_t>* pages) override { return log_->Collect(pages); }
  absl::Status CollectFinal(std::vector<uint64_t>* pages) override {
    return log_->CollectFinal(pages);
  }
  const char* Name() const override { return log_->Name(); }

 private:
  std::unique_ptr<DirtyLog> log_;
  MemoryMapPin pin_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DirtyLog>> Vm::StartDirtyLog() {
  MemoryMapPin pin = PinMemoryMap("its dirty pages are tracked (a migration or a live snapshot)");
  std::unique_ptr<DirtyLog> log;
  if (machine_) {
    // KVM writes guest memory through its own stage-2 mappings, which
    // userfaultfd write-protect does not see: KVM's own dirty log.
    ASSIGN_OR_RETURN(log, machine_->StartDirtyLog());
  } else {
    // Software vCPUs write guest memory through the host mapping, so
    // userfaultfd write-protect sees every write.
    ASSIGN_OR_RETURN(std::unique_ptr<UffdDirtyLog> uffd, UffdDirtyLog::Start(memory_.get()));
    log = std::move(uffd);
  }
  return std::unique_ptr<DirtyLog>(new PinnedDirtyLog(std::move(log), std::move(pin)));
}

MemoryMapPin& MemoryMapPin::operator=(MemoryMapPin&& other) noexcept {
  if (this != &other) {
    Release();
    holders_ = std::move(other.holders_);
    id_ = other.id_;
  }
  return *this;
}

void MemoryMapPin::Release() {
  if (holders_ == nullptr) return;
  absl::MutexLock lock(&holders_->mu);
  auto& why = holders_->why;
  for (auto it = why.begin(); it != why.end(); ++it)
    if (it->first == id_) {
      why.erase(it);
      break;
    }
  holders_.reset();
}

MemoryMapPin Vm::PinMemoryMap(std::string why) const {
  absl::MutexLock lock(&pins_->mu);  // waits out a change in progress
  const uint64_t id = pins_->next_id++;
  pins_->why.emplace_back(id, std::move(why));
  return MemoryMapPin(pins_, id);
}

MemoryLimits Vm::memory_limits() const {
  MemoryLimits l;
  l.max_bytes = memory_->max_bytes();
  l.min_bytes = static_cast<uint64_t>(config_.vcpus) * config_.page_size;
  l.alignment = machine_ ? (2ull << 20) : config_.page_size;
  return l;
}

std::vector<MemoryEpoch> Vm::MemoryHistory() const {
  absl::MutexLock lock(&mu_);
  return history_;
}

absl::Status Vm::NoFailedVcpuLocked() const {
  for (size_t i = 0; i < states_.size(); ++i)
    if (states_[i] == VcpuRunState::kFailed)
      return absl::FailedPreconditionError(absl::StrFormat(
          "cannot change the memory of a VM whose vcpu %d failed: %s", i, errors_[i].message()));
  return absl::OkStatus();
}

absl::StatusOr<MemoryChangeResult> Vm::ChangeMemory(const MemoryTransaction& t) {
  // Held for the whole change, so that no pin is taken meanwhile.
  absl::MutexLock pins(&pins_->mu);
  if (!pins_->why.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("the memory map cannot change while ", pins_->why.front().second));
  absl::MutexLock lock(&mu_);
  if (stopping_ || !failure_.ok())
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot change the memory of a VM that is %s", LifecycleLocked()));
  RETURN_IF_ERROR(NoFailedVcpuLocked());
  if (pager_ != nullptr && !demand_paging_done_)
    return absl::FailedPreconditionError(
        "the memory map cannot change while pages are demand paged (a migration or a lazy "
        "restore is still filling memory)");
  ASSIGN_OR_RETURN(MemoryMap next, PlanMemoryTransaction(memory_->map(), t, memory_limits()));
  const int64_t start_ns = clock_->NowNanos();
  // Hold every running vCPU off guest code, at an op boundary.
  const bool hold = started_ && !paused_ && AnyRunningLocked();
  if (hold) {
    for (auto& v : vcpus_) v->RequestExit();
    while (AnyRunningLocked()) cv_.Wait(&mu_);
  }
  // Let them go on, unless a Pause() came in while they were held.
  auto release = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!hold || paused_ || stopping_) return;
    for (size_t i = 0; i < vcpus_.size(); ++i) {
      vcpus_[i]->ClearExitRequest();
      if (states_[i] == VcpuRunState::kPaused) states_[i] = VcpuRunState::kRunning;
    }
    cv_.SignalAll();
  };
  // A vCPU that failed (or a Fail()) while they were being held: unchanged.
  if (absl::Status ok = NoFailedVcpuLocked(); !ok.ok() || stopping_ || !failure_.ok()) {
    release();
    return ok.ok() ? absl::FailedPreconditionError(absl::StrFormat(
                         "cannot change the memory of a VM that is %s", LifecycleLocked()))
                   : ok;
  }
  std::vector<uint64_t> ops(vcpus_.size());
  for (size_t i = 0; i < vcpus_.size(); ++i) ops[i] = vcpus_[i]->ops();
  const MemoryMap& before = memory_->map();  // stays alive (GuestMemory keeps every map)
  const int64_t apply_start_ns = clock_->NowNanos();
  absl::Status applied = memory_->ApplyMap(next);
  const bool changed = memory_->map().SameLayout(next);
  absl::Status vcpus_ok;
  MemoryChangeResult r;
  if (changed) {
    if (machine_) {
      absl::StatusOr<kvm::KvmMachine::SlotChange> slots = machine_->ApplyMemoryMap(before);
      if (slots.ok()) {
        r.slots_kept = slots->kept;
        r.slots_resized = slots->resized;
        r.slots_recreated = slots->recreated;
        r.slots_created = slots->created;
        r.slots_deleted = slots->deleted;
        r.stage2_bytes_dropped = slots->bytes_dropped;
      }
      vcpus_ok.Update(slots.status());
    }
    for (auto& v : vcpus_) vcpus_ok.Update(v->OnMemoryMapChanged());
    history_.push_back({t, next.regions(), ops});
  }
  r.apply_ns = clock_->NowNanos() - apply_start_ns;
  if (!vcpus_ok.ok()) {
    // The memory moved but the vCPUs cannot follow: the VM cannot run on.
    const absl::Status why = absl::InternalError(absl::StrCat(
        "the memory map changed but the vCPUs could not follow: ", vcpus_ok.message()));
    if (failure_.ok()) failure_ = why;
    for (size_t i = 0; i < states_.size(); ++i) {
      if (states_[i] == VcpuRunState::kFinished) continue;
      states_[i] = VcpuRunState::kFailed;
      errors_[i] = why;
    }
    cv_.SignalAll();
    return why;
  }
  release();
  if (!applied.ok())
    return absl::Status(applied.code(), absl::StrCat(changed ? "the memory map changed, but " : "",
                                                     "applying it: ", applied.message()));
  r.regions = next.regions();
  r.memory_bytes = next.memory_bytes();
  r.held_off_ns = hold ? clock_->NowNanos() - start_ns : 0;
  return r;
}

absl::StatusOr<std::vector<std::string>> Vm::SaveVcpuStates() const {
  absl::MutexLock lock(&mu_);
  if (AnyRunningLocked())
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot save vCPU state of a VM that is %s: pause it first", LifecycleLocked()));
  std::vector<std::string> out;
  for (const auto& v : vcpus_) {
    ASSIGN_OR_RETURN(std::string state, v->SaveState());
    out.push_back(std::move(state));
  }
  return out;
}

absl::Status Vm::RestoreVcpuStates(const std::vector<std::string>& states) {
  absl::MutexLock lock(&mu_);
  if (AnyRunningLocked())
    return absl::FailedPreconditionError(
        absl::StrFormat("cannot restore vCPU state into a VM that is %s", LifecycleLocked()));
  if (states.size() != vcpus_.size())
    return absl::InvalidArgumentError(
        absl::StrFormat("%d vCPU states for a VM with %d vCPUs", states.size(), vcpus_.size()));
  for (size_t i = 0; i < states.size(); ++i) RETURN_IF_ERROR(vcpus_[i]->RestoreState(states[i]));
  return absl::OkStatus();
}

absl::StatusOr<MemoryDigest> Vm::Digest() const {
  MemoryMapPin pin = PinMemoryMap("its memory is digested");
  if (pager_ != nullptr && pager_->missing_pages() > 0)
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot digest memory while %d pages are missing", pager_->missing_pages()));
  return DigestMemory(*memory_);
}

absl::StatusOr<MemoryDigest> ReferenceDigest(const VmConfig& config) {
  return ReferenceDigest(config, std::vector<uint64_t>(config.vcpus, config.workload.ops_per_vcpu));
}

absl::StatusOr<MemoryDigest> ReferenceDigest(const VmConfig& config,
                                             const std::vector<uint64_t>& ops,
                                             int64_t deadline_ns) {
  return ReferenceDigest(config, ops, {}, deadline_ns);
}

absl::StatusOr<MemoryDigest> ReferenceDigest(const VmConfig& config,
                                             const std::vector<uint64_t>& ops,
                                             const std::vector<MemoryEpoch>& history,
                                             int64_t deadline_ns) {
  RETURN_IF_ERROR(ValidateVmConfig(config));
  if (ops.size() != static_cast<size_t>(config.vcpus))
    return absl::InvalidArgumentError("one op count per vCPU is needed");
  ASSIGN_OR_RETURN(MemoryMap map, MemoryMap::ForSize(config.memory_bytes, config.page_size));
  ASSIGN_OR_RETURN(std::unique_ptr<GuestMemory> memory,
                   GuestMemory::Create(map, MaxMemoryBytes(config)));
  FillInitialPages(config.workload, memory->host(), memory->page_size(), 0, memory->num_pages());
  std::vector<uint64_t> done(ops.size(), 0), acc(ops.size(), 0);
  for (size_t e = 0; e < history.size(); ++e) {
    const MemoryEpoch& epoch = history[e];
    if (epoch.ops_before.size() != ops.size())
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory epoch %d has %d op counts for %d vCPUs", e, epoch.ops_before.size(), ops.size()));
    for (size_t v = 0; v < ops.size(); ++v)
      if (epoch.ops_before[v] < done[v] || epoch.ops_before[v] > ops[v])
        return absl::InvalidArgumentError(
            absl::StrFormat("memory epoch %d: vCPU %d's op count %d is not in [%d, %d]", e, v,
                            epoch.ops_before[v], done[v], ops[v]));
    RETURN_IF_ERROR(RunReferenceSpan(config.workload, memory->host(), memory->num_pages(),
                                     memory->page_size(), done, epoch.ops_before, &acc,
                                     deadline_ns));
    done = epoch.ops_before;
    ASSIGN_OR_RETURN(MemoryMap next, MemoryMap::FromRegions(epoch.regions, config.page_size));
    RETURN_IF_ERROR(memory->ApplyMap(next));
  }
  RETURN_IF_ERROR(RunReferenceSpan(config.workload, memory->host(), memory->num_pages(),
                                   memory->page_size(), done, ops, &acc, deadline_ns));
  return DigestMemory(*memory);
}

}  // namespace ferry::vmm
