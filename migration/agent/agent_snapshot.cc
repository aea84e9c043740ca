// Agent::SnapshotVm and Agent::RestoreVm: a VM of this agent written to a
// snapshot directory, and a new VM started from one (migration/snapshot/
// snapshot.h; docs/snapshots.md).
//
// A snapshot marks the VM (HostedVm::snapshot_to) for as long as it is
// written: verifying, resuming, deleting, migrating and snapshotting it are
// refused meanwhile, so that nothing resumes the guest under the write. A
// restore holds a reservation of the name and the memory, as CreateVm does,
// until its VM runs; a lazy restore's VM runs while its memory is read in,
// watched by a thread of its HostedVm that reports the fill's end.
#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/log_line.h"
#include "base/status_macros.h"
#include "migration/agent/agent.h"
#include "migration/api/names.h"
#include "migration/convert.h"
#include "migration/snapshot/snapshot.h"

namespace ferry::agent {
namespace {

// `dir` as an absolute path with no `.` or `..` components and no trailing
// slash ("/srv/snap/" and "/srv/./snap" are "/srv/snap"); InvalidArgument
// for a relative path (whose base would be the agent's, not the caller's)
// or the root.
absl::StatusOr<std::string> SnapshotDir(const std::string& dir) {
  if (!absl::StartsWith(dir, "/"))
    return absl::InvalidArgumentError(absl::StrCat(
        "the snapshot directory must be an absolute path on the agent's host, not '", dir, "'"));
  std::string normal = std::filesystem::path(dir).lexically_normal().string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  if (normal == "/") return absl::InvalidArgumentError("the snapshot directory cannot be /");
  return normal;
}

double MillisSince(int64_t start_ns) { return (MonotonicNowNanos() - start_ns) / 1e6; }

// Started, not paused, and some vCPU still running its workload.
bool IsRunning(const vmm::Vm& vm) {
  if (vm.paused()) return false;
  for (vmm::VcpuRunState s : vm.States())
    if (s == vmm::VcpuRunState::kRunning) return true;
  return false;
}

}  // namespace

absl::StatusOr<ferry::v1::SnapshotVmResponse> Agent::SnapshotVm(
    const ferry::v1::SnapshotVmRequest& request) {
  ferry::v1::SnapshotVmRequest r = request;
  ASSIGN_OR_RETURN(*r.mutable_dir(), SnapshotDir(request.dir()));
  std::shared_ptr<HostedVm> e;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_)
      return absl::UnavailableError("this agent is shutting down: it writes no snapshots");
    ASSIGN_OR_RETURN(e, vms_.Find(r.name()));
    RETURN_IF_ERROR(CanSnapshot(*e));
    if (r.live() && !IsRunning(*e->vm))
      return absl::FailedPreconditionError(
          absl::StrCat("a live snapshot is of a running VM: '", r.name(),
                       "' is not running (take a plain snapshot: it is written as it is)"));
    e->snapshot_to = r.dir();
  }
  // A running VM is paused for the write (WriteSnapshot wants it still);
  // one paused or halted before stays as it is. A live snapshot pauses it
  // only for its last round (WriteLiveSnapshot returns it paused, or
  // running again on an error).
  const bool was_running = !e->vm->paused();
  int64_t pause_start = MonotonicNowNanos();
  absl::Status paused;
  absl::StatusOr<snapshot::SnapshotSummary> written;
  if (r.live()) {
    written = snapshot::WriteLiveSnapshot(*e->vm, r.name(), r.dir());
    paused = written.status();
    if (written.ok()) pause_start = MonotonicNowNanos() - written->paused_ns;
  } else {
    paused = was_running ? e->vm->Pause() : absl::OkStatus();
    written = paused.ok() ? snapshot::WriteSnapshot(*e->vm, r.name(), r.dir())
                          : absl::StatusOr<snapshot::SnapshotSummary>(paused);
  }
  double paused_ms = 0;
  absl::Status resumed;
  // A failed write resumes what it paused, leave_stopped or not: the
  // operator asked for a snapshot, not for the guest to stop without one.
  if (was_running && paused.ok() && !(written.ok() && r.leave_stopped())) {
    resumed = e->vm->Resume();
    paused_ms = MillisSince(pause_start);
  }
  {
    absl::MutexLock lock(&mu_);
    e->snapshot_to.clear();
  }
  if (!written.ok()) {
    Log(LogLine(LogLevel::kWarn, "vm.snapshot_failed")
            .Kv("vm", r.name())
            .Kv("dir", r.dir())
            .Kv("reason", written.status().message()));
    return written.status();
  }
  // The snapshot is whole; a VM that cannot run on is this call's failure.
  RETURN_IF_ERROR(resumed);
  const snapshot::SnapshotSummary& w = *written;
  ferry::v1::SnapshotVmResponse out;
  out.set_dir(w.dir);
  out.set_memory_bytes(w.memory_bytes);
  out.set_data_pages(w.data_pages);
  out.set_zero_pages(w.zero_pages);
  out.set_guest_ops(w.guest_ops);
  out.set_write_ms(w.write_ns / 1e6);
  out.set_memory_digest(absl::StrFormat("%016x", w.memory_digest));
  out.set_paused_ms(paused_ms);
  if (r.live()) {
    out.set_rounds(static_cast<uint32_t>(w.rounds));
    out.set_pages_written(w.pages_written);
  }
  *out.mutable_vm() = Describe(*e);
  const bool stays_stopped = was_running && r.leave_stopped();
  Log(LogLine(LogLevel::kInfo, "vm.snapshot")
          .Kv("vm", r.name())
          .Kv("dir", w.dir)
          .Kv("memory_mib", w.memory_bytes >> 20)
          .Kv("data_pages", w.data_pages)
          .Kv("zero_pages", w.zero_pages)
          .Kv("guest_ops", w.guest_ops)
          .Kv("write_ms", out.write_ms())
          .Kv("paused_ms", paused_ms)
          .Kv("live", r.live() ? "true" : "false")
          .Kv("rounds", w.rounds)
          .Kv("left_stopped", stays_stopped ? "true" : "false"));
  events_.Publish(MakeEvent(
      ferry::v1::EVENT_KIND_VM_SNAPSHOT, r.name(), "", "",
      absl::StrFormat("snapshot written to %s: %d MiB, %d data pages, %d zero pages, %.0f ms%s",
                      w.dir, w.memory_bytes >> 20, w.data_pages, w.zero_pages, out.write_ms(),
                      stays_stopped ? "; the VM stays paused" : "")));
  return out;
}

