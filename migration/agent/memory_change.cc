#include "migration/agent/memory_change.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vmm/memory_map.h"

namespace ferry::agent {
namespace {

constexpr uint64_t kMaxMemoryAlignment = 2ull << 20;  // as CreateVm's memory

// "change 2 (add dimm0): why".
absl::Status Refuse(int index, const vmm::MemoryChange& c, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrFormat("change %d (%s): %s", index + 1, vmm::ChangeString(c), why));
}

}  // namespace

absl::Status BoundMemoryChanges(const ferry::v1::ChangeVmMemoryRequest& request) {
  if (request.changes_size() > kMaxMemoryChanges)
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d memory changes in one request; at most %d", request.changes_size(), kMaxMemoryChanges));
  for (int i = 0; i < request.changes_size(); ++i)
    if (request.changes(i).region().size() > kMaxRegionNameBytes)
      return absl::InvalidArgumentError(
          absl::StrFormat("change %d: the region name is %d bytes, at most %d", i + 1,
                          request.changes(i).region().size(), kMaxRegionNameBytes));
  return absl::OkStatus();
}

absl::StatusOr<vmm::MemoryTransaction> TransactionFromRequest(
    const ferry::v1::ChangeVmMemoryRequest& request) {
  RETURN_IF_ERROR(BoundMemoryChanges(request));
  if (request.changes_size() == 0)
    return absl::InvalidArgumentError("no memory change given (add, remove or resize a region)");
  vmm::MemoryTransaction t;
  for (int i = 0; i < request.changes_size(); ++i) {
    const ferry::v1::MemoryChange& c = request.changes(i);
    vmm::MemoryChange change;
    change.region = c.region();
    change.gpa = c.gpa();
    change.size = c.size();
    switch (c.kind()) {
      case ferry::v1::MemoryChange::KIND_ADD:
        change.kind = vmm::MemoryChange::Kind::kAdd;
        break;
      case ferry::v1::MemoryChange::KIND_REMOVE:
        change.kind = vmm::MemoryChange::Kind::kRemove;
        if (c.size() != 0) return Refuse(i, change, "a remove takes no size");
        break;
      case ferry::v1::MemoryChange::KIND_RESIZE:
        change.kind = vmm::MemoryChange::Kind::kResize;
        break;
      case ferry::v1::MemoryChange::KIND_UNSPECIFIED:
        return absl::InvalidArgumentError(absl::StrFormat(
            "change %d (region %s): the kind is unspecified; give add, remove or resize", i + 1,
            c.region().empty() ? "not named" : c.region()));
      default:
        return absl::InvalidArgumentError(absl::StrFormat(
            "change %d (region %s): kind %d is unknown; give add, remove or resize", i + 1,
            c.region().empty() ? "not named" : c.region(), static_cast<int>(c.kind())));
    }
    if (change.kind != vmm::MemoryChange::Kind::kAdd && c.gpa() != 0)
      return Refuse(i, change, "a gpa is for an added region only (a region never moves)");
    t.changes.push_back(std::move(change));
  }
  return t;
}

std::string TransactionString(const vmm::MemoryTransaction& t) {
  return absl::StrJoin(t.changes, ", ", [](std::string* out, const vmm::MemoryChange& c) {
    absl::StrAppend(out, vmm::ChangeString(c));
  });
}

absl::StatusOr<uint64_t> PlannedMemoryBytes(const ferry::v1::Vm& vm,
                                            const vmm::MemoryTransaction& t) {
  std::vector<vmm::MemoryRegion> regions;
  for (const ferry::v1::MemoryRegion& r : vm.regions())
    regions.push_back({r.name(), r.gpa(), r.size()});
  const uint32_t page = vm.layout().page_size();
  ASSIGN_OR_RETURN(vmm::MemoryMap map, vmm::MemoryMap::FromRegions(std::move(regions), page));
  vmm::MemoryLimits limits;
  limits.max_bytes = vm.max_memory_bytes();
  limits.min_bytes = static_cast<uint64_t>(vm.layout().vcpus()) * page;
  limits.alignment =
      vm.layout().backend() == ferry::v1::VM_BACKEND_KVM ? kMaxMemoryAlignment : page;
  ASSIGN_OR_RETURN(vmm::MemoryMap next, vmm::PlanMemoryTransaction(map, t, limits));
  return next.memory_bytes();
}

absl::StatusOr<uint64_t> ResolveMaxMemory(uint64_t memory_bytes, uint64_t requested,
                                          uint64_t agent_limit) {
  if (requested != 0) {
    if (requested % kMaxMemoryAlignment != 0)
      return absl::InvalidArgumentError(absl::StrFormat(
          "maximum memory %d is not a multiple of 2 MiB (give e.g. 1G or 4G)", requested));
    if (requested < memory_bytes)
      return absl::InvalidArgumentError(
          absl::StrFormat("maximum memory %s is below the memory size %s",
                          vmm::BytesString(requested), vmm::BytesString(memory_bytes)));
    if (requested > agent_limit)
      return absl::ResourceExhaustedError(absl::StrFormat(
          "maximum memory %s is more than this agent's memory limit of %s (--max-memory): "
          "no VM here can grow that far",
          vmm::BytesString(requested), vmm::BytesString(agent_limit)));
    return requested;
  }
  const uint64_t cap =
      std::max<uint64_t>(memory_bytes, agent_limit / kMaxMemoryAlignment * kMaxMemoryAlignment);
  // Four times would pass the cap (compared so that it cannot overflow).
  if (memory_bytes > cap / 4) return cap;
  return 4 * memory_bytes;
}

}  // namespace ferry::agent
