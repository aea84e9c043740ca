#include "migration/convert.h"

#include "absl/strings/str_cat.h"

#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace ferry::migration {

ferry::v1::WorkloadSpec ToWorkload(const vmm::WorkloadSpec& s) {
  ferry::v1::WorkloadSpec p;
  p.set_kind(static_cast<ferry::v1::WorkloadKind>(static_cast<int>(s.kind)));
  p.set_ops_per_vcpu(s.ops_per_vcpu);
  p.set_seed(s.seed);
  p.set_zero_fraction(s.zero_fraction);
  p.set_dirty_bytes_per_sec(s.dirty_bytes_per_sec);
  p.set_write_fraction(s.write_fraction);
  p.set_hot_fraction(s.hot_fraction);
  p.set_hot_access_fraction(s.hot_access_fraction);
  return p;
}

absl::StatusOr<vmm::WorkloadSpec> FromWorkload(const ferry::v1::WorkloadSpec& p) {
  if (p.kind() == ferry::v1::WORKLOAD_KIND_UNSPECIFIED ||
      !ferry::v1::WorkloadKind_IsValid(p.kind()))
    return absl::InvalidArgumentError(
        absl::StrFormat("workload kind %d is unspecified or unknown", p.kind()));
  vmm::WorkloadSpec s;
  s.kind = static_cast<vmm::WorkloadKind>(static_cast<int>(p.kind()));
  s.ops_per_vcpu = p.ops_per_vcpu();
  s.seed = p.seed();
  s.zero_fraction = p.zero_fraction();
  s.dirty_bytes_per_sec = p.dirty_bytes_per_sec();
  s.write_fraction = p.write_fraction();
  // Unset (0) means the default: neither 0 makes a hot set.
  if (p.hot_fraction() != 0) s.hot_fraction = p.hot_fraction();
  if (p.hot_access_fraction() != 0) s.hot_access_fraction = p.hot_access_fraction();
  RETURN_IF_ERROR(vmm::ValidateWorkload(s));
  return s;
}

ferry::v1::VmLayout ToLayout(const vmm::VmConfig& config, const vmm::MemoryMap& map) {
  ferry::v1::VmLayout l;
  // The map's: a VM whose map changed holds more or less than it was
  // created with (config.memory_bytes stays the creation size).
  l.set_memory_bytes(map.memory_bytes());
  l.set_page_size(config.page_size);
  l.set_vcpus(config.vcpus);
  for (const vmm::MemorySlot& s : map.slots()) {
    ferry::v1::MemorySlot* slot = l.add_slots();
    slot->set_gpa(s.gpa);
    slot->set_size(s.size);
    slot->set_offset(s.offset);
  }
  *l.mutable_workload() = ToWorkload(config.workload);
  l.set_backend(config.backend == vmm::VmBackend::kKvm ? ferry::v1::VM_BACKEND_KVM
                                                       : ferry::v1::VM_BACKEND_SOFT);
  return l;
}

void RegionsToProto(const std::vector<vmm::MemoryRegion>& regions,
                    google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion>* out) {
  for (const vmm::MemoryRegion& r : regions) {
    ferry::v1::MemoryRegion* p = out->Add();
    p->set_name(r.name);
    p->set_gpa(r.gpa);
    p->set_size(r.size);
  }
}

namespace {

absl::StatusOr<std::vector<vmm::MemoryRegion>> FromRegions(
    const google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion>& in) {
  if (static_cast<size_t>(in.size()) > vmm::kMaxMemoryRegions)
    return absl::InvalidArgumentError(absl::StrFormat("layout: %d memory regions, at most %d",
                                                      in.size(), vmm::kMaxMemoryRegions));
  std::vector<vmm::MemoryRegion> out;
  for (const ferry::v1::MemoryRegion& r : in) {
    if (r.name().size() > 32)
      return absl::InvalidArgumentError("layout: a memory region name is over 32 bytes");
    out.push_back({r.name(), r.gpa(), r.size()});
  }
  return out;
}

}  // namespace

ferry::v1::VmLayout ToLayout(const vmm::VmConfig& config, const vmm::MemoryMap& map,
                             const std::vector<vmm::MemoryEpoch>& history) {
  ferry::v1::VmLayout l = ToLayout(config, map);
  if (history.empty() && config.regions.empty()) return l;
  RegionsToProto(map.regions(), l.mutable_regions());
  l.set_created_memory_bytes(config.memory_bytes);
  l.set_max_memory_bytes(vmm::MaxMemoryBytes(config));
  for (const vmm::MemoryEpoch& e : history) {
    ferry::v1::MemoryEpoch* p = l.add_memory_history();
    RegionsToProto(e.regions, p->mutable_regions());
    for (uint64_t o : e.ops_before) p->add_ops_before(o);
  }
  return l;
}

