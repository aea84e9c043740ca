#include "vmm/memory_transaction.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace ferry::vmm {

std::string ChangeString(const MemoryChange& c) {
  switch (c.kind) {
    case MemoryChange::Kind::kAdd:
      return absl::StrFormat("add %s (%s at %#x)", c.region, BytesString(c.size), c.gpa);
    case MemoryChange::Kind::kRemove:
      return absl::StrCat("remove ", c.region);
    case MemoryChange::Kind::kResize:
      return absl::StrFormat("resize %s to %s", c.region, BytesString(c.size));
  }
  return "an unknown change";
}

absl::StatusOr<MemoryMap> PlanMemoryTransaction(const MemoryMap& map, const MemoryTransaction& t,
                                                const MemoryLimits& limits) {
  if (t.changes.empty())
    return absl::InvalidArgumentError("a memory transaction needs at least one change");
  const uint64_t align = std::max<uint64_t>(limits.alignment, map.page_size());
  std::vector<MemoryRegion> regions = map.regions();
  for (size_t i = 0; i < t.changes.size(); ++i) {
    const MemoryChange& c = t.changes[i];
    auto refuse = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrFormat("change %d (%s): %s", i + 1, ChangeString(c), why));
    };
    for (size_t j = 0; j < i; ++j)
      if (t.changes[j].region == c.region)
        return refuse(
            absl::StrFormat("region %s is already changed by change %d; one change "
                            "per region in a transaction",
                            c.region, j + 1));
    auto it = std::find_if(regions.begin(), regions.end(),
                           [&](const MemoryRegion& r) { return r.name == c.region; });
    const bool exists = it != regions.end();
    const bool main = c.region == kMainRegion;
    switch (c.kind) {
      case MemoryChange::Kind::kAdd:
        if (exists) return refuse(absl::StrCat("region ", c.region, " exists already"));
        if (c.size == 0) return refuse("an added region needs a size");
        if (c.gpa % align || c.size % align)
          return refuse(
              absl::StrFormat("gpa and size must be multiples of %s", BytesString(align)));
        regions.push_back({c.region, c.gpa, c.size});
        break;
      case MemoryChange::Kind::kRemove:
      case MemoryChange::Kind::kResize: {
        if (!exists) return refuse(absl::StrCat("there is no region ", c.region));
        const bool remove = c.kind == MemoryChange::Kind::kRemove || c.size == 0;
        if (remove && main)
          return refuse(absl::StrFormat("the main region %s cannot be removed; shrink it instead",
                                        kMainRegion));
        if (remove) {
          regions.erase(it);
          break;
        }
        if (c.size % align)
          return refuse(absl::StrFormat("size must be a multiple of %s", BytesString(align)));
        if (c.size == it->size) return refuse(absl::StrCat("region ", c.region, " has that size"));
        it->size = c.size;
        break;
      }
      default:
        return refuse("unknown kind of change");
    }
    // Each step must leave a valid map, so the reason names this change.
    absl::StatusOr<MemoryMap> step = MemoryMap::FromRegions(regions, map.page_size());
    if (!step.ok()) return refuse(std::string(step.status().message()));
  }
  ASSIGN_OR_RETURN(MemoryMap next, MemoryMap::FromRegions(std::move(regions), map.page_size()));
  if (next.regions().size() > limits.max_regions)
    return absl::ResourceExhaustedError(
        absl::StrFormat("the transaction leaves %d memory regions; this VM may have %d",
                        next.regions().size(), limits.max_regions));
  if (limits.max_bytes != 0 && next.memory_bytes() > limits.max_bytes)
    return absl::ResourceExhaustedError(
        absl::StrFormat("the transaction leaves %s of memory; this VM's maximum is %s",
                        BytesString(next.memory_bytes()), BytesString(limits.max_bytes)));
  if (next.memory_bytes() < limits.min_bytes)
    return absl::InvalidArgumentError(
        absl::StrFormat("the transaction leaves %s of memory; this VM needs at least %s",
                        BytesString(next.memory_bytes()), BytesString(limits.min_bytes)));
  return next;
}

std::vector<RegionMove> DescribeChange(const MemoryMap& before, const MemoryMap& after) {
  std::vector<RegionMove> out;
  for (const MemoryRegion& r : before.regions()) {
    const int j = after.FindRegion(r.name);
    const uint64_t now = j < 0 ? 0 : after.regions()[j].size;
    if (now != r.size) out.push_back({r.name, r.size, now});
  }
  for (const MemoryRegion& r : after.regions())
    if (before.FindRegion(r.name) < 0) out.push_back({r.name, 0, r.size});
  return out;
}

}  // namespace ferry::vmm
