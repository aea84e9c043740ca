#include "migration/agent/vm_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace ferry::agent {

VmRegistry::Refusal VmRegistry::Reserve(const std::string& name, uint64_t memory_bytes) {
  if (vms_.count(name) || reserved_.count(name)) return Refusal::kNameTaken;
  if (count() >= limits_.max_vms) return Refusal::kVmLimit;
  if (MemoryInUse() + memory_bytes > limits_.max_memory) return Refusal::kMemoryLimit;
  reserved_[name] = memory_bytes;
  return Refusal::kNone;
}

void VmRegistry::Unreserve(const std::string& name) { reserved_.erase(name); }

void VmRegistry::Add(const std::string& name, uint64_t memory_bytes,
                     std::shared_ptr<HostedVm> vm) {
  reserved_.erase(name);
  vms_[name] = Slot{std::move(vm), memory_bytes};
}

absl::StatusOr<std::shared_ptr<HostedVm>> VmRegistry::Find(const std::string& name) const {
  auto it = vms_.find(name);
  if (it != vms_.end()) return it->second.vm;
  // An arriving VM is listed (state incoming) but not yet this agent's.
  if (reserved_.count(name))
    return absl::FailedPreconditionError(absl::StrCat(
        "VM '", name, "' is arriving by a migration: it is this agent's once it arrived"));
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
  for (const auto& [name, bytes] : reserved_) total += bytes;
  return total;
}

}  // namespace ferry::agent
