// Vcpu: one virtual CPU, as the VMM's run loop sees it. Software vCPUs
// (soft_vcpu.h) and KVM vCPUs sit behind this interface; the run loop and the
// migration code cannot tell them apart.
//
// Threads: Run(), SaveState() and RestoreState() are called only from the
// thread that owns the vCPU (or while no thread runs it). RequestExit() and
// ClearExitRequest() may be called from any thread.
//
// Run loop:
//   while (true) {
//     ASSIGN_OR_RETURN(VcpuExit exit, vcpu->Run());
//     if (exit.reason == VcpuExitReason::kMemoryFault) Resolve(exit.fault);
//     else ...
//   }
#ifndef FERRY_VMM_VCPU_H_
#define FERRY_VMM_VCPU_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/histogram.h"

namespace ferry::vmm {

// Flags of a memory-fault exit (our own; KVM's exit carries no read/write).
enum MemoryFaultFlags : uint32_t {
  kFaultRead = 1u << 0,
  kFaultWrite = 1u << 1,
};

// An access to a page that is not present. `gpa` is page aligned and `size`
// is the page size (as KVM_EXIT_MEMORY_FAULT reports them). The access has
// had no effect: after the page is installed, Run() retries it.
struct MemoryFault {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint32_t flags = 0;
  int64_t time_ns = 0;  // CLOCK_MONOTONIC when the fault was taken
  int vcpu = -1;        // the vCPU that waits on it; -1 when not known
};

enum class VcpuExitReason {
  kMemoryFault,  // resolve `fault`, then call Run() again
  kHalted,       // the guest workload finished
  kPaused,       // RequestExit() was honoured; no guest code is running
};

struct VcpuExit {
  VcpuExitReason reason = VcpuExitReason::kPaused;
  MemoryFault fault;
};

const char* VcpuExitReasonName(VcpuExitReason reason);

struct VcpuCounters {
  uint64_t ops = 0;              // guest operations completed
  uint64_t fault_exits = 0;      // memory-fault exits returned by Run()
  int64_t throttled_ns = 0;      // slept for the VM's throttle (vmm/throttle.h)
  HistogramSnapshot op_latency;  // only when op latency recording is on
};

class Vcpu {
 public:
  virtual ~Vcpu() = default;

  virtual int index() const = 0;

  // Runs guest code on the calling thread until an exit. Errors are the
  // environment's (a failed KVM_RUN); guest faults are exits, not errors.
  virtual absl::StatusOr<VcpuExit> Run() = 0;

  // Makes a running Run() return kPaused at its next instruction boundary,
  // and every later Run() return kPaused at once, until ClearExitRequest().
  virtual void RequestExit() = 0;
  virtual void ClearExitRequest() = 0;

  // The architectural state as bytes, and back. RestoreState rejects bytes
  // of another vCPU kind, index or version with InvalidArgument.
  // SaveState fails only on an environment error (a KVM ioctl).
  virtual absl::StatusOr<std::string> SaveState() const = 0;
  virtual absl::Status RestoreState(absl::string_view bytes) = 0;

  // The VM's memory map changed (Vm::ChangeMemory): the guest's workload
  // now runs over the new map from its next op. Called only while this
  // vCPU is out of Run() and will not enter it before the call returns.
  virtual absl::Status OnMemoryMapChanged() = 0;

  virtual VcpuCounters Counters() const = 0;
  // Guest operations completed so far (Counters().ops, without the rest):
  // cheap enough to read every millisecond from any thread.
  virtual uint64_t ops() const = 0;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_VCPU_H_
