#include "migration/agent/vm_verify.h"

#include <vector>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/status_macros.h"

namespace ferry::agent {

absl::StatusOr<ferry::v1::VerifyVmResponse> VerifyGuestMemory(vmm::Vm& vm, const std::string& name,
                                                              int64_t timeout_ms) {
  const bool finite = vm.config().workload.ops_per_vcpu != 0 && !vm.paused();
  bool paused_here = false;
  // The whole check within the timeout: waiting for a finite workload to
  // halt, and the replay, whose cost grows with the ops the guest has run
  // (an endless guest that ran too long is refused, saying so).
  const int64_t ms = timeout_ms > 0 ? timeout_ms : 60'000;
  const int64_t deadline = MonotonicNowNanos() + ms * 1'000'000;
  if (finite) {
    RETURN_IF_ERROR(vm.WaitUntilHalted(absl::Milliseconds(ms)));
  } else if (!vm.paused()) {  // a paused VM is checked as it is
    RETURN_IF_ERROR(vm.Pause());
    paused_here = true;
  }
  std::vector<uint64_t> ops;
  for (const auto& v : vm.Stats().vcpus) ops.push_back(v.counters.ops);
  // Read while no vCPU runs, as the ops are: each memory map transaction
  // and the op counts it came at, for the replay to apply in between.
  const std::vector<vmm::MemoryEpoch> history = vm.MemoryHistory();
  absl::StatusOr<vmm::MemoryDigest> got = vm.Digest();
  if (paused_here) (void)vm.Resume();
  if (!got.ok()) return got.status();
  absl::StatusOr<vmm::MemoryDigest> want =
      vmm::ReferenceDigest(vm.config(), ops, history, deadline);
  if (absl::IsDeadlineExceeded(want.status()))
    return absl::DeadlineExceededError(absl::StrFormat(
        "cannot verify VM '%s' within %d ms: %s (a guest that runs until stopped is verified "
        "by replaying everything it did; verify it sooner, or give a longer --timeout-ms)",
        name, ms, want.status().message()));
  if (!want.ok()) return want.status();
  ferry::v1::VerifyVmResponse r;
  r.set_match(got->digest == want->digest);
  r.set_digest(absl::StrFormat("%016x", got->digest));
  r.set_reference_digest(absl::StrFormat("%016x", want->digest));
  for (uint64_t o : ops) r.add_ops(o);
  r.set_differing_pages(vmm::DifferingPages(*got, *want).size());
  return r;
}

}  // namespace ferry::agent
