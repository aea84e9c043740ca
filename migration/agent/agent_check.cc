// Preflight checks on the agent (`ferry migrate --check`,
// Control.CheckMigration): the source's own checks, then the destination's
// (migration/preflight.h); and the destination's view of admission.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "migration/agent/agent.h"
#include "migration/agent/control_translate.h"
#include "migration/api/names.h"

namespace ferry::agent {

using migration::CheckItem;

std::vector<CheckItem> Agent::AdmitCheck(const std::string& name, const vmm::VmConfig& config) {
  std::vector<CheckItem> items;
  if (absl::Status s = api::ValidateVmName(name); !s.ok()) {
    items.push_back({"vm name", false, std::string(s.message())});
    return items;
  }
  absl::MutexLock lock(&mu_);
  if (shutting_down_) {
    items.push_back({"destination agent", false, "the destination agent is shutting down"});
    return items;
  }
  const VmRegistry::Refusal r = vms_.WouldRefuse(name, vmm::CreatedMemoryBytes(config));
  if (r == VmRegistry::Refusal::kNameTaken) {
    items.push_back({"vm name", false,
                     std::string(vms_.RefusalStatus(r, name, vmm::CreatedMemoryBytes(config),
                                                    /*incoming=*/true)
                                     .message())});
    return items;
  }
  items.push_back({"vm name", true, absl::StrCat("'", name, "' is free here")});
  const VmRegistry::Limits& l = vms_.limits();
  const std::string usage = absl::StrFormat(
      "%d of %d VMs, %d of %d MiB in use, the VM needs %d MiB", vms_.count(), l.max_vms,
      vms_.MemoryInUse() >> 20, l.max_memory >> 20, vmm::CreatedMemoryBytes(config) >> 20);
  if (r == VmRegistry::Refusal::kNone)
    items.push_back({"destination limits", true, usage});
  else
    items.push_back(
        {"destination limits", false,
         absl::StrCat(vms_.RefusalStatus(r, name, vmm::CreatedMemoryBytes(config), true).message(),
                      " (", usage, ")")});
  return items;
}

ferry::v1::CheckMigrationResponse Agent::CheckMigration(const ferry::v1::StartMigrationRequest& r) {
  std::vector<CheckItem> items;
  absl::StatusOr<migration::MigrationOptions> o =
      MigrationOptionsFromRequest(r, options_.migration_token);
  std::shared_ptr<HostedVm> vm;
  if (!o.ok()) {
    items.push_back({"request", false, std::string(o.status().message())});
  } else {
    items.push_back({"request", true,
                     absl::StrFormat("%s of VM '%s' to %s", migration::MigrationModeName(o->mode),
                                     r.vm_name(), r.destination())});
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<HostedVm>> found = vms_.Find(r.vm_name());
    if (!found.ok()) {
      items.push_back(
          {"source vm", false,
           absl::StrCat("no VM named '", r.vm_name(), "' on this agent (see `ferry vm list`)")});
    } else if (absl::Status s = CanMigrate(**found); !s.ok()) {
      items.push_back({"source vm", false, std::string(s.message())});
    } else {
      vm = *std::move(found);
      items.push_back({"source vm", true,
                       absl::StrFormat("'%s' runs here (%d MiB, %d vCPUs, %s)", r.vm_name(),
                                       vm->vm->config().memory_bytes >> 20, vm->vm->config().vcpus,
                                       vmm::VmBackendName(vm->vm->backend()))});
    }
    const int running = migrations_.Running();
    if (shutting_down_)
      items.push_back({"source limits", false, "this agent is shutting down"});
    else if (running >= options_.max_migrations)
      items.push_back({"source limits", false,
                       absl::StrFormat("%d migrations are under way, this agent's limit "
                                       "(--max-migrations)",
                                       running)});
    else
      items.push_back(
          {"source limits", true,
           absl::StrFormat("%d of %d migrations under way", running, options_.max_migrations)});
  }
  if (vm != nullptr) {
    // Outside the lock: this waits for the destination. The VM stays alive
    // through `vm` (a concurrent delete only drops the registry's share).
    std::vector<CheckItem> theirs = migration::CheckDestination(*vm->vm, SourceConfigFor(r, *o));
    items.insert(items.end(), theirs.begin(), theirs.end());
  } else {
    items.push_back(
        {"destination", false, "not checked: the source's checks above must pass first"});
  }
  ferry::v1::CheckMigrationResponse out;
  out.set_ok(migration::AllPassed(items));
  for (const CheckItem& i : items) *out.add_checks() = migration::ToProto(i);
  Log(LogLine(out.ok() ? LogLevel::kInfo : LogLevel::kWarn, "migration.checked")
          .Kv("direction", "outgoing")
          .Kv("vm", r.vm_name())
          .Kv("destination", r.destination())
          .Kv("result", out.ok() ? "pass" : "fail"));
  return out;
}

}  // namespace ferry::agent
