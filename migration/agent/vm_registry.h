// VmRegistry: the VMs this agent hosts, by name, and the admission limits
// that bound them (AgentOptions::max_vms, max_memory). A VM being created
// or arriving by a migration holds a reservation under its name until it
// is added (or the reservation is dropped): the name is taken and its
// memory counts against the limit meanwhile.
//
// Ownership: the registry shares each HostedVm with whoever looked it up;
// a removed VM lives on until its last holder lets go.
//
// Threads: thread-compatible. The registry has no lock of its own; its
// owner (Agent) serializes every call under its mutex, and the HostedVm
// fields marked "under the owner's lock" are read and written under that
// same mutex.
//
//   VmRegistry registry({.max_vms = 4, .max_memory = 8ull << 30});
//   if (registry.Reserve("web", 1 << 30) != VmRegistry::Refusal::kNone) ...
//   registry.Add("web", 1 << 30, std::move(hosted));  // ends the reservation
#ifndef FERRY_MIGRATION_AGENT_VM_REGISTRY_H_
#define FERRY_MIGRATION_AGENT_VM_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/clock.h"
#include "vmm/vm.h"

namespace ferry::agent {

// One VM of this host.
struct HostedVm {
  std::string name;
  std::unique_ptr<vmm::Vm> vm;
  std::string arrived_by;      // the migration that brought it here, if any
  std::string backend_reason;  // why this backend ("as asked", or what auto found)
  // Under the owner's lock: the outgoing migration under way, if any; and
  // the failed migration that kept it paused (the destination may have run
  // it) and why. Not migrated again until resumed.
  std::string migration_id;
  std::string held_by;
  std::string held_reason;
  // Under stats_mu (set before the VM is shared): guest ops/s between two
  // VmStats calls; the first call's is over the VM's life here (since it
  // was created or arrived).
  absl::Mutex stats_mu;
  int64_t last_t = MonotonicNowNanos();
  uint64_t last_ops = 0;  // at last_t
  double last_rate = 0;

  // Guest ops/s since the last call more than 50 ms ago, given the ops the
  // guest has run in all (`total_ops`). Takes stats_mu.
  double OpsPerSec(uint64_t total_ops);
};

// OK if `vm` may start an outgoing migration; else FailedPrecondition
// saying why: one is under way, a failed one holds it paused, or it is
// paused. Call under the owner's lock.
absl::Status CanMigrate(const HostedVm& vm);

class VmRegistry {
 public:
  struct Limits {
    int max_vms = 64;
    uint64_t max_memory = 64ull << 30;  // all VMs and reservations together
  };
  // Why a reservation was refused; the caller words it for its audience
  // (a client creating a VM, or a source migrating one here).
  enum class Refusal { kNone, kNameTaken, kVmLimit, kMemoryLimit };

  explicit VmRegistry(Limits limits) : limits_(limits) {}
  const Limits& limits() const { return limits_; }

  // Reserves `name` with `memory_bytes`, or says why not: the name is
  // hosted or reserved, or one more VM or that much memory would pass a
  // limit.
  Refusal Reserve(const std::string& name, uint64_t memory_bytes);
  // What Reserve would answer now, reserving nothing (preflight checks).
  Refusal WouldRefuse(const std::string& name, uint64_t memory_bytes) const;
  // `refusal` as a Status (OK for kNone), worded for a client creating the
  // VM `name` of `memory_bytes` here, or (`incoming`) for the source of a
  // migration bringing it here.
  absl::Status RefusalStatus(Refusal refusal, const std::string& name, uint64_t memory_bytes,
                             bool incoming) const;
  // Drops the reservation of `name`, if any.
  void Unreserve(const std::string& name);
  bool IsReserved(const std::string& name) const { return reserved_.count(name) > 0; }

  // Hosts `vm` under `name` (replacing its reservation), counting
  // `memory_bytes` against the limit.
  void Add(const std::string& name, uint64_t memory_bytes, std::shared_ptr<HostedVm> vm);
  // The VM named `name`: NotFound, or FailedPrecondition while it is only
  // reserved (arriving, or being created).
  absl::StatusOr<std::shared_ptr<HostedVm>> Find(const std::string& name) const;
  // Removes and returns the VM named `name`; null if there is none.
  std::shared_ptr<HostedVm> Remove(const std::string& name);
  // Every hosted VM, by name; then empties the registry (reservations too).
  std::vector<std::shared_ptr<HostedVm>> TakeAll();

  std::vector<std::shared_ptr<HostedVm>> All() const;
  // VMs hosted plus reserved, and their memory.
  int count() const { return static_cast<int>(vms_.size() + reserved_.size()); }
  uint64_t MemoryInUse() const;

 private:
  struct Slot {
    std::shared_ptr<HostedVm> vm;
    uint64_t memory_bytes = 0;
  };
  const Limits limits_;
  std::map<std::string, Slot> vms_;
  std::map<std::string, uint64_t> reserved_;  // name -> bytes
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_VM_REGISTRY_H_
