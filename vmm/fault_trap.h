// FaultTrap: turns a userfaultfd SIGBUS on a vCPU thread into a return from
// the vCPU's Run(): the kernel half of exit mode for software vCPUs.
//
// With UFFD_FEATURE_SIGBUS, an access to a missing page of a registered
// range raises SIGBUS on the faulting thread instead of sleeping. The handler
// (installed once per process: a signal disposition is process-wide by
// nature) looks up the calling thread's armed FaultTrapContext. If the
// faulting address lies inside the context's range, it records the address,
// read/write (from the x86 page-fault error code) and the time, disarms, and
// siglongjmps to the context's jump buffer. Any other SIGBUS goes to the
// previous disposition (by default: the process dies, as it should).
//
// Contract for the code between arming and disarming: it only computes and
// accesses guest memory. It holds no lock, allocates nothing and creates no
// object with a destructor, so abandoning it at any access is safe. The
// handler is installed with SA_NODEFER, so jumping out leaves SIGBUS
// unblocked without the cost of saving the signal mask (sigsetjmp(env, 0)).
//
//   FaultTrapContext ctx{.lo = base, .hi = base + len};
//   SetThreadFaultTrap(&ctx);
//   if (sigsetjmp(ctx.env, 0) != 0) { /* ctx.fault_addr faulted */ }
//   ctx.armed = 1; ...guest accesses...; ctx.armed = 0;
#ifndef FERRY_VMM_FAULT_TRAP_H_
#define FERRY_VMM_FAULT_TRAP_H_

#include <csetjmp>
#include <csignal>
#include <cstdint>

#include "absl/status/status.h"

namespace ferry::vmm {

struct FaultTrapContext {
  sigjmp_buf env;
  uintptr_t lo = 0;  // guarded range [lo, hi)
  uintptr_t hi = 0;
  volatile sig_atomic_t armed = 0;
  // Written by the handler before it jumps.
  uintptr_t fault_addr = 0;
  bool write = false;
  int64_t fault_ns = 0;  // CLOCK_MONOTONIC at handler entry
};

// Installs the process's SIGBUS handler (idempotent, thread-safe).
absl::Status InstallFaultTrapHandler();

// Makes `ctx` the calling thread's context (nullptr clears it).
void SetThreadFaultTrap(FaultTrapContext* ctx);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_FAULT_TRAP_H_