absl::StatusOr<ferry::v1::Vm> Agent::RestoreVm(const ferry::v1::RestoreVmRequest& request) {
  RETURN_IF_ERROR(api::ValidateVmName(request.name()));
  ferry::v1::RestoreVmRequest r = request;
  ASSIGN_OR_RETURN(*r.mutable_dir(), SnapshotDir(request.dir()));
  vmm::FaultMode mode = vmm::FaultMode::kExit;
  if (r.fault_mode() != ferry::v1::FAULT_MODE_UNSPECIFIED) {
    if (!r.lazy())
      return absl::InvalidArgumentError(
          "a fault mode is for a lazy restore: an eager one reads every page before the VM runs");
    ASSIGN_OR_RETURN(mode, migration::FromProto(r.fault_mode()));
  }
  // Checked whole before anything is reserved or created.
  ASSIGN_OR_RETURN(std::unique_ptr<snapshot::Snapshot> opened, snapshot::Snapshot::Open(r.dir()));
  std::shared_ptr<const snapshot::Snapshot> snap = std::move(opened);
  const vmm::VmConfig& config = snap->config();
  // What the VM holds: its regions, if its map changed before the snapshot.
  const uint64_t memory_bytes = vmm::CreatedMemoryBytes(config);
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_)
      return absl::UnavailableError("this agent is shutting down: restore the VM elsewhere");
    RETURN_IF_ERROR(vms_.RefusalStatus(
        vms_.Reserve(r.name(), memory_bytes,
                     absl::StrCat("is being restored from ", r.dir(), r.lazy() ? "" : " (eager)")),
        r.name(), memory_bytes, /*incoming=*/false));
  }
  auto release = [&] {
    absl::MutexLock lock(&mu_);
    vms_.Unreserve(r.name());
  };
  auto entry = std::make_shared<HostedVm>();
  entry->name = r.name();
  entry->backend_reason = "as the snapshot had it";
  entry->restored_from = r.dir();
  entry->restore_mode = r.lazy() ? "lazy" : "eager";
  const int64_t start = MonotonicNowNanos();
  if (r.lazy()) {
    std::unique_ptr<vmm::Vm> vm;
    absl::StatusOr<std::unique_ptr<snapshot::LazyRestore>> lazy =
        snapshot::LazyRestore::Start(snap, mode, &vm);
    if (!lazy.ok()) {
      release();
      return lazy.status();
    }
    // The VM first, then its filler: destroyed in the other order.
    entry->vm = std::move(vm);
    entry->lazy_restore = *std::move(lazy);
  } else {
    absl::StatusOr<std::unique_ptr<vmm::Vm>> vm = snapshot::RestoreEager(*snap);
    absl::Status s = vm.status();
    if (s.ok()) s = (*vm)->Start();
    if (!s.ok()) {
      release();
      return s;
    }
    entry->vm = *std::move(vm);
    entry->eager_restore_ms = MillisSince(start);
  }
  // Its rate here, not over the ops it ran before the snapshot.
  entry->last_ops = entry->vm->Stats().total_ops;
  {
    absl::MutexLock lock(&mu_);
    vms_.Add(r.name(), memory_bytes, entry);
  }
  Log(LogLine(LogLevel::kInfo, "vm.created")
          .Kv("vm", r.name())
          .Kv("restored_from", r.dir())
          .Kv("restore", entry->restore_mode)
          .Kv("fault_mode", r.lazy() ? vmm::FaultModeName(entry->vm->fault_mode_choice().mode) : "")
          .Kv("memory_mib", memory_bytes >> 20)
          .Kv("vcpus", config.vcpus)
          .Kv("workload", vmm::WorkloadKindName(config.workload.kind))
          .Kv("backend", vmm::VmBackendName(config.backend))
          .Kv("restore_ms", r.lazy() ? MillisSince(start) : entry->eager_restore_ms));
  events_.Publish(
      MakeEvent(ferry::v1::EVENT_KIND_VM_CREATED, r.name(), "", "",
                absl::StrFormat("restored from %s (%s): %d MiB, %d vCPUs, workload %s, backend %s",
                                r.dir(), entry->restore_mode, memory_bytes >> 20, config.vcpus,
                                vmm::WorkloadKindName(config.workload.kind),
                                vmm::VmBackendName(config.backend))));
  if (r.lazy()) {
    // Not a shared_ptr: the watch must not keep its own VM alive. The
    // HostedVm joins the watch before its members go.
    const HostedVm* raw = entry.get();
    entry->WatchRestore([this, raw](const absl::Status& result) {
      const snapshot::LazyRestoreStats st = raw->lazy_restore->Stats();
      RestoreEnded(raw->name, raw->restored_from, result,
                   st.filled_ns != 0 ? (st.filled_ns - st.started_ns) / 1e6 : 0);
    });
  }
  return Describe(*entry);
}

void Agent::RestoreEnded(const std::string& name, const std::string& dir,
                         const absl::Status& result, double fill_ms) {
  if (result.ok()) {
    Log(LogLine(LogLevel::kInfo, "vm.restore_filled")
            .Kv("vm", name)
            .Kv("restored_from", dir)
            .Kv("fill_ms", fill_ms));
    events_.Publish(MakeEvent(
        ferry::v1::EVENT_KIND_VM_RESTORE_FILLED, name, "", "",
        absl::StrFormat("every page read from %s, %.0f ms after the start", dir, fill_ms)));
    return;
  }
  Log(LogLine(LogLevel::kError, "vm.restore_failed")
          .Kv("vm", name)
          .Kv("restored_from", dir)
          .Kv("reason", result.message()));
  events_.Publish(MakeEvent(ferry::v1::EVENT_KIND_VM_FAILED, name, "", "",
                            absl::StrCat("lazy restore from ", dir, " failed: ", result.message(),
                                         " (the VM is stopped for good: delete it)")));
}

}  // namespace ferry::agent
