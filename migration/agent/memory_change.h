// Memory map changes through the Control API (ChangeVmMemory): a request's
// changes as a vmm::MemoryTransaction, and the rules both agent layouts
// share (how big a VM may grow, what a change asks of the host's memory).
// Regions become
// protos in migration/convert.h (RegionsToProto).
//
// Pure functions of their arguments: no state, safe from any thread. A
// request a client got wrong is InvalidArgument naming the change (by its
// 1-based position) and the field.
//
//   RETURN_IF_ERROR(BoundMemoryChanges(request));  // before anything is echoed
//   ASSIGN_OR_RETURN(vmm::MemoryTransaction t, TransactionFromRequest(request));
//   ASSIGN_OR_RETURN(vmm::MemoryChangeResult r, vm->ChangeMemory(t));
#ifndef FERRY_MIGRATION_AGENT_MEMORY_CHANGE_H_
#define FERRY_MIGRATION_AGENT_MEMORY_CHANGE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ferry/v1/control.pb.h"
#include "vmm/memory_transaction.h"

namespace ferry::agent {

// ChangeVmMemoryRequest: at most this many changes, and region names of at
// most this many bytes before the planner judges them (it allows 32; a
// longer one is refused with its length only, never echoed).
inline constexpr int kMaxMemoryChanges = 64;
inline constexpr size_t kMaxRegionNameBytes = 64;

// The request's peer-supplied sizes within their bounds: the number of
// changes and each region name's length. The first thing checked, before a
// change or a name is put into an error or a log line.
absl::Status BoundMemoryChanges(const ferry::v1::ChangeVmMemoryRequest& request);

// The transaction `request` asks for (bounded as above). Refused: no
// change, an UNSPECIFIED or unknown kind, a gpa on a remove or resize, a
// size on a remove. Everything about the map itself (names, overlaps,
// alignment, limits) is the planner's to judge (vmm::PlanMemoryTransaction).
absl::StatusOr<vmm::MemoryTransaction> TransactionFromRequest(
    const ferry::v1::ChangeVmMemoryRequest& request);

// "resize ram to 128 MiB, add dimm0 (64 MiB at 0x40000000)".
std::string TransactionString(const vmm::MemoryTransaction& t);

// The map's size after `t` applies to the VM `vm` as GetVm describes it
// (its regions, page size, vCPUs, backend and max_memory_bytes), planned
// as the VM itself will plan it; the planner's refusal otherwise. For a
// supervisor that admits a grow before it routes the change to the VM's
// process.
absl::StatusOr<uint64_t> PlannedMemoryBytes(const ferry::v1::Vm& vm,
                                            const vmm::MemoryTransaction& t);

// The maximum memory a VM of `memory_bytes` gets when its creator asks for
// `requested` (0: the default, four times memory_bytes) on an agent whose
// memory limit (--max-memory, all VMs together) is `agent_limit`: a VM can
// never grow past that limit, so more is ResourceExhausted naming it, and
// the default is capped at it (never below memory_bytes). A value that is
// no multiple of 2 MiB, or below memory_bytes, is InvalidArgument.
absl::StatusOr<uint64_t> ResolveMaxMemory(uint64_t memory_bytes, uint64_t requested,
                                          uint64_t agent_limit);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_MEMORY_CHANGE_H_
