#include "vmm/fault_trap.h"

#include <signal.h>
#include <ucontext.h>

#include <cerrno>
#include <mutex>

#include "base/clock.h"
#include "base/errno_status.h"
#include "sys/kernel_abi.h"

namespace ferry::vmm {
namespace {

// initial-exec: the handler must not trigger lazy TLS allocation.
__attribute__((tls_model("initial-exec"))) thread_local FaultTrapContext*
    tls_trap = nullptr;

struct sigaction previous_action;

void HandleSigbus(int sig, siginfo_t* info, void* uctx) {
  FaultTrapContext* ctx = tls_trap;
  auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  if (ctx != nullptr && ctx->armed && addr >= ctx->lo && addr < ctx->hi) {
    ctx->armed = 0;
    ctx->fault_addr = addr;
    auto* uc = static_cast<ucontext_t*>(uctx);
    ctx->write = (uc->uc_mcontext.gregs[REG_ERR] & sys::abi::kX86PfWrite) != 0;
    ctx->fault_ns = MonotonicNowNanos();  // vDSO clock_gettime: signal-safe
    siglongjmp(ctx->env, 1);
  }
  // Not a guest access of an armed vCPU: hand over to what was there before.
  if (previous_action.sa_flags & SA_SIGINFO) {
    if (previous_action.sa_sigaction != nullptr) {
      previous_action.sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (previous_action.sa_handler == SIG_IGN) {
    return;
  } else if (previous_action.sa_handler != SIG_DFL) {
    previous_action.sa_handler(sig);
    return;
  }
  // Default action: reset and return; the access faults again and kills.
  signal(SIGBUS, SIG_DFL);
}

}  // namespace

absl::Status InstallFaultTrapHandler() {
  static std::once_flag once;
  static int error = 0;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = HandleSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &previous_action) != 0) error = errno;
  });
  if (error != 0) return ErrnoStatus("sigaction(SIGBUS)", error);
  return absl::OkStatus();
}

void SetThreadFaultTrap(FaultTrapContext* ctx) { tls_trap = ctx; }

}  // namespace ferry::vmm
