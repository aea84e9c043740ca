#include "migration/agent/vm_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "migration/agent/memory_change.h"
#include "migration/convert.h"

namespace ferry::agent {

double HostedVm::OpsPerSec(uint64_t total_ops) {
  absl::MutexLock lock(&stats_mu);
  const int64_t now = MonotonicNowNanos();
  if (last_t != 0 && now - last_t > 50'000'000)
    last_rate = (total_ops - last_ops) / ((now - last_t) / 1e9);
  if (last_t == 0 || now - last_t > 50'000'000) {
    last_t = now;
    last_ops = total_ops;
  }
  return last_rate;
}

HostedVm::~HostedVm() { EndRestoreWatch(); }

void HostedVm::EndRestoreWatch() {
  std::thread watcher;
  {
    absl::MutexLock lock(&watch_mu_);
    stop_watch_ = true;
    watcher = std::move(restore_watcher_);
  }
  if (watcher.joinable()) watcher.join();
}

void HostedVm::WatchRestore(std::function<void(const absl::Status&)> on_end) {
  absl::MutexLock lock(&watch_mu_);
  if (stop_watch_) return;  // ended before it began
  restore_watcher_ = std::thread([this, on_end = std::move(on_end)] {
    {
      // LazyRestore::Wait cannot be interrupted: look every 50 ms, so that
      // a VM deleted while it fills ends its watch at once.
      absl::MutexLock lock(&watch_mu_);
      while (!stop_watch_ && !lazy_restore->done())
        watch_mu_.AwaitWithTimeout(absl::Condition(&stop_watch_), absl::Milliseconds(50));
      if (stop_watch_) return;
    }
    on_end(lazy_restore->Wait());  // done: returns at once
  });
}

namespace {

// Memory map transactions applied to `vm` so far.
size_t MemoryChanges(const HostedVm& vm) {
  return vm.vm != nullptr ? vm.vm->MemoryHistory().size() : 0;
}

}  // namespace

absl::Status CanChangeMemory(const HostedVm& vm) {
  const std::string& name = vm.name;
  if (!vm.migration_id.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is being migrated (", vm.migration_id,
                     "): its memory map cannot change until the migration ended"));
  if (!vm.snapshot_to.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is being snapshotted (to ", vm.snapshot_to,
                     "): change its memory once the snapshot is written"));
  if (vm.verifying > 0)
    return absl::FailedPreconditionError(absl::StrCat(
        "VM '", name, "' is being verified: change its memory once the check is done"));
  if (vm.changing_memory)
    return absl::FailedPreconditionError(absl::StrCat(
        "another memory change of VM '", name, "' is under way: try again once it is applied"));
  if (!vm.held_by.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is held paused by migration ", vm.held_by,
                     ", which failed after switchover: the destination may run it. Resolve "
                     "that first (`ferry vm resume ",
                     name, " --force` resumes this copy)"));
  if (vm.Filling())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is still being restored from ", vm.restored_from,
                     ": change its memory once every page is read (`ferry vm get ", name,
                     "` shows the pages missing)"));
  return absl::OkStatus();
}

absl::Status CanSnapshot(const HostedVm& vm) {
  const std::string& name = vm.name;
  if (vm.changing_memory)
    return absl::FailedPreconditionError(absl::StrCat(
        "VM '", name, "' is changing its memory: snapshot it once the change is applied"));
  if (const size_t changes = MemoryChanges(vm); changes > migration::kMaxLayoutMemoryEpochs)
    return absl::FailedPreconditionError(absl::StrFormat(
        "VM %s's memory map was changed %d times: a snapshot holds at most %d changes (the "
        "restore replays each)",
        name, changes, migration::kMaxLayoutMemoryEpochs));
  if (!vm.migration_id.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is being migrated (", vm.migration_id,
                     "): snapshot it where it arrives, or cancel the migration first"));
  if (!vm.snapshot_to.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is already being snapshotted (to ", vm.snapshot_to, ")"));
  if (vm.verifying > 0)
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is being verified: snapshot it once the check is done"));
  if (vm.Filling())
    return absl::FailedPreconditionError(absl::StrFormat(
        "VM '%s' is still being restored from %s (%d pages not read yet): snapshot it once "
        "its memory is whole (`ferry vm get %s` shows the pages missing)",
        name, vm.restored_from, vm.vm->pager() ? vm.vm->pager()->missing_pages() : 0, name));
  if (vm.vm != nullptr)
    if (absl::Status h = vm.vm->Health(); !h.ok())
      return absl::FailedPreconditionError(absl::StrCat(
          "VM '", name, "' failed (", h.message(), "): its memory cannot be trusted to snapshot"));
  return absl::OkStatus();
}

absl::Status CanMigrate(const HostedVm& vm) {
  const std::string& name = vm.name;
  if (!vm.migration_id.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is already being migrated (", vm.migration_id, ")"));
  if (vm.changing_memory)
    return absl::FailedPreconditionError(absl::StrCat(
        "VM '", name, "' is changing its memory: migrate it once the change is applied"));
  if (const size_t changes = MemoryChanges(vm); changes > migration::kMaxLayoutMemoryEpochs)
    return absl::FailedPreconditionError(absl::StrFormat(
        "VM %s's memory map was changed %d times: a migration carries at most %d changes (the "
        "destination replays them to verify the VM)",
        name, changes, migration::kMaxLayoutMemoryEpochs));
  if (!vm.held_by.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is held paused by migration ", vm.held_by,
                     ", which failed after switchover (", vm.held_reason,
                     "): the destination may run it. Check the destination; `ferry vm resume ",
                     name, " --force` resumes this copy"));
  if (!vm.snapshot_to.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is being snapshotted (to ", vm.snapshot_to,
                     "): migrate it once the snapshot is written"));
  if (vm.Filling())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is still being restored from ", vm.restored_from,
                     ": migrate it once every page is read (`ferry vm get ", name,
                     "` shows the pages missing)"));
  if (vm.vm != nullptr)
    if (absl::Status h = vm.vm->Health(); !h.ok())
      return absl::FailedPreconditionError(
          absl::StrCat("VM '", name, "' failed (", h.message(), "): it cannot run; delete it"));
  if (vm.vm != nullptr && vm.vm->paused())
    return absl::FailedPreconditionError(
        absl::StrCat("VM '", name, "' is paused: resume it first (`ferry vm resume ", name, "`)"));
  return absl::OkStatus();
}