absl::StatusOr<vmm::VmConfig> FromLayout(const ferry::v1::VmLayout& l) {
  vmm::VmConfig c;
  c.memory_bytes = l.memory_bytes();
  c.page_size = l.page_size();
  c.vcpus = static_cast<int>(l.vcpus());
  if (l.vcpus() > 256) return absl::InvalidArgumentError("layout: more than 256 vCPUs");
  ASSIGN_OR_RETURN(c.workload, FromWorkload(l.workload()));
  switch (l.backend()) {
    case ferry::v1::VM_BACKEND_SOFT: c.backend = vmm::VmBackend::kSoft; break;
    case ferry::v1::VM_BACKEND_KVM: c.backend = vmm::VmBackend::kKvm; break;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "layout: backend %d is not soft or kvm (auto is for requests only)", l.backend()));
  }
  RETURN_IF_ERROR(vmm::ValidateVmConfig(c));
  if (l.regions_size() > 0 || l.memory_history_size() > 0) {
    // A VM whose map changed: its regions, where a replay starts, and how
    // it got here (ValidateVmConfig checks the history leads to the regions).
    if (static_cast<size_t>(l.memory_history_size()) > kMaxLayoutMemoryEpochs)
      return absl::InvalidArgumentError(absl::StrFormat(
          "layout: %d memory epochs, at most %d", l.memory_history_size(), kMaxLayoutMemoryEpochs));
    ASSIGN_OR_RETURN(c.regions, FromRegions(l.regions()));
    c.memory_bytes = l.created_memory_bytes();
    c.max_memory_bytes = l.max_memory_bytes();
    for (const ferry::v1::MemoryEpoch& e : l.memory_history()) {
      vmm::MemoryEpoch epoch;
      ASSIGN_OR_RETURN(epoch.regions, FromRegions(e.regions()));
      if (e.ops_before_size() != l.vcpus())
        return absl::InvalidArgumentError("layout: a memory epoch needs one op count per vCPU");
      epoch.ops_before.assign(e.ops_before().begin(), e.ops_before().end());
      c.history.push_back(std::move(epoch));
    }
    RETURN_IF_ERROR(vmm::ValidateVmConfig(c));
  }
  ASSIGN_OR_RETURN(vmm::MemoryMap built, vmm::InitialMemoryMap(c));
  std::string given = "{";
  bool same = static_cast<size_t>(l.slots_size()) == built.slots().size();
  for (int i = 0; i < l.slots_size(); ++i) {
    const ferry::v1::MemorySlot& s = l.slots(i);
    absl::StrAppendFormat(&given, "%s[%#x, %#x)", i ? ", " : "", s.gpa(), s.gpa() + s.size());
    if (same) {
      const vmm::MemorySlot& b = built.slots()[i];
      same = s.gpa() == b.gpa && s.size() == b.size && s.offset() == b.offset;
    }
  }
  given += "}";
  if (!same || built.memory_bytes() != l.memory_bytes())
    return absl::InvalidArgumentError(
        absl::StrFormat("layout: slots %s do not match this VMM's layout %s for %d bytes", given,
                        built.DebugString(), l.memory_bytes()));
  return c;
}

ferry::v1::FaultMode ToProto(vmm::FaultMode mode) {
  return mode == vmm::FaultMode::kExit ? ferry::v1::FAULT_MODE_EXIT
                                       : ferry::v1::FAULT_MODE_BLOCKING;
}

absl::StatusOr<vmm::FaultMode> FromProto(ferry::v1::FaultMode mode) {
  switch (mode) {
    case ferry::v1::FAULT_MODE_EXIT:
      return vmm::FaultMode::kExit;
    case ferry::v1::FAULT_MODE_BLOCKING:
      return vmm::FaultMode::kBlocking;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("fault mode %d is unspecified or unknown", mode));
  }
}

ferry::v1::MigrationMode ToProto(MigrationMode mode) {
  switch (mode) {
    case MigrationMode::kPrecopy:
      return ferry::v1::MIGRATION_MODE_PRECOPY;
    case MigrationMode::kPostcopy:
      return ferry::v1::MIGRATION_MODE_POSTCOPY;
    case MigrationMode::kHybrid:
      return ferry::v1::MIGRATION_MODE_HYBRID;
  }
  return ferry::v1::MIGRATION_MODE_UNSPECIFIED;
}

absl::StatusOr<MigrationMode> FromProto(ferry::v1::MigrationMode mode) {
  switch (mode) {
    case ferry::v1::MIGRATION_MODE_PRECOPY:
      return MigrationMode::kPrecopy;
    case ferry::v1::MIGRATION_MODE_POSTCOPY:
      return MigrationMode::kPostcopy;
    case ferry::v1::MIGRATION_MODE_HYBRID:
      return MigrationMode::kHybrid;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("migration mode %d is unspecified or unknown", mode));
  }
}

ferry::v1::DestinationMessage ToErrorMessage(const absl::Status& status) {
  ferry::v1::DestinationMessage m;
  m.mutable_error()->set_code(static_cast<int>(status.code()));
  m.mutable_error()->set_message(std::string(status.message()));
  return m;
}

absl::Status FromErrorMessage(const ferry::v1::Error& error, absl::string_view prefix) {
  const absl::StatusCode code = error.code() == 0 ? absl::StatusCode::kUnknown
                                                  : static_cast<absl::StatusCode>(error.code());
  return absl::Status(code, absl::StrCat(prefix, error.message()));
}

}  // namespace ferry::migration
