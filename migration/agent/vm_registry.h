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
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/clock.h"
#include "migration/snapshot/snapshot.h"
#include "vmm/vm.h"

namespace ferry::agent {

// One VM of this host.
struct HostedVm {
  HostedVm() = default;
  HostedVm(const HostedVm&) = delete;
  HostedVm& operator=(const HostedVm&) = delete;
  // Ends the restore watcher, then the lazy restore (its reader), then the
  // VM: a LazyRestore must go before the VM it fills.
  ~HostedVm();

  std::string name;
  std::unique_ptr<vmm::Vm> vm;
  std::string arrived_by;      // the migration that brought it here, if any
  std::string backend_reason;  // why this backend ("as asked", or what auto found)
  // Restored from a snapshot: its directory and "eager" or "lazy"; how long
  // an eager restore took. Set before the VM is shared.
  std::string restored_from;
  std::string restore_mode;
  double eager_restore_ms = 0;
  // A lazy restore, filling or done (its stats), declared after `vm` so
  // that it is destroyed first; set before the VM is shared, then only read.
  std::unique_ptr<snapshot::LazyRestore> lazy_restore;
  // Under the owner's lock: the outgoing migration under way, if any; and
  // the failed migration that kept it paused (the destination may have run
  // it) and why. Not migrated again until resumed.
  std::string migration_id;
  std::string held_by;
  std::string held_reason;
  // Under the owner's lock: the directory a snapshot of it is being
  // written to (SnapshotVm), and how many VerifyVm calls run on it. A
  // snapshot pauses the VM: it excludes verifying, resuming, deleting and
  // migrating it, and another snapshot, until it is written.
  std::string snapshot_to;
  int verifying = 0;
  // Under the owner's lock: a ChangeVmMemory is applying a memory map
  // transaction to it. Excludes migrating, snapshotting, verifying and
  // deleting it, and another change, until it is applied or refused.
  bool changing_memory = false;
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

  // A lazy restore that has not read every page yet: its memory is not
  // whole, so it is neither migrated, snapshotted nor verified.
  bool Filling() const { return lazy_restore != nullptr && !lazy_restore->done(); }

  // Watches the lazy restore until it ends, then calls `on_end` once with
  // its result (LazyRestore::Wait), on a thread of its own; nothing once
  // EndRestoreWatch was called. Call at most once, with lazy_restore set.
  // `on_end` must not hold a reference to this HostedVm (its thread would
  // then destroy it) nor take the owner's lock (the owner ends watches
  // under it).
  void WatchRestore(std::function<void(const absl::Status&)> on_end);
  // Ends the watch and joins its thread (`on_end` is not called if the
  // restore had not ended; if it runs, this waits for it). Idempotent, any
  // thread but the watch's own; the destructor calls it. Whoever `on_end`
  // refers to calls it before going.
  void EndRestoreWatch();

 private:
  absl::Mutex watch_mu_;
  bool stop_watch_ ABSL_GUARDED_BY(watch_mu_) = false;
  std::thread restore_watcher_ ABSL_GUARDED_BY(watch_mu_);
};

// OK if `vm` may start an outgoing migration; else FailedPrecondition
// saying why: one is under way, a failed one holds it paused, it failed,
// it is paused, being snapshotted, still filling from its snapshot, its
// memory is changing, or its memory map changed more often than a
// migration carries (kMaxLayoutMemoryEpochs). Call under the owner's lock.
absl::Status CanMigrate(const HostedVm& vm);
// OK if a snapshot of `vm` may be written now; else FailedPrecondition
// saying why: it is being migrated or snapshotted or verified, it failed,
// it is still filling from a snapshot, its memory is changing, or its
// memory map changed more than a snapshot holds (kMaxLayoutMemoryEpochs).
// Call under the owner's lock.
absl::Status CanSnapshot(const HostedVm& vm);
// OK if a memory map transaction may be applied to `vm` now; else
// FailedPrecondition saying why: it is being migrated, snapshotted or
// verified, another change is under way, a failed migration holds it, or
// it is still filling from a snapshot. (The Vm refuses the rest itself: a
// failed VM, a pinned map.) Call under the owner's lock.
absl::Status CanChangeMemory(const HostedVm& vm);

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
  // limit. `doing` says what the reservation is for, as lookups word it
  // ("is being restored from /srv/snap"); empty: arriving by a migration.
  Refusal Reserve(const std::string& name, uint64_t memory_bytes, std::string doing = "");
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
  // Counts `memory_bytes` for the hosted VM `name` from now on (its memory
  // map grew or shrank). A grow must fit the memory limit with everything
  // else hosted and reserved: ResourceExhausted naming the limit if not,
  // and nothing changes. A shrink always fits. NotFound for a VM not
  // hosted (reserved only, or unknown).
  absl::Status Resize(const std::string& name, uint64_t memory_bytes);
  // The memory counted for the hosted VM `name` (0 if there is none).
  uint64_t MemoryOf(const std::string& name) const;
  // The VM named `name`: NotFound, or FailedPrecondition while it is only
  // reserved (arriving, or being created or restored), saying which.
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
  struct Reservation {
    uint64_t memory_bytes = 0;
    std::string doing;  // empty: arriving by a migration
  };
  std::map<std::string, Reservation> reserved_;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_VM_REGISTRY_H_