VmRegistry::Refusal VmRegistry::WouldRefuse(const std::string& name, uint64_t memory_bytes) const {
  if (vms_.count(name) || reserved_.count(name)) return Refusal::kNameTaken;
  if (count() >= limits_.max_vms) return Refusal::kVmLimit;
  if (MemoryInUse() + memory_bytes > limits_.max_memory) return Refusal::kMemoryLimit;
  return Refusal::kNone;
}

VmRegistry::Refusal VmRegistry::Reserve(const std::string& name, uint64_t memory_bytes,
                                        std::string doing) {
  const Refusal r = WouldRefuse(name, memory_bytes);
  if (r == Refusal::kNone) reserved_[name] = Reservation{memory_bytes, std::move(doing)};
  return r;
}

absl::Status VmRegistry::RefusalStatus(Refusal refusal, const std::string& name,
                                       uint64_t memory_bytes, bool incoming) const {
  switch (refusal) {
    case Refusal::kNone:
      return absl::OkStatus();
    case Refusal::kNameTaken:
      return absl::AlreadyExistsError(
          incoming ? absl::StrCat("the destination already hosts a VM named '", name, "'")
                   : absl::StrCat("a VM named '", name, "' already exists on this agent"));
    case Refusal::kVmLimit:
      return absl::ResourceExhaustedError(
          incoming ? "the destination is at its VM limit"
                   : absl::StrFormat("this agent already hosts its limit of %d VMs (--max-vms)",
                                     limits_.max_vms));
    case Refusal::kMemoryLimit:
      return absl::ResourceExhaustedError(
          incoming ? "the destination is at its memory limit"
                   : absl::StrFormat("%d MiB more would exceed this agent's memory limit of "
                                     "%d MiB (--max-memory)",
                                     memory_bytes >> 20, limits_.max_memory >> 20));
  }
  return absl::InternalError("unknown refusal");
}

void VmRegistry::Unreserve(const std::string& name) { reserved_.erase(name); }

void VmRegistry::Add(const std::string& name, uint64_t memory_bytes, std::shared_ptr<HostedVm> vm) {
  reserved_.erase(name);
  vms_[name] = Slot{std::move(vm), memory_bytes};
}

absl::Status VmRegistry::Resize(const std::string& name, uint64_t memory_bytes) {
  auto it = vms_.find(name);
  if (it == vms_.end())
    return absl::NotFoundError(absl::StrCat("no VM named '", name, "' is hosted here"));
  const uint64_t old_bytes = it->second.memory_bytes;
  if (memory_bytes > old_bytes) {
    const uint64_t in_use = MemoryInUse() - old_bytes + memory_bytes;
    if (in_use > limits_.max_memory)
      return absl::ResourceExhaustedError(absl::StrFormat(
          "VM '%s' growing from %d MiB to %d MiB would take this agent's guest memory to %d MiB, "
          "over its limit of %d MiB (--max-memory)",
          name, old_bytes >> 20, memory_bytes >> 20, in_use >> 20, limits_.max_memory >> 20));
  }
  it->second.memory_bytes = memory_bytes;
  return absl::OkStatus();
}

uint64_t VmRegistry::MemoryOf(const std::string& name) const {
  auto it = vms_.find(name);
  return it == vms_.end() ? 0 : it->second.memory_bytes;
}

absl::StatusOr<std::shared_ptr<HostedVm>> VmRegistry::Find(const std::string& name) const {
  auto it = vms_.find(name);
  if (it != vms_.end()) return it->second.vm;
  // An arriving VM is listed (state incoming) but not yet this agent's.
  if (auto r = reserved_.find(name); r != reserved_.end())
    return absl::FailedPreconditionError(
        r->second.doing.empty()
            ? absl::StrCat("VM '", name,
                           "' is arriving by a migration: it is this agent's once it arrived")
            : absl::StrCat("VM '", name, "' ", r->second.doing, ": try again once it runs"));
  return absl::NotFoundError(
      absl::StrCat("no VM named '", name, "' on this agent (see `ferry vm list`)"));
}

std::shared_ptr<HostedVm> VmRegistry::Remove(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return nullptr;
  std::shared_ptr<HostedVm> vm = std::move(it->second.vm);
  vms_.erase(it);
  return vm;
}

std::vector<std::shared_ptr<HostedVm>> VmRegistry::TakeAll() {
  std::vector<std::shared_ptr<HostedVm>> all = All();
  vms_.clear();
  reserved_.clear();
  return all;
}

std::vector<std::shared_ptr<HostedVm>> VmRegistry::All() const {
  std::vector<std::shared_ptr<HostedVm>> all;
  all.reserve(vms_.size());
  for (const auto& [name, slot] : vms_) all.push_back(slot.vm);
  return all;
}

uint64_t VmRegistry::MemoryInUse() const {
  uint64_t total = 0;
  for (const auto& [name, slot] : vms_) total += slot.memory_bytes;
  for (const auto& [name, r] : reserved_) total += r.memory_bytes;
  return total;
}

}  // namespace ferry::agent
