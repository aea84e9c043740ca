// Agent::ChangeVmMemory: a memory map transaction applied to a VM of this
// agent (vmm::Vm::ChangeMemory; docs/operations.md, "Changing a VM's
// memory").
//
// Under the agent's lock the VM is checked (CanChangeMemory), the
// transaction planned against its map to learn the size it asks for, a
// grow admitted against --max-memory (the registry counts the larger size
// from then on), and the VM marked changing_memory, which keeps migrations,
// snapshots, verifications, deletions and other changes off it. The change
// itself runs without the lock; after it, the registry counts what the map
// holds then (a shrink gives memory back; a refused grow returns what it
// took).
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/log_line.h"
#include "base/status_macros.h"
#include "migration/agent/agent.h"
#include "migration/agent/memory_change.h"
#include "migration/convert.h"

namespace ferry::agent {
namespace {

// KVM's part of a change for its event ("" for software vCPUs, which have
// no memslots).
std::string StageTwoText(const vmm::MemoryChangeResult& r) {
  if (r.slots_kept + r.slots_resized + r.slots_recreated + r.slots_created + r.slots_deleted == 0)
    return "";
  return absl::StrFormat(
      "; memslots: %d kept, %d resized in place, %d recreated, %d created, %d deleted; stage-2 "
      "mappings of %s dropped",
      r.slots_kept, r.slots_resized, r.slots_recreated, r.slots_created, r.slots_deleted,
      vmm::BytesString(r.stage2_bytes_dropped));
}

}  // namespace

absl::StatusOr<ferry::v1::ChangeVmMemoryResponse> Agent::ChangeVmMemory(
    const ferry::v1::ChangeVmMemoryRequest& request) {
  ASSIGN_OR_RETURN(vmm::MemoryTransaction t, TransactionFromRequest(request));
  const std::string& name = request.name();
  std::shared_ptr<HostedVm> e;
  uint64_t before = 0;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_)
      return absl::UnavailableError("this agent is shutting down: it changes no VM's memory");
    ASSIGN_OR_RETURN(e, vms_.Find(name));
    RETURN_IF_ERROR(CanChangeMemory(*e));
    // Planned here as the VM will plan it (no other change can come in
    // between: changing_memory is set before the lock goes), so that a
    // grow is admitted before it happens.
    absl::StatusOr<vmm::MemoryMap> next =
        vmm::PlanMemoryTransaction(e->vm->memory().map(), t, e->vm->memory_limits());
    before = vms_.MemoryOf(name);
    // A plan the VM would refuse goes on to the VM for its own reason
    // (in the order the VM checks); it admits nothing.
    if (next.ok() && next->memory_bytes() > before)
      RETURN_IF_ERROR(vms_.Resize(name, next->memory_bytes()));
    e->changing_memory = true;
  }
  absl::StatusOr<vmm::MemoryChangeResult> changed = e->vm->ChangeMemory(t);
  const vmm::MemoryMap& now = e->vm->memory().map();
  {
    absl::MutexLock lock(&mu_);
    e->changing_memory = false;
    // What the map holds now, applied or not: never more than was admitted.
    (void)vms_.Resize(name, now.memory_bytes());
  }
  if (!changed.ok()) {
    Log(LogLine(LogLevel::kInfo, "vm.memory_change_refused")
            .Kv("vm", name)
            .Kv("changes", TransactionString(t))
            .Kv("reason", changed.status().message()));
    return changed.status();
  }
  const double held_off_ms = changed->held_off_ns / 1e6;
  Log(LogLine(LogLevel::kInfo, "vm.memory_changed")
          .Kv("vm", name)
          .Kv("changes", TransactionString(t))
          .Kv("memory_mib_before", before >> 20)
          .Kv("memory_mib", changed->memory_bytes >> 20)
          .Kv("regions", now.RegionsString())
          .Kv("held_off_ms", held_off_ms)
          .Kv("slots_kept", static_cast<int64_t>(changed->slots_kept))
          .Kv("slots_resized", static_cast<int64_t>(changed->slots_resized))
          .Kv("slots_recreated", static_cast<int64_t>(changed->slots_recreated))
          .Kv("stage2_mib_dropped", static_cast<int64_t>(changed->stage2_bytes_dropped >> 20)));
  events_.Publish(MakeEvent(
      ferry::v1::EVENT_KIND_VM_MEMORY_CHANGED, name, "", "",
      absl::StrFormat("%s: now %s (%s in all); vCPUs held off %.3f ms%s", TransactionString(t),
                      now.RegionsString(), vmm::BytesString(changed->memory_bytes), held_off_ms,
                      StageTwoText(*changed))));
  ferry::v1::ChangeVmMemoryResponse out;
  migration::RegionsToProto(changed->regions, out.mutable_regions());
  out.set_memory_bytes(changed->memory_bytes);
  out.set_held_off_us(static_cast<uint64_t>(changed->held_off_ns / 1000));
  out.set_apply_us(static_cast<uint64_t>(changed->apply_ns / 1000));
  out.set_slots_kept(changed->slots_kept);
  out.set_slots_resized(changed->slots_resized);
  out.set_slots_recreated(changed->slots_recreated);
  out.set_slots_created(changed->slots_created);
  out.set_slots_deleted(changed->slots_deleted);
  out.set_stage2_bytes_dropped(changed->stage2_bytes_dropped);
  return out;
}

}  // namespace ferry::agent
