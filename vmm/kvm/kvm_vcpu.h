// KvmVcpu: a real KVM vCPU behind the Vcpu interface. It runs the guest
// image (vmm/guest/guest_main.cc) in 64-bit long mode on the calling thread.
//
// Exits (docs/kvm.md has the table): port I/O from the guest (progress,
// pace, paused at an op boundary, done), HLT (the workload finished:
// kHalted), KVM_EXIT_MEMORY_FAULT (kMemoryFault, resolved by the run loop on
// this thread; only on kernels with exit-on-missing memslots), and errors
// that fail the vCPU with a message naming them: MMIO outside RAM,
// SHUTDOWN (triple fault), FAIL_ENTRY, INTERNAL_ERROR, an unknown port.
//
// Pause: RequestExit() asks the guest to stop at its next op boundary (a
// flag in its status page) and kicks KVM_RUN with immediate_exit and a
// signal; Run() returns kPaused once the guest is between ops, with any
// pending port I/O completed, so SaveState() sees consistent state and the
// committed op count is exact.
//
// Throttle (vmm/throttle.h): the thread is out of KVM_RUN at each port
// exit; at the pace exit (before every op of a paced guest) and the
// progress exit (every 4096 ops) it checks its duty cycle and sleeps the
// off part of the period when due, the guest between ops; the pace
// restarts after the sleep. An unpaced guest's run part can thus overrun
// by up to 4096 ops.
//
// State: registers, special registers, XSAVE, XCRs, the MSRs the guest can
// use (IA32_TSC included), the MP state, and the vCPU's firmware area
// (boot page, status page, stack), as a ferry.v1.KvmVcpuState.
//
// Threads: see vcpu.h. Counters() reads the status page from any thread.
#ifndef FERRY_VMM_KVM_KVM_VCPU_H_
#define FERRY_VMM_KVM_KVM_VCPU_H_

#include <pthread.h>

#include <atomic>
#include <string>

#include "base/clock.h"
#include "sys/kvm.h"
#include "vmm/guest/boot.h"
#include "vmm/op_pacer.h"
#include "vmm/throttle.h"
#include "vmm/vcpu.h"

namespace ferry::vmm::kvm {

class KvmMachine;

class KvmVcpu final : public Vcpu {
 public:
  // `machine`, `clock` and `throttle` (may be null: never throttled) must
  // outlive the vCPU; `fd` is in its initial state.
  KvmVcpu(int index, KvmMachine* machine, sys::KvmVcpuFd fd, const Clock* clock,
          const Throttle* throttle = nullptr);

  int index() const override { return index_; }
  absl::StatusOr<VcpuExit> Run() override;
  void RequestExit() override;
  void ClearExitRequest() override;
  absl::StatusOr<std::string> SaveState() const override;
  absl::Status RestoreState(absl::string_view bytes) override;
  // Nothing to do here: KvmMachine::ApplyMemoryMap rewrote this vCPU's boot
  // page and the page tables, and the guest reloads them at its next op.
  absl::Status OnMemoryMapChanged() override { return absl::OkStatus(); }
  VcpuCounters Counters() const override;
  uint64_t ops() const override;

 private:
  guest::VcpuStatus* status() const;
  // Re-enters KVM_RUN with immediate_exit so that the port I/O just
  // reported is complete (the guest's RIP past it) before returning.
  absl::Status CompletePendingIo();
  absl::Status ExitError(const char* what) const;
  // The duty-cycle check at an exit between ops: false if a pause came
  // during the sleep. The pace restarts after a sleep.
  bool ThrottleWait();

  const int index_;
  KvmMachine* const machine_;
  mutable sys::KvmVcpuFd fd_;  // ioctls while paused are logically const
  const Clock* const clock_;
  OpPacer pacer_;
  DutyCycle duty_;
  std::atomic<int64_t> throttled_ns_{0};
  std::atomic<bool> exit_requested_{false};
  std::atomic<bool> in_run_{false};
  std::atomic<pthread_t> thread_{};
  std::atomic<uint64_t> fault_exits_{0};
};

}  // namespace ferry::vmm::kvm

#endif  // FERRY_VMM_KVM_KVM_VCPU_H_
