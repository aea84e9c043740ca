// SoftVcpu: a software vCPU. It runs a guest workload (workload.h) natively
// on the guest memory, on the calling thread.
//
// Exit mode: when the memory is registered MISSING with UFFD_FEATURE_SIGBUS,
// an access to a missing page raises SIGBUS on this thread; the fault trap
// (fault_trap.h) turns it into a kMemoryFault exit. The op that faulted had
// no effect (workload op contract) and is executed again on the next Run().
// In blocking mode the same access sleeps in the kernel until a handler
// thread installs the page, and Run() never sees it.
//
// Pacing (idle, dirty-rate): between ops Run() waits for the op's slot,
// sleeping at most 200 us at a time so a RequestExit() is honoured quickly.
// After a pause the pace restarts from the resume, without a burst.
//
// Throttle (vmm/throttle.h): before each op the vCPU checks its duty
// cycle and sleeps the off part of the period when it is due; the pace
// then restarts after the sleep (no burst to catch up, or the throttle
// would slow a paced guest down not at all).
//
// Threads: see vcpu.h. Counters() is safe from any thread.
#ifndef FERRY_VMM_SOFT_VCPU_H_
#define FERRY_VMM_SOFT_VCPU_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "base/clock.h"
#include "base/histogram.h"
#include "vmm/fault_trap.h"
#include "vmm/guest_memory.h"
#include "vmm/op_pacer.h"
#include "vmm/throttle.h"
#include "vmm/vcpu.h"
#include "vmm/workload.h"

namespace ferry::vmm {

struct SoftVcpuOptions {
  // Record each guest op's latency, from its first attempt to its completion
  // (so including any fault it took). For the demand-paging benchmark.
  bool record_op_latency = false;
};

class SoftVcpu final : public Vcpu {
 public:
  // `memory`, `clock` and `throttle` (the VM's; may be null: never
  // throttled) must outlive the vCPU.
  SoftVcpu(int index, int vcpus, GuestMemory* memory, const WorkloadSpec& spec, const Clock* clock,
           SoftVcpuOptions options, const Throttle* throttle = nullptr);

  int index() const override { return index_; }
  absl::StatusOr<VcpuExit> Run() override;
  void RequestExit() override;
  void ClearExitRequest() override;
  absl::StatusOr<std::string> SaveState() const override;
  absl::Status RestoreState(absl::string_view bytes) override;
  absl::Status OnMemoryMapChanged() override;
  VcpuCounters Counters() const override;
  uint64_t ops() const override { return ops_done_.load(std::memory_order_relaxed); }

  uint64_t ops_done() const { return ops_done_.load(std::memory_order_relaxed); }

 private:
  const int index_;
  const int vcpus_;
  GuestMemory* const memory_;
  const WorkloadSpec spec_;
  GuestProgram program_;  // rebuilt by OnMemoryMapChanged, between runs
  const Clock* const clock_;
  const SoftVcpuOptions options_;

  FaultTrapContext trap_;
  std::atomic<bool> exit_requested_{false};
  // Committed after each op (see Run): the op count and the accumulator.
  std::atomic<uint64_t> ops_done_{0};
  std::atomic<uint64_t> acc_{0};
  OpPacer pacer_;
  DutyCycle duty_;
  std::atomic<int64_t> throttled_ns_{0};
  uint64_t op_started_index_ = ~0ull;  // op latency: first attempt of an op
  int64_t op_started_ns_ = 0;
  std::atomic<uint64_t> fault_exits_{0};
  LatencyHistogram op_latency_;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_SOFT_VCPU_H_
