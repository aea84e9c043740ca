// Supervisor::ChangeVmMemory and the supervisor's count of each process's
// guest memory (docs/operations.md, "Changing a VM's memory").
//
// The VM's process applies the change; the supervisor admits it. It asks
// the process for the VM (its regions and maximum), plans the transaction
// as the process will, and admits a grow against --max-memory with every
// other process and launch, counting the larger size in the process's
// record before the change is routed (so that no launch meanwhile takes
// that memory). After the call the record counts what the VM's map holds
// then: a shrink gives memory back, a refused grow returns what it took.
// One change per process at a time (Vmm::changing_memory).
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/log_line.h"
#include "base/status_macros.h"
#include "migration/agent/memory_change.h"
#include "migration/agent/supervisor.h"

namespace ferry::agent {

namespace v1 = ferry::v1;

uint64_t Supervisor::MemoryInUse() const {
  uint64_t memory = 0;
  for (const auto& [key, vmm] : vmms_) memory += vmm->record.memory_bytes;
  for (const auto& [n, bytes] : launching_) memory += bytes;
  return memory;
}

void Supervisor::SetAdmittedMemory(Vmm& vmm, uint64_t memory_bytes) {
  if (vmm.record.memory_bytes == memory_bytes) return;
  vmm.record.memory_bytes = memory_bytes;
  if (absl::Status s = WriteRecord(vmm.dir, vmm.record); !s.ok())
    Log(LogLine(LogLevel::kWarn, "vmm.record_unwritten")
            .Kv("vm", vmm.record.name)
            .Kv("reason", s.message())
            .Kv("detail", "a restarted ferryd counts this VM's memory as before the change"));
}

absl::StatusOr<v1::ChangeVmMemoryResponse> Supervisor::ChangeVmMemory(
    const v1::ChangeVmMemoryRequest& request) {
  const std::string& name = request.name();
  ASSIGN_OR_RETURN(vmm::MemoryTransaction t, TransactionFromRequest(request));
  {
    absl::MutexLock lock(&mu_);
    if (auto it = lost_.find(name); it != lost_.end())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", name, "' failed (", it->second.held_reason(), "): its memory cannot change"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(name));
  {
    absl::MutexLock lock(&mu_);
    if (vmm->changing_memory)
      return absl::FailedPreconditionError(absl::StrCat(
          "another memory change of VM '", name, "' is under way: try again once it is applied"));
    vmm->changing_memory = true;
  }
  absl::Cleanup done = [&] {
    absl::MutexLock lock(&mu_);
    vmm->changing_memory = false;
  };
  // What the change asks of the host. A plan that fails here (or a VM the
  // process cannot describe) admits nothing: the process gives its own
  // reason, in the order it checks (the VM's state first).
  absl::StatusOr<v1::Vm> vm = vmm->client->GetVm(name);
  absl::StatusOr<uint64_t> planned =
      vm.ok() ? PlannedMemoryBytes(*vm, t) : absl::StatusOr<uint64_t>(vm.status());
  uint64_t before = 0;
  {
    absl::MutexLock lock(&mu_);
    before = vmm->record.memory_bytes;
    if (planned.ok() && *planned > before) {
      const uint64_t in_use = MemoryInUse() - before + *planned;
      if (in_use > options_.agent.max_memory)
        return absl::ResourceExhaustedError(absl::StrFormat(
            "VM '%s' growing from %d MiB to %d MiB would take this agent's guest memory to "
            "%d MiB, over its limit of %d MiB (--max-memory)",
            name, before >> 20, *planned >> 20, in_use >> 20, options_.agent.max_memory >> 20));
      SetAdmittedMemory(*vmm, *planned);
    }
  }
  absl::StatusOr<v1::ChangeVmMemoryResponse> changed = vmm->client->ChangeVmMemory(request);
  // What the map holds now: the reply's, or (refused, or no reply) the
  // VM's as its process describes it; while that is unknown, the larger
  // of the two counts stands.
  uint64_t now = 0;
  if (changed.ok()) {
    now = changed->memory_bytes();
  } else if (absl::StatusOr<v1::Vm> after = vmm->client->GetVm(name); after.ok()) {
    now = after->layout().memory_bytes();
  }
  {
    absl::MutexLock lock(&mu_);
    if (now != 0) SetAdmittedMemory(*vmm, now);
  }
  if (changed.ok())
    Log(LogLine(LogLevel::kInfo, "vmm.memory_admitted")
            .Kv("vm", name)
            .Kv("memory_mib_before", before >> 20)
            .Kv("memory_mib", now >> 20));
  return changed;
}

}  // namespace ferry::agent
