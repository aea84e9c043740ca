#include "vmm/kvm/kvm_vcpu.h"

#include <signal.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "ferry/v1/vcpu_state.pb.h"
#include "sys/kvm_abi.h"
#include "vmm/kvm/kvm_machine.h"

namespace ferry::vmm::kvm {
namespace {

namespace abi = sys::abi;
constexpr uint32_t kStateVersion = 1;

// The MSRs a guest of this VMM can touch; those KVM does not offer are
// skipped on save.
const std::vector<uint32_t>& SavedMsrs() {
  static const std::vector<uint32_t>* msrs = new std::vector<uint32_t>{abi::kMsrIa32Tsc,
                                                                       abi::kMsrIa32MiscEnable,
                                                                       abi::kMsrIa32SysenterCs,
                                                                       abi::kMsrIa32SysenterEsp,
                                                                       abi::kMsrIa32SysenterEip,
                                                                       abi::kMsrIa32CrPat,
                                                                       abi::kMsrStar,
                                                                       abi::kMsrLstar,
                                                                       abi::kMsrCstar,
                                                                       abi::kMsrSyscallMask,
                                                                       abi::kMsrKernelGsBase,
                                                                       abi::kMsrTscAux};
  return *msrs;
}

// The signal that kicks a vCPU thread out of KVM_RUN. Its handler does
// nothing: the interruption (EINTR) is the point. Installed without
// SA_RESTART, once per process.
int KickSignal() {
  static const int sig = [] {
    const int s = SIGRTMIN + 4;
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sigaction(s, &sa, nullptr);
    return s;
  }();
  return sig;
}

template <typename T>
std::string Bytes(const T& v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
}

template <typename T>
absl::Status FromBytes(const std::string& b, const char* what, T* out) {
  if (b.size() != sizeof(T))
    return absl::InvalidArgumentError(absl::StrFormat(
        "KVM vCPU state: %s is %d bytes, this host's struct is %d", what, b.size(), sizeof(T)));
  std::memcpy(out, b.data(), sizeof(T));
  return absl::OkStatus();
}

}  // namespace

KvmVcpu::KvmVcpu(int index, KvmMachine* machine, sys::KvmVcpuFd fd, const Clock* clock,
                 const Throttle* throttle)
    : index_(index),
      machine_(machine),
      fd_(std::move(fd)),
      clock_(clock),
      pacer_(OpIntervalNanos(machine->spec(), machine->page_size()), clock),
      duty_(throttle, clock) {
  KickSignal();
}

guest::VcpuStatus* KvmVcpu::status() const {
  return reinterpret_cast<guest::VcpuStatus*>(VcpuArea(machine_->firmware(), index_).data() +
                                              guest::kStatusPageOffset);
}

void KvmVcpu::RequestExit() {
  exit_requested_.store(true);
  status()->pause_requested = 1;
  __atomic_store_n(&fd_.run()->immediate_exit, 1, __ATOMIC_SEQ_CST);
  if (in_run_.load()) pthread_kill(thread_.load(), KickSignal());
}

void KvmVcpu::ClearExitRequest() {
  exit_requested_.store(false);
  status()->pause_requested = 0;
  __atomic_store_n(&fd_.run()->immediate_exit, 0, __ATOMIC_SEQ_CST);
}

absl::Status KvmVcpu::CompletePendingIo() {
  kvm_run* run = fd_.run();
  __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  absl::Status s = fd_.Run();  // returns EINTR at once, after completing the I/O
  if (!exit_requested_.load()) __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
  if (s.ok() || absl::IsCancelled(s)) return absl::OkStatus();
  return s;
}

bool KvmVcpu::ThrottleWait() {
  const int64_t slept = duty_.slept_ns();
  const bool run_on = duty_.Wait(exit_requested_);
  if (duty_.slept_ns() != slept) {
    throttled_ns_.store(duty_.slept_ns(), std::memory_order_relaxed);
    pacer_.Reset();
  }
  return run_on;
}

absl::Status KvmVcpu::ExitError(const char* what) const {
  kvm_regs regs{};
  (void)fd_.GetRegs(&regs);
  return absl::InternalError(absl::StrFormat("vcpu %d: %s (rip %#x)", index_, what, regs.rip));
}

absl::StatusOr<VcpuExit> KvmVcpu::Run() {
  thread_.store(pthread_self());
  in_run_.store(true);
  struct Leave {
    std::atomic<bool>* in_run;
    ~Leave() { in_run->store(false); }
  } leave{&in_run_};
  kvm_run* run = fd_.run();
  const VcpuExit paused{VcpuExitReason::kPaused, {}};
  while (true) {
    if (exit_requested_.load() && !status()->in_op) {
      pacer_.Reset();
      duty_.Reset();
      return paused;
    }
    absl::Status s = fd_.Run();
    if (absl::IsCancelled(s)) {  // kicked (or immediate_exit)
      if (exit_requested_.load() && status()->in_op) {
        // Mid-op: let the guest reach its boundary, where it stops by itself
        // (OUT kPortPaused) because pause_requested is set.
        __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
      }
      continue;
    }
    if (!s.ok()) return s;
    switch (run->exit_reason) {
      case KVM_EXIT_IO: {
        if (run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 4)
          return ExitError(
              absl::StrFormat("unexpected port I/O on port %#x", run->io.port).c_str());
        uint32_t value;
        std::memcpy(&value, reinterpret_cast<uint8_t*>(run) + run->io.data_offset, 4);
        switch (run->io.port) {
          case guest::kPortPaused:
            RETURN_IF_ERROR(CompletePendingIo());
            pacer_.Reset();
            return paused;
          case guest::kPortPace:
            if (!ThrottleWait() || !pacer_.Wait(status()->ops_done, exit_requested_)) {
              RETURN_IF_ERROR(CompletePendingIo());
              pacer_.Reset();
              return paused;
            }
            continue;
          case guest::kPortProgress:
            if (!ThrottleWait()) {
              RETURN_IF_ERROR(CompletePendingIo());
              pacer_.Reset();
              return paused;
            }
            continue;
          case guest::kPortDone:
            continue;
          default:
            return ExitError(
                absl::StrFormat("the guest wrote %#x to unknown port %#x", value, run->io.port)
                    .c_str());
        }
      }
      case KVM_EXIT_HLT:
        return VcpuExit{VcpuExitReason::kHalted, {}};
      case KVM_EXIT_DIRTY_RING_FULL:
        // The ring holds 4096 pages dirtied since the last Collect().
        RETURN_IF_ERROR(machine_->OnDirtyRingFull(index_));
        continue;
      case abi::kKvmExitMemoryFault: {
        abi::KvmMemoryFault f;
        std::memcpy(&f, reinterpret_cast<uint8_t*>(run) + abi::kKvmRunExitUnionOffset, sizeof(f));
        if (!(f.flags & abi::kKvmMemoryExitFlagUserfault))
          // KVM could not map the page for another reason (a private page,
          // a host mapping gone): nothing this VMM can install fixes that.
          return ExitError(absl::StrFormat("KVM could not map gpa %#x (%d bytes, memory-fault "
                                           "flags %#x)",
                                           f.gpa, f.size, f.flags)
                               .c_str());
        // A page whose bit is set in the memslot's userfault bitmap (Ferry's
        // KVM patch): resolved on this thread, like a software vCPU's fault.
        fault_exits_.fetch_add(1, std::memory_order_relaxed);
        VcpuExit e;
        e.reason = VcpuExitReason::kMemoryFault;
        e.fault.gpa = f.gpa & ~uint64_t{4095};
        e.fault.size = f.size;
        e.fault.flags = 0;  // KVM does not say read or write
        e.fault.time_ns = MonotonicNowNanos();
        return e;
      }
      case KVM_EXIT_MMIO:
        return ExitError(absl::StrFormat("the guest %s %d bytes at gpa %#x, which is not RAM",
                                         run->mmio.is_write ? "wrote" : "read", run->mmio.len,
                                         run->mmio.phys_addr)
                             .c_str());
      case KVM_EXIT_SHUTDOWN:
        return ExitError("the guest shut down (a triple fault: an exception with no IDT)");
      case KVM_EXIT_FAIL_ENTRY:
        return ExitError(absl::StrFormat("KVM could not enter the guest (hardware reason %#x)",
                                         run->fail_entry.hardware_entry_failure_reason)
                             .c_str());
      case KVM_EXIT_INTERNAL_ERROR:
        return ExitError(
            absl::StrFormat("KVM internal error, suberror %d", run->internal.suberror).c_str());
      default:
        return ExitError(absl::StrFormat("unexpected KVM exit %d", run->exit_reason).c_str());
    }
  }
}

absl::StatusOr<std::string> KvmVcpu::SaveState() const {
  ferry::v1::KvmVcpuState st;
  st.set_version(kStateVersion);
  st.set_vcpu_index(index_);
  st.set_workload_kind(static_cast<uint64_t>(machine_->spec().kind));
  st.set_workload_seed(machine_->spec().seed);
  kvm_regs regs;
  RETURN_IF_ERROR(fd_.GetRegs(&regs));
  st.set_regs(Bytes(regs));
  kvm_sregs sregs;
  RETURN_IF_ERROR(fd_.GetSregs(&sregs));
  st.set_sregs(Bytes(sregs));
  ASSIGN_OR_RETURN(std::string xsave, fd_.GetXsave(machine_->xsave2_size()));
  st.set_xsave(std::move(xsave));
  kvm_xcrs xcrs{};
  RETURN_IF_ERROR(fd_.GetXcrs(&xcrs));
  st.set_xcrs(Bytes(xcrs));
  ASSIGN_OR_RETURN(auto msrs, fd_.GetMsrs(SavedMsrs()));
  for (const auto& [index, value] : msrs) {
    ferry::v1::KvmMsr* m = st.add_msrs();
    m->set_index(index);
    m->set_value(value);
  }
  uint32_t mp;
  RETURN_IF_ERROR(fd_.GetMpState(&mp));
  st.set_mp_state(mp);
  absl::Span<uint8_t> area = VcpuArea(machine_->firmware(), index_);
  st.set_area(std::string(reinterpret_cast<const char*>(area.data()), area.size()));
  return st.SerializeAsString();
}

absl::Status KvmVcpu::RestoreState(absl::string_view bytes) {
  ferry::v1::KvmVcpuState st;
  if (!st.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: not a KVM vCPU's state", index_));
  if (st.version() != kStateVersion)
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: version %d, this build reads version %d", index_,
                        st.version(), kStateVersion));
  if (st.vcpu_index() != static_cast<uint32_t>(index_))
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: it belongs to vcpu %d", index_, st.vcpu_index()));
  if (st.workload_kind() != static_cast<uint64_t>(machine_->spec().kind) ||
      st.workload_seed() != machine_->spec().seed)
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: saved from another workload (kind %d seed %d)", index_,
                        st.workload_kind(), st.workload_seed()));
  absl::Span<uint8_t> area = VcpuArea(machine_->firmware(), index_);
  if (st.area().size() != area.size())
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: firmware area of %d bytes, expected %d", index_,
                        st.area().size(), area.size()));
  if (st.msrs_size() > static_cast<int>(SavedMsrs().size()))
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: %d MSRs, this build saves at most %d", index_,
                        st.msrs_size(), SavedMsrs().size()));
  for (const ferry::v1::KvmMsr& m : st.msrs())
    if (std::find(SavedMsrs().begin(), SavedMsrs().end(), m.index()) == SavedMsrs().end())
      return absl::InvalidArgumentError(
          absl::StrFormat("vcpu %d state: MSR %#x is not one this VMM moves", index_, m.index()));
  const size_t xsave_size = sys::KvmXsaveBytes(machine_->xsave2_size());
  if (st.xsave().size() != xsave_size)
    return absl::InvalidArgumentError(
        absl::StrFormat("vcpu %d state: XSAVE state of %d bytes, this host's KVM takes %d", index_,
                        st.xsave().size(), xsave_size));
  kvm_regs regs;
  kvm_sregs sregs;
  kvm_xcrs xcrs;
  RETURN_IF_ERROR(FromBytes(st.regs(), "regs", &regs));
  RETURN_IF_ERROR(FromBytes(st.sregs(), "sregs", &sregs));
  RETURN_IF_ERROR(FromBytes(st.xcrs(), "xcrs", &xcrs));
  // Validated whole; now applied. Special registers first (they set the
  // mode the general ones are read in), the TSC among the MSRs.
  RETURN_IF_ERROR(fd_.SetSregs(sregs));
  RETURN_IF_ERROR(fd_.SetRegs(regs));
  RETURN_IF_ERROR(fd_.SetXsave(st.xsave(), machine_->xsave2_size()));
  RETURN_IF_ERROR(fd_.SetXcrs(xcrs));
  std::vector<std::pair<uint32_t, uint64_t>> msrs;
  for (const ferry::v1::KvmMsr& m : st.msrs()) msrs.emplace_back(m.index(), m.value());
  RETURN_IF_ERROR(fd_.SetMsrs(msrs));
  RETURN_IF_ERROR(fd_.SetMpState(st.mp_state()));
  std::memcpy(area.data(), st.area().data(), area.size());
  // The source asked its guest to pause; here the VM's own requests decide.
  status()->pause_requested = exit_requested_.load() ? 1 : 0;
  return absl::OkStatus();
}

VcpuCounters KvmVcpu::Counters() const {
  VcpuCounters c;
  c.ops = ops();
  c.fault_exits = fault_exits_.load(std::memory_order_relaxed);
  c.throttled_ns = throttled_ns_.load(std::memory_order_relaxed);
  return c;
}

uint64_t KvmVcpu::ops() const {
  // The guest's own counter in its status page (firmware memory, never
  // demand paged).
  return __atomic_load_n(&status()->ops_done, __ATOMIC_RELAXED);
}

}  // namespace ferry::vmm::kvm
