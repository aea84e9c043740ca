// Conversions between ferry.v1 protobuf messages and the VMM's own types.
// Every From* validates: an UNSPECIFIED enum, an out-of-range number or an
// inconsistent layout is InvalidArgument naming the field.
#ifndef FERRY_MIGRATION_CONVERT_H_
#define FERRY_MIGRATION_CONVERT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "ferry/v1/migration.pb.h"
#include "ferry/v1/vm.pb.h"
#include "google/protobuf/repeated_field.h"
#include "migration/options.h"
#include "vmm/vm.h"

namespace ferry::migration {

// The layout of a VM of `config` whose memory map is `map`: memory_bytes
// and the slots are the map's (all its regions together), the rest the
// config's.
ferry::v1::VmLayout ToLayout(const vmm::VmConfig& config, const vmm::MemoryMap& map);
// The same with what a destination needs to rebuild a VM whose map changed
// (the regions, the creation size, the maximum and `history`), for the
// migration Hello.
ferry::v1::VmLayout ToLayout(const vmm::VmConfig& config, const vmm::MemoryMap& map,
                             const std::vector<vmm::MemoryEpoch>& history);
// At most this many memory epochs travel in a layout: a VM whose map
// changed more often cannot be migrated (its replay would be refused).
inline constexpr size_t kMaxLayoutMemoryEpochs = 256;
// The VmConfig of a layout; also checks that its slots are the default map
// for its size, or, with regions, the map of its regions, which its memory
// history (bounded by kMaxLayoutMemoryEpochs) must lead to.
absl::StatusOr<vmm::VmConfig> FromLayout(const ferry::v1::VmLayout& layout);

// `regions` as protos, appended to `out` in their order (a layout's, a
// memory epoch's, GetVm's and ChangeVmMemory's regions alike).
void RegionsToProto(const std::vector<vmm::MemoryRegion>& regions,
                    google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion>* out);

ferry::v1::WorkloadSpec ToWorkload(const vmm::WorkloadSpec& spec);
absl::StatusOr<vmm::WorkloadSpec> FromWorkload(const ferry::v1::WorkloadSpec& spec);

ferry::v1::FaultMode ToProto(vmm::FaultMode mode);
absl::StatusOr<vmm::FaultMode> FromProto(ferry::v1::FaultMode mode);
ferry::v1::MigrationMode ToProto(MigrationMode mode);
absl::StatusOr<MigrationMode> FromProto(ferry::v1::MigrationMode mode);

// A destination's Error message for `status` (not OK), and back: the
// status the source fails with, its message after `prefix`; an Error that
// carries code 0 is still an error (Unknown).
ferry::v1::DestinationMessage ToErrorMessage(const absl::Status& status);
absl::Status FromErrorMessage(const ferry::v1::Error& error, absl::string_view prefix);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_CONVERT_H_
