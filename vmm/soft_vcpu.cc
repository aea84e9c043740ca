#include "vmm/soft_vcpu.h"

#include <algorithm>
#include <csetjmp>
#include <cstring>

#include "absl/base/config.h"
#include "absl/strings/str_format.h"

namespace ferry::vmm {
namespace {

constexpr char kStateMagic[4] = {'F', 'S', 'V', 'C'};
constexpr uint32_t kStateVersion = 1;

// The saved state: fixed little-endian layout (x86-64 only).
struct SavedState {
  char magic[4];
  uint32_t version;
  uint32_t index;
  uint32_t kind;
  uint64_t seed;
  uint64_t ops_done;
  uint64_t acc;
};
static_assert(sizeof(SavedState) == 40);

// sigsetjmp's savemask. The fault trap's handler runs with SA_NODEFER, so
// jumping out of it leaves SIGBUS unblocked without saving the mask
// (fault_trap.h). ThreadSanitizer runs every handler with all signals
// blocked, whatever SA_NODEFER says: jumping out would leave SIGBUS blocked
// and the next guest fault would kill the process. Under TSan the mask is
// saved and restored (one sigprocmask per fault exit).
#ifdef ABSL_HAVE_THREAD_SANITIZER
constexpr int kSaveSignalMask = 1;
#else
constexpr int kSaveSignalMask = 0;
#endif

}  // namespace

const char* VcpuExitReasonName(VcpuExitReason reason) {
  switch (reason) {
    case VcpuExitReason::kMemoryFault:
      return "memory-fault";
    case VcpuExitReason::kHalted:
      return "halted";
    case VcpuExitReason::kPaused:
      return "paused";
  }
  return "unknown";
}

SoftVcpu::SoftVcpu(int index, int vcpus, GuestMemory* memory, const WorkloadSpec& spec,
                   const Clock* clock, SoftVcpuOptions options, const Throttle* throttle)
    : index_(index),
      vcpus_(vcpus),
      memory_(memory),
      spec_(spec),
      program_(spec, memory->host(), memory->num_pages(), memory->page_size(), index, vcpus),
      clock_(clock),
      options_(options),
      pacer_(OpIntervalNanos(spec, memory->page_size()), clock),
      duty_(throttle, clock) {
  trap_.lo = reinterpret_cast<uintptr_t>(memory->host());
  trap_.hi = trap_.lo + memory->size();
}

absl::Status SoftVcpu::OnMemoryMapChanged() {
  program_ = GuestProgram(spec_, memory_->host(), memory_->num_pages(), memory_->page_size(),
                          index_, vcpus_);
  trap_.hi = trap_.lo + memory_->size();
  return absl::OkStatus();
}

void SoftVcpu::RequestExit() { exit_requested_.store(true); }

void SoftVcpu::ClearExitRequest() { exit_requested_.store(false); }

absl::StatusOr<VcpuExit> SoftVcpu::Run() {
  SetThreadFaultTrap(&trap_);
  if (sigsetjmp(trap_.env, kSaveSignalMask) != 0) {
    // A guest access hit a missing page (the handler disarmed the trap). The
    // op in progress stored nothing and committed nothing: it runs again
    // from its start on the next Run().
    fault_exits_.fetch_add(1, std::memory_order_relaxed);
    const uint32_t ps = memory_->page_size();
    uint64_t offset = (trap_.fault_addr - trap_.lo) & ~uint64_t{ps - 1};
    VcpuExit exit;
    exit.reason = VcpuExitReason::kMemoryFault;
    exit.fault.gpa = memory_->map().OffsetToGpa(offset);
    exit.fault.size = ps;
    exit.fault.flags = trap_.write ? kFaultWrite : kFaultRead;
    exit.fault.time_ns = trap_.fault_ns;
    return exit;
  }
  const uint64_t limit = spec_.ops_per_vcpu;
  while (true) {
    if (exit_requested_.load(std::memory_order_relaxed)) {
      pacer_.Reset();
      duty_.Reset();
      return VcpuExit{VcpuExitReason::kPaused, {}};
    }
    const uint64_t i = ops_done_.load(std::memory_order_relaxed);
    if (limit != 0 && i >= limit) return VcpuExit{VcpuExitReason::kHalted, {}};
    const int64_t slept = duty_.slept_ns();
    if (!duty_.Wait(exit_requested_)) {
      throttled_ns_.store(duty_.slept_ns(), std::memory_order_relaxed);
      pacer_.Reset();
      return VcpuExit{VcpuExitReason::kPaused, {}};
    }
    if (duty_.slept_ns() != slept) {  // the pace restarts after the sleep
      throttled_ns_.store(duty_.slept_ns(), std::memory_order_relaxed);
      pacer_.Reset();
    }
    if (!pacer_.Wait(i, exit_requested_)) {  // a retried op does not wait again
      pacer_.Reset();
      return VcpuExit{VcpuExitReason::kPaused, {}};
    }
    if (options_.record_op_latency && i != op_started_index_) {
      op_started_index_ = i;
      op_started_ns_ = MonotonicNowNanos();
    }
    trap_.armed = 1;
    const uint64_t acc = program_.Step(i, acc_.load(std::memory_order_relaxed));
    trap_.armed = 0;
    // The op is complete: commit it. The fence keeps the compiler from
    // moving the commit before the op's accesses (the handler may interrupt
    // any of them).
    std::atomic_signal_fence(std::memory_order_seq_cst);
    acc_.store(acc, std::memory_order_relaxed);
    ops_done_.store(i + 1, std::memory_order_relaxed);
    if (options_.record_op_latency) op_latency_.Record(MonotonicNowNanos() - op_started_ns_);
  }
}

absl::StatusOr<std::string> SoftVcpu::SaveState() const {
  SavedState s{};
  std::memcpy(s.magic, kStateMagic, 4);
  s.version = kStateVersion;
  s.index = static_cast<uint32_t>(index_);
  s.kind = static_cast<uint32_t>(spec_.kind);
  s.seed = spec_.seed;
  s.ops_done = ops_done_.load();
  s.acc = acc_.load();
  return std::string(reinterpret_cast<const char*>(&s), sizeof(s));
}

absl::Status SoftVcpu::RestoreState(absl::string_view bytes) {
  SavedState s;
  if (bytes.size() != sizeof(s))
    return absl::InvalidArgumentError(absl::StrFormat(
        "vcpu %d state: %d bytes, a software vCPU's state is %d", index_, bytes.size(), sizeof(s)));
  std::memcpy(&s, bytes.data(), sizeof(s));
  if (std::memcmp(s.magic, kStateMagic, 4) != 0)
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: not a software vCPU's state", index_));
  if (s.version != kStateVersion)
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: version %d, this build reads version %d", index_, s.version,
                        kStateVersion));
  if (s.index != static_cast<uint32_t>(index_))
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: it belongs to vcpu %d", index_, s.index));
  if (s.kind != static_cast<uint32_t>(spec_.kind) || s.seed != spec_.seed)
    return absl::InvalidArgumentError(absl::StrFormat(
        "vcpu %d state: saved from another workload (kind %d seed %d)", index_, s.kind, s.seed));
  if (spec_.ops_per_vcpu != 0 && s.ops_done > spec_.ops_per_vcpu)
    return absl::InvalidArgumentError(absl::StrFormat(
        "vcpu %d state: %d ops done of a %d-op workload", index_, s.ops_done, spec_.ops_per_vcpu));
  ops_done_.store(s.ops_done);
  acc_.store(s.acc);
  return absl::OkStatus();
}

VcpuCounters SoftVcpu::Counters() const {
  VcpuCounters c;
  c.ops = ops_done_.load(std::memory_order_relaxed);
  c.fault_exits = fault_exits_.load(std::memory_order_relaxed);
  c.throttled_ns = throttled_ns_.load(std::memory_order_relaxed);
  if (options_.record_op_latency) c.op_latency = op_latency_.Snapshot();
  return c;
}

}  // namespace ferry::vmm
