#include "migration/agent/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/errno_status.h"
#include "base/file.h"
#include "base/log_line.h"
#include "base/net.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "migration/agent/memory_change.h"
#include "migration/agent/prometheus.h"
#include "migration/api/names.h"
#include "migration/fetch/page_server.h"
#include "migration/hello.h"
#include "migration/phases.h"
#include "migration/snapshot/snapshot.h"
#include "migration/stream_auth.h"

namespace ferry::agent {

namespace v1 = ferry::v1;

namespace {

// A process started for an incoming migration has this long to receive
// its Hello before, holding nothing, it is stopped.
constexpr absl::Duration kIncomingGrace = absl::Seconds(90);

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

bool Ended(const v1::MigrationResource& m) { return !migration::FactsOf(m.phase()).under_way; }

bool PortFree(const std::string& host, int port) {
  auto l = ListenTcp(JoinHostPort(host, port));
  return l.ok();
}

// The state directory's lock: one ferryd per directory, for as long as it
// runs (a second one would adopt the first one's processes). An flock on
// DIR/lock, whose content is the holder's pid; close-on-exec, so that no
// VMM process inherits it and a ferryd restarted after a kill -9 finds it
// free.
absl::StatusOr<UniqueFd> LockStateDir(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/lock");
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path), errno);
  // A moment's grace: the ferryd before may still be exiting, or a VM
  // process it forked may not have exec'd yet (it shares the lock until).
  const absl::Time give_up = absl::Now() + absl::Seconds(2);
  int rc;
  while ((rc = flock(fd.get(), LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK &&
         absl::Now() < give_up)
    absl::SleepFor(absl::Milliseconds(50));
  if (rc != 0) {
    if (errno != EWOULDBLOCK) return ErrnoStatus(absl::StrCat("flock ", path), errno);
    char pid[32] = {};
    const ssize_t n = pread(fd.get(), pid, sizeof(pid) - 1, 0);
    return absl::FailedPreconditionError(absl::StrFormat(
        "another ferryd%s serves the state directory %s: give each agent on a host a "
        "--state-dir of its own",
        n > 0 ? absl::StrCat(" (pid ", absl::StripAsciiWhitespace(pid), ")") : "", dir));
  }
  const std::string self = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd.get(), 0) != 0 || pwrite(fd.get(), self.data(), self.size(), 0) < 0)
    return ErrnoStatus(absl::StrCat("write ", path), errno);
  return fd;
}

// A VM process can be started: `binary` (a path, or a name looked up on
// PATH) is an executable. Checked at start, not at the first VM.
absl::Status CheckVmmBinary(const std::string& binary) {
  std::vector<std::string> candidates;
  if (absl::StrContains(binary, '/')) {
    candidates.push_back(binary);
  } else if (const char* path = getenv("PATH"); path != nullptr) {
    for (absl::string_view d : absl::StrSplit(path, ':', absl::SkipEmpty()))
      candidates.push_back(absl::StrCat(d, "/", binary));
  }
  for (const std::string& c : candidates)
    if (access(c.c_str(), X_OK) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "cannot find %s, the VM process: install it beside ferryd or on PATH, set $FERRY_VMM, "
      "or run VMs inside ferryd with --in-process",
      binary));
}

}  // namespace

Supervisor::Supervisor(SupervisorOptions options)
    : options_(std::move(options)), events_(EventLog::Options{.log = options_.agent.log}) {}

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Start(SupervisorOptions options) {
  if (options.state_dir.empty()) return absl::InvalidArgumentError("--state-dir is empty");
  if (options.vmm_binary.empty()) options.vmm_binary = FindFerryVmm();
  if (mkdir(options.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    const absl::Status s = ErrnoStatus(absl::StrCat("mkdir ", options.state_dir), errno);
    return absl::Status(s.code(), absl::StrCat(s.message(),
                                               " (give --state-dir a directory this user may "
                                               "create, or run VMs inside ferryd: --in-process)"));
  }
  // Records and sockets are for root's eyes only (docs/security.md).
  if (chmod(options.state_dir.c_str(), 0700) != 0)
    return ErrnoStatus(absl::StrCat("chmod ", options.state_dir), errno);
  RETURN_IF_ERROR(CheckVmmBinary(options.vmm_binary));
  ASSIGN_OR_RETURN(UniqueFd lock, LockStateDir(options.state_dir));
  std::unique_ptr<Supervisor> s(new Supervisor(std::move(options)));
  s->lock_ = std::move(lock);
  RETURN_IF_ERROR(s->Adopt());
  s->reaper_ = std::thread(&Supervisor::ReaperLoop, s.get());
  return s;
}

Supervisor::~Supervisor() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (reaper_.joinable()) reaper_.join();
  std::vector<std::shared_ptr<Vmm>> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [key, vmm] : vmms_) all.push_back(vmm);
  }
  for (const std::shared_ptr<Vmm>& vmm : all) {
    EndForwarder(vmm);
    if (vmm->pidfd >= 0) close(vmm->pidfd);
  }
}

void Supervisor::Log(const LogLine& line) const {
  if (options_.agent.log) options_.agent.log(line.str());
}

std::shared_ptr<Supervisor::Vmm> Supervisor::Track(const VmmRecord& record, bool child) {
  auto vmm = std::make_shared<Vmm>();
  vmm->record = record;
  vmm->dir = VmmDir(options_.state_dir, record.key);
  vmm->child = child;
  if (!child) vmm->pidfd = PidfdOpen(record.pid);
  vmm->client = std::make_unique<VmmClient>(
      ControlSocket(vmm->dir),
      absl::StrFormat("the VMM process of VM %s (pid %d)", record.name, record.pid));
  // A process started for an incoming migration receives it from its
  // first moment: should it die before its first event reaches us, that
  // migration still fails with it (and its VM is not counted lost).
  if (child && record.role == "incoming" && !record.migration_id.empty()) {
    vmm->open_migrations[record.migration_id].side = "destination";
  }
  vmm->forwarder = std::thread(&Supervisor::Forward, this, vmm.get());
  return vmm;
}

void Supervisor::Forward(Vmm* vmm) {
  uint64_t next = 1;  // the process's sequence to ask from (1: all it keeps)
  while (true) {
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || vmm->forwarding_done) return;
      vmm->watch = &ctx;
    }
    (void)vmm->client->WatchEvents(next, &ctx, [&](const v1::Event& e) {
      next = e.sequence() + 1;
      if (e.kind() == v1::EVENT_KIND_EVENTS_LOST) return true;
      if (e.kind() == v1::EVENT_KIND_VM_DELETED) {
        absl::MutexLock lock(&mu_);
        vmm->vm_gone = true;
      }
      if (!e.migration_id().empty()) {
        const bool ended = e.kind() == v1::EVENT_KIND_MIGRATION_ENDED ||
                           e.kind() == v1::EVENT_KIND_REQUEST_REFUSED;
        absl::StatusOr<v1::MigrationResource> now = absl::NotFoundError("");
        if (!ended && (e.kind() == v1::EVENT_KIND_MIGRATION_STARTED ||
                       e.kind() == v1::EVENT_KIND_MIGRATION_ADMITTED ||
                       e.kind() == v1::EVENT_KIND_PHASE_CHANGED))
          now = vmm->client->GetMigration(e.migration_id());
        absl::MutexLock lock(&mu_);
        if (ended) {
          vmm->open_migrations.erase(e.migration_id());
        } else {
          Vmm::OpenMigration& m = vmm->open_migrations[e.migration_id()];
          m.side = e.side();
          if (e.kind() == v1::EVENT_KIND_PHASE_CHANGED) m.phase = e.to_phase();
          if (now.ok()) m.last = *std::move(now);
        }
      }
      events_.Publish(e);
      return true;
    });
    absl::MutexLock lock(&mu_);
    vmm->watch = nullptr;
    // The stream ended (the process is gone or restarting its log): look
    // again in a moment, unless told to stop.
    auto stop = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || vmm->forwarding_done;
    };
    if (mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Milliseconds(500))) return;
  }
}

void Supervisor::EndForwarder(const std::shared_ptr<Vmm>& vmm) {
  {
    absl::MutexLock lock(&mu_);
    vmm->forwarding_done = true;
    if (vmm->watch != nullptr) vmm->watch->TryCancel();
  }
  if (vmm->forwarder.joinable() && vmm->forwarder.get_id() != std::this_thread::get_id())
    vmm->forwarder.join();
}

absl::Status Supervisor::Adopt() {
  ASSIGN_OR_RETURN(std::vector<std::string> dirs, ListVmmDirs(options_.state_dir));
  for (const std::string& dir : dirs) {
    absl::StatusOr<VmmRecord> r = ReadRecord(dir);
    if (!r.ok()) {
      Log(LogLine(LogLevel::kWarn, "vmm.record_unreadable")
              .Kv("dir", dir)
              .Kv("reason", r.status().message()));
      RemoveVmmDir(dir);
      continue;
    }
    if (!IsOurVmm(r->pid, dir)) {
      v1::Vm vm;
      vm.set_name(r->name);
      vm.set_state(v1::VM_STATE_FAILED);
      vm.set_held_reason(absl::StrFormat(
          "its VMM process (pid %d) had exited when ferryd started: the VM is lost", r->pid));
      vm.set_error(vm.held_reason());
      Log(LogLine(LogLevel::kError, "vmm.lost").Kv("vm", r->name).Kv("reason", vm.held_reason()));
      absl::MutexLock lock(&mu_);
      lost_[r->name] = vm;
      RemoveVmmDir(dir);
      continue;
    }
    std::shared_ptr<Vmm> vmm = Track(*r, /*child=*/false);
    Log(LogLine(LogLevel::kInfo, "vmm.adopted")
            .Kv("vm", r->name)
            .Kv("pid", static_cast<int64_t>(r->pid))
            .Kv("role", r->role));
    absl::MutexLock lock(&mu_);
    vmms_[r->key] = std::move(vmm);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<int, int>> Supervisor::PickPorts() {
  if (options_.first_port == 0) return std::make_pair(0, 0);
  std::set<int> used;
  for (const auto& [key, vmm] : vmms_) {
    used.insert(vmm->record.migration_port);
    used.insert(vmm->record.fetch_port);
  }
  std::vector<int> got;
  for (int p = options_.first_port; p <= options_.last_port && got.size() < 2; ++p)
    if (!used.count(p) && PortFree(options_.listen_host, p)) got.push_back(p);
  if (got.size() < 2)
    return absl::ResourceExhaustedError(
        absl::StrFormat("--migration-ports %d-%d has no two free ports left (each VM takes two)",
                        options_.first_port, options_.last_port));
  return std::make_pair(got[0], got[1]);
}

absl::Status Supervisor::Admissible(const std::string& name, uint64_t memory_bytes) {
  if (stopping_) return absl::UnavailableError("the agent is shutting down");
  const uint64_t memory = MemoryInUse() + memory_bytes;
  int count = static_cast<int>(launching_.size());
  for (const auto& [key, vmm] : vmms_) {
    if (vmm->stopping || vmm->vm_gone) continue;  // no VM (its memory counts until it exits)
    if (vmm->record.name == name)
      return absl::AlreadyExistsError(absl::StrFormat("VM %s exists on this host", name));
    ++count;
  }
  if (launching_.count(name) || lost_.count(name))
    return absl::AlreadyExistsError(
        absl::StrFormat("VM %s exists on this host%s", name,
                        lost_.count(name) ? " (failed: delete it first)" : ""));
  if (count + 1 > options_.agent.max_vms)
    return absl::ResourceExhaustedError(
        absl::StrFormat("this agent hosts at most %d VMs (--max-vms)", options_.agent.max_vms));
  if (memory > options_.agent.max_memory)
    return absl::ResourceExhaustedError(absl::StrFormat(
        "VM %s would take this agent's guest memory to %d MiB, over its %d MiB (--max-memory)",
        name, memory >> 20, options_.agent.max_memory >> 20));
  return absl::OkStatus();
}

std::vector<migration::CheckItem> Supervisor::AdmitCheck(const std::string& name,
                                                         const vmm::VmConfig& config) {
  std::vector<migration::CheckItem> items;
  if (absl::Status s = api::ValidateVmName(name); !s.ok()) {
    items.push_back({"vm name", false, std::string(s.message())});
    return items;
  }
  absl::MutexLock lock(&mu_);
  // Admitted as AdmitIncoming admits it: by what its regions hold.
  const uint64_t memory_bytes = vmm::CreatedMemoryBytes(config);
  const absl::Status s = Admissible(name, memory_bytes);
  if (absl::IsAlreadyExists(s)) {
    items.push_back({"vm name", false, std::string(s.message())});
    return items;
  }
  items.push_back({"vm name", true, absl::StrCat("'", name, "' is free here")});
  if (!s.ok()) {
    items.push_back({"destination limits", false, std::string(s.message())});
    return items;
  }
  items.push_back({"destination limits", true,
                   absl::StrFormat("%d of %d VMs, the VM needs %d MiB", vmms_.size(),
                                   options_.agent.max_vms, memory_bytes >> 20)});
  absl::StatusOr<std::pair<int, int>> ports = PickPorts();
  if (!ports.ok())
    items.push_back({"migration ports", false, std::string(ports.status().message())});
  else
    items.push_back({"migration ports", true,
                     options_.first_port == 0
                         ? std::string("any free ports (no --migration-ports)")
                         : absl::StrFormat("%d and %d are free", ports->first, ports->second)});
  return items;
}

absl::StatusOr<std::shared_ptr<Supervisor::Vmm>> Supervisor::Launch(
    const std::string& name, uint64_t memory_bytes, uint64_t max_memory_bytes,
    const std::string& role, const std::string& migration_id) {
  RETURN_IF_ERROR(api::ValidateVmName(name));
  VmmLaunch launch;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(Admissible(name, memory_bytes));
    ASSIGN_OR_RETURN(auto ports, PickPorts());
    launching_[name] = memory_bytes;
    launch.record.migration_port = ports.first;
    launch.record.fetch_port = ports.second;
  }
  launch.binary = options_.vmm_binary;
  launch.state_dir = options_.state_dir;
  launch.record.key = NewVmmKey(name);
  launch.record.name = name;
  launch.record.role = role;
  launch.record.migration_id = migration_id;
  launch.record.memory_bytes = memory_bytes;
  launch.record.max_memory_bytes = std::max(memory_bytes, max_memory_bytes);
  launch.listen_host = options_.listen_host;
  launch.fetch_advertise_host = options_.fetch_advertise_host;
  launch.migration_token = options_.agent.migration_token;
  launch.args = options_.vmm_args;
  absl::StatusOr<VmmRecord> record = LaunchVmm(launch);
  absl::MutexLock lock(&mu_);
  launching_.erase(name);
  if (!record.ok()) {
    Log(LogLine(LogLevel::kError, "vmm.start_failed")
            .Kv("vm", name)
            .Kv("reason", record.status().message()));
    return absl::Status(
        record.status().code(),
        absl::StrCat("cannot start VM ", name, "'s process: ", record.status().message()));
  }
  // Its page server answers faulting vCPUs: before the bulk push, as in
  // ferryd (the sandboxed process cannot raise its own thread).
  if (absl::Status s = SetThreadNiceOf(record->pid, migration::fetch::kPageServerThreadName, -10);
      !s.ok())
    Log(LogLine(LogLevel::kWarn, "vmm.priority")
            .Kv("vm", name)
            .Kv("reason", s.message())
            .Kv("detail", "its page server runs at the push's priority"));
  std::shared_ptr<Vmm> vmm = Track(*record, /*child=*/true);
  vmm->creating = role == "created" || role == "restored";
  vmms_[record->key] = vmm;
  Log(LogLine(LogLevel::kInfo, "vmm.started")
          .Kv("vm", name)
          .Kv("pid", static_cast<int64_t>(record->pid))
          .Kv("role", role)
          .Kv("migration_port", record->migration_port));
  return vmm;
}

void Supervisor::Stop(const std::shared_ptr<Vmm>& vmm) {
  {
    absl::MutexLock lock(&mu_);
    if (vmm->stopping) {
      // Another thread stops it (the reaper, a delete): returns once it is
      // gone, so that a caller's next admission no longer counts it.
      const std::string key = vmm->record.key;
      auto gone = [this, &key]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return vmms_.find(key) == vmms_.end(); };
      mu_.Await(absl::Condition(&gone));
      return;
    }
    vmm->stopping = true;
  }
  kill(vmm->record.pid, SIGTERM);
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    if (vmm->child) {
      gone = waitpid(vmm->record.pid, nullptr, WNOHANG) == vmm->record.pid;
    } else {
      pollfd p{vmm->pidfd, POLLIN, 0};
      gone = vmm->pidfd < 0 || poll(&p, 1, 0) == 1;
    }
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!gone) {
    kill(vmm->record.pid, SIGKILL);
    if (vmm->child) waitpid(vmm->record.pid, nullptr, 0);
  }
  RemoveVmmDir(vmm->dir);
  EndForwarder(vmm);
  absl::MutexLock lock(&mu_);
  vmms_.erase(vmm->record.key);
  if (vmm->pidfd >= 0) close(vmm->pidfd);
  vmm->pidfd = -1;
  Log(LogLine(LogLevel::kInfo, "vmm.stopped")
          .Kv("vm", vmm->record.name)
          .Kv("pid", static_cast<int64_t>(vmm->record.pid)));
}

absl::StatusOr<std::shared_ptr<Supervisor::Vmm>> Supervisor::ByName(const std::string& name) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Vmm> best;
  for (const auto& [key, vmm] : vmms_)
    if (vmm->record.name == name && !vmm->stopping && !vmm->vm_gone &&
        (best == nullptr || vmm->record.started_unix_ms > best->record.started_unix_ms))
      best = vmm;
  if (best == nullptr) return absl::NotFoundError(absl::StrCat("no VM named ", name));
  return best;
}

absl::StatusOr<std::shared_ptr<Supervisor::Vmm>> Supervisor::ByMigration(const std::string& id) {
  std::vector<std::shared_ptr<Vmm>> all;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, vmm] : vmms_) {
      if (vmm->record.migration_id == id) return vmm;
      all.push_back(vmm);
    }
  }
  for (const std::shared_ptr<Vmm>& vmm : all)
    if (vmm->client->GetMigration(id).ok()) return vmm;
  return absl::NotFoundError(absl::StrCat("no migration ", id));
}

absl::StatusOr<v1::Vm> Supervisor::CreateVm(const v1::CreateVmRequest& request) {
  // Its maximum resolved here, against the host's limit, and asked of the
  // process as given: the process's own limit is that maximum.
  v1::CreateVmRequest r = request;
  ASSIGN_OR_RETURN(uint64_t max_memory,
                   ResolveMaxMemory(request.memory_bytes(), request.max_memory_bytes(),
                                    options_.agent.max_memory));
  r.set_max_memory_bytes(max_memory);
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm,
                   Launch(r.name(), r.memory_bytes(), max_memory, "created", ""));
  absl::StatusOr<v1::Vm> vm = vmm->client->CreateVm(r);
  Created(vmm, vm.status());
  return vm;
}

void Supervisor::Created(const std::shared_ptr<Vmm>& vmm, const absl::Status& result) {
  {
    absl::MutexLock lock(&mu_);
    vmm->creating = false;
  }
  if (!result.ok()) Stop(vmm);
}

absl::StatusOr<v1::Vm> Supervisor::RestoreVm(const v1::RestoreVmRequest& request) {
  RETURN_IF_ERROR(api::ValidateVmName(request.name()));
  if (!absl::StartsWith(request.dir(), "/"))
    return absl::InvalidArgumentError(
        absl::StrCat("the snapshot directory must be an absolute path on the agent's host, not '",
                     request.dir(), "'"));
  // The memory the process is admitted with, from the snapshot itself,
  // checked whole here before any process starts; the process opens and
  // checks it again (it trusts nothing ferryd read for it).
  ASSIGN_OR_RETURN(std::unique_ptr<snapshot::Snapshot> snap,
                   snapshot::Snapshot::Open(request.dir()));
  const uint64_t memory_bytes = vmm::CreatedMemoryBytes(snap->config());
  const uint64_t max_memory_bytes = vmm::MaxMemoryBytes(snap->config());
  snap.reset();
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm,
                   Launch(request.name(), memory_bytes, max_memory_bytes, "restored", ""));
  absl::StatusOr<v1::Vm> vm = vmm->client->RestoreVm(request);
  Created(vmm, vm.status());
  return vm;
}

absl::StatusOr<v1::SnapshotVmResponse> Supervisor::SnapshotVm(
    const v1::SnapshotVmRequest& request) {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = lost_.find(request.name()); it != lost_.end())
      return absl::FailedPreconditionError(absl::StrCat("VM '", request.name(), "' failed (",
                                                        it->second.held_reason(),
                                                        "): nothing to snapshot"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(request.name()));
  return vmm->client->SnapshotVm(request);
}

absl::StatusOr<v1::Vm> Supervisor::GetVm(const std::string& name) {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = lost_.find(name); it != lost_.end()) return it->second;
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(name));
  return vmm->client->GetVm(name);
}

std::vector<v1::Vm> Supervisor::ListVms() {
  std::vector<std::shared_ptr<Vmm>> all;
  std::vector<v1::Vm> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, vmm] : vmms_) all.push_back(vmm);
    for (const auto& [name, vm] : lost_) out.push_back(vm);
  }
  for (const std::shared_ptr<Vmm>& vmm : all)
    for (v1::Vm& vm : vmm->client->ListVms()) out.push_back(std::move(vm));
  return out;
}

absl::Status Supervisor::DeleteVm(const std::string& name) {
  {
    absl::MutexLock lock(&mu_);
    if (lost_.erase(name) > 0) return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(name));
  RETURN_IF_ERROR(vmm->client->DeleteVm(name));
  Stop(vmm);
  return absl::OkStatus();
}

absl::StatusOr<v1::VmStatsResponse> Supervisor::VmStats(const std::string& name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(name));
  return vmm->client->VmStats(name);
}

absl::StatusOr<v1::VerifyVmResponse> Supervisor::VerifyVm(const v1::VerifyVmRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(request.name()));
  return vmm->client->VerifyVm(request);
}

absl::StatusOr<v1::Vm> Supervisor::ResumeVm(const v1::ResumeVmRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(request.name()));
  return vmm->client->ResumeVm(request);
}

absl::StatusOr<v1::MigrationResource> Supervisor::StartMigration(
    const v1::StartMigrationRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByName(request.vm_name()));
  // --max-migrations: outgoing ones under way across the processes.
  int running = 0;
  for (const v1::MigrationResource& m : ListMigrations())
    if (m.direction() == "outgoing" && !Ended(m) && m.vm_name() != request.vm_name()) ++running;
  if (running >= options_.agent.max_migrations)
    return absl::ResourceExhaustedError(
        absl::StrFormat("%d outgoing migrations are under way, the most this agent runs at once "
                        "(--max-migrations)",
                        running));
  return vmm->client->StartMigration(request);
}

v1::CheckMigrationResponse Supervisor::CheckMigration(const v1::StartMigrationRequest& request) {
  absl::StatusOr<std::shared_ptr<Vmm>> vmm = ByName(request.vm_name());
  if (!vmm.ok()) {
    v1::CheckMigrationResponse out;
    v1::CheckItem* item = out.add_checks();
    item->set_name("vm");
    item->set_ok(false);
    item->set_detail(std::string(vmm.status().message()));
    return out;
  }
  return (*vmm)->client->CheckMigration(request);
}

absl::StatusOr<v1::MigrationResource> Supervisor::GetMigration(const std::string& id) {
  absl::StatusOr<std::shared_ptr<Vmm>> vmm = ByMigration(id);
  absl::StatusOr<v1::MigrationResource> m =
      vmm.ok() ? (*vmm)->client->GetMigration(id) : vmm.status();
  if (m.ok()) return m;
  // Not found, or its process is being stopped (its ended migrations are
  // kept here before the stop).
  absl::MutexLock lock(&mu_);
  if (auto it = finished_.find(id); it != finished_.end()) return it->second;
  return m.status();
}

std::vector<v1::MigrationResource> Supervisor::ListMigrations() {
  std::vector<std::shared_ptr<Vmm>> all;
  std::vector<v1::MigrationResource> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, vmm] : vmms_) all.push_back(vmm);
    for (const auto& [id, m] : finished_) out.push_back(m);
  }
  for (const std::shared_ptr<Vmm>& vmm : all)
    for (v1::MigrationResource& m : vmm->client->ListMigrations()) out.push_back(std::move(m));
  return out;
}

absl::StatusOr<v1::MigrationResource> Supervisor::CancelMigration(const std::string& id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByMigration(id));
  return vmm->client->CancelMigration(id);
}

absl::StatusOr<v1::MigrationResource> Supervisor::RecoverMigration(
    const v1::RecoverMigrationRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByMigration(request.id()));
  return vmm->client->RecoverMigration(request);
}

absl::StatusOr<v1::MigrationResource> Supervisor::SetMigrationParameters(
    const v1::SetMigrationParametersRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByMigration(request.id()));
  return vmm->client->SetMigrationParameters(request);
}

absl::StatusOr<v1::MigrationResource> Supervisor::StartPostcopy(const std::string& id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm, ByMigration(id));
  return vmm->client->StartPostcopy(id);
}

absl::Status Supervisor::WatchMigration(
    const std::string& id, absl::Duration interval,
    const std::function<bool(const v1::MigrationResource&)>& write) {
  absl::StatusOr<std::shared_ptr<Vmm>> vmm = ByMigration(id);
  if (vmm.ok()) {
    absl::Status s = (*vmm)->client->WatchMigration(id, interval, write);
    // The process was stopped as the watch ended: its final state is here.
    if (s.ok() || s.code() != absl::StatusCode::kUnavailable) return s;
  }
  absl::StatusOr<v1::MigrationResource> final = GetMigration(id);
  if (!final.ok()) return vmm.ok() ? final.status() : vmm.status();
  write(*final);
  return absl::OkStatus();
}

absl::StatusOr<int> Supervisor::AdmitIncoming(const v1::Hello& hello) {
  if (!options_.agent.migration_token.empty() &&
      !migration::TokensEqual(hello.auth_token(), options_.agent.migration_token))
    return absl::PermissionDeniedError("the migration token does not match this agent's");
  ASSIGN_OR_RETURN(migration::ValidHello valid, migration::ValidateHello(hello));
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, vmm] : vmms_)
      if (vmm->record.migration_id == hello.migration_id())
        return vmm->record.migration_port;  // a Hello sent again
  }
  const uint64_t max_memory_bytes = vmm::MaxMemoryBytes(valid.config);
  ASSIGN_OR_RETURN(std::shared_ptr<Vmm> vmm,
                   Launch(valid.name, vmm::CreatedMemoryBytes(valid.config), max_memory_bytes,
                          "incoming", hello.migration_id()));
  return vmm->record.migration_port;
}

std::string Supervisor::ExitReason(Vmm& vmm) {
  if (vmm.child) {
    int status = 0;
    if (waitpid(vmm.record.pid, &status, WNOHANG) != vmm.record.pid)
      return absl::StrFormat("its VMM process (pid %d) is gone", vmm.record.pid);
    if (WIFSIGNALED(status))
      return absl::StrFormat("its VMM process (pid %d) was killed by signal %d (%s)",
                             vmm.record.pid, WTERMSIG(status), strsignal(WTERMSIG(status)));
    return absl::StrFormat("its VMM process (pid %d) exited with status %d", vmm.record.pid,
                           WEXITSTATUS(status));
  }
  return absl::StrFormat("its VMM process (pid %d) exited (its status went to an earlier ferryd)",
                         vmm.record.pid);
}

void Supervisor::Lost(const std::shared_ptr<Vmm>& vmm) {
  const std::string reason = ExitReason(*vmm);
  // Its event stream ended with it.
  EndForwarder(vmm);
  RemoveVmmDir(vmm->dir);
  absl::MutexLock lock(&mu_);
  vmm->stopping = true;
  vmms_.erase(vmm->record.key);
  if (vmm->pidfd >= 0) close(vmm->pidfd);
  vmm->pidfd = -1;
  // A process that was receiving a VM still before switchover never ran
  // it: the source still does, and nothing is lost here.
  bool never_ran_here = vmm->record.role == "incoming" && !vmm->open_migrations.empty();
  // Its migrations that had not ended end with it (docs/operations.md,
  // the failure table: as for an agent killed in that phase); they are
  // kept as failed, under the retention.
  for (const auto& [id, open] : vmm->open_migrations) {
    never_ran_here &= open.side == "destination" && (open.phase == v1::MIGRATION_PHASE_SETUP ||
                                                     open.phase == v1::MIGRATION_PHASE_PRECOPY);
    v1::MigrationResource m = open.last;
    m.set_id(id);
    m.set_vm_name(vmm->record.name);
    m.set_direction(open.side == "destination" ? "incoming" : "outgoing");
    m.set_phase(v1::MIGRATION_PHASE_FAILED);
    m.set_error(absl::StrCat(reason, ": the migration ended with it"));
    // Its report ends here too: a client waiting for a report with an
    // outcome (as `ferry migrate` does) gets this one.
    m.mutable_report()->set_outcome(absl::StrCat("failed: ", m.error()));
    finished_[id] = m;
    finished_at_[id] = absl::Now();
    v1::Event ended;
    ended.set_kind(v1::EVENT_KIND_MIGRATION_ENDED);
    ended.set_vm_name(vmm->record.name);
    ended.set_migration_id(id);
    ended.set_side(open.side);
    ended.set_outcome("failed");
    ended.set_message(m.error());
    events_.Publish(std::move(ended));
  }
  if (never_ran_here) {
    Log(LogLine(LogLevel::kWarn, "vmm.exited")
            .Kv("vm", vmm->record.name)
            .Kv("reason", reason)
            .Kv("detail", "it was receiving the VM before switchover: the source keeps it"));
    return;
  }
  // Its VM had left (migrated away or deleted): nothing is lost, and the
  // name may be a VM on another process by now.
  if (vmm->vm_gone) {
    Log(LogLine(LogLevel::kInfo, "vmm.exited")
            .Kv("vm", vmm->record.name)
            .Kv("reason", reason)
            .Kv("detail", "its VM had left it"));
    return;
  }
  v1::Vm vm;
  vm.set_name(vmm->record.name);
  vm.set_state(v1::VM_STATE_FAILED);
  vm.set_held_reason(reason + ": the VM is lost");
  vm.set_error(vm.held_reason());  // as a VM whose vCPUs failed says why
  Log(LogLine(LogLevel::kError, "vmm.lost").Kv("vm", vm.name()).Kv("reason", vm.held_reason()));
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_VM_FAILED);
  e.set_vm_name(vm.name());
  e.set_message(vm.held_reason());
  events_.Publish(std::move(e));
  lost_[vm.name()] = vm;
}

std::optional<v1::MigrationResource> Supervisor::IncomingEndedUncompleted(Vmm& vmm) {
  if (vmm.record.migration_id.empty()) return std::nullopt;
  // The process keeps an ended session a while (to answer a late
  // Reconnect); its list shows only those still running.
  absl::StatusOr<v1::MigrationResource> m = vmm.client->GetMigration(vmm.record.migration_id);
  if (!m.ok() ||
      (m->phase() != v1::MIGRATION_PHASE_FAILED && m->phase() != v1::MIGRATION_PHASE_CANCELLED))
    return std::nullopt;
  return *std::move(m);
}

void Supervisor::ReapOnce() {
  std::vector<std::shared_ptr<Vmm>> all;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, vmm] : vmms_)
      if (!vmm->stopping) all.push_back(vmm);
  }
  for (const std::shared_ptr<Vmm>& vmm : all) {
    bool vm_gone;
    {
      absl::MutexLock lock(&mu_);
      if (vmm->creating) continue;  // its VM is not listed until the call ends
      if (vmm->stopping) continue;  // Stop() is under way: it waits for the exit
      vm_gone = vmm->vm_gone;
    }
    bool exited;
    if (vmm->child) {
      siginfo_t info{};
      exited = waitid(P_PID, vmm->record.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
               info.si_pid == vmm->record.pid;
    } else {
      pollfd p{vmm->pidfd, POLLIN, 0};
      exited = vmm->pidfd < 0 ? !IsOurVmm(vmm->record.pid, vmm->dir) : poll(&p, 1, 0) == 1;
    }
    if (exited) {
      Lost(vmm);
      continue;
    }
    // A process with nothing left: no VM, every migration ended.
    const absl::Duration age = absl::Now() - absl::FromUnixMillis(vmm->record.started_unix_ms);
    // A VM being created or restored is not listed yet (a ferryd restarted
    // meanwhile does not know the call).
    // One whose VM left (migrated away) is not waited for.
    if ((vmm->record.role == "created" || vmm->record.role == "restored") && !vm_gone &&
        age < absl::Seconds(30))
      continue;
    // Migrations first, then VMs: a VM that arrives (its migration ending)
    // between the two reads is then seen in the second.
    absl::StatusOr<std::vector<v1::MigrationResource>> ms = vmm->client->TryListMigrations();
    if (!ms.ok()) continue;
    absl::StatusOr<std::vector<v1::Vm>> vms = vmm->client->TryListVms();
    if (!vms.ok() || !vms->empty()) continue;
    bool busy = false, completed = false;
    for (const v1::MigrationResource& m : *ms) {
      // An outgoing migration has ended for good once its report is final
      // (its outcome set, a moment after its phase and its VM_DELETED): the
      // record kept below is that one.
      busy |= !Ended(m) || (m.direction() == "outgoing" && m.report().outcome().empty());
      completed |= m.phase() == v1::MIGRATION_PHASE_COMPLETED;
    }
    if (busy) continue;
    // Started for an incoming migration: kept for the grace from its start
    // (its Hello may not have come; a VM that arrived is listed a moment
    // after its migration completes), unless its migration came and ended
    // without completing: then no VM will arrive.
    std::optional<v1::MigrationResource> failed_incoming;
    if (vmm->record.role == "incoming" && ms->empty())
      failed_incoming = IncomingEndedUncompleted(*vmm);
    if (vmm->record.role == "incoming" && !vm_gone && age < kIncomingGrace &&
        (ms->empty() || completed) && !failed_incoming.has_value())
      continue;
    // Kept like every ended migration once its process is gone.
    if (failed_incoming.has_value()) ms->push_back(*std::move(failed_incoming));
    {
      absl::MutexLock lock(&mu_);
      for (const v1::MigrationResource& m : *ms) {
        finished_[m.id()] = m;
        finished_at_[m.id()] = absl::Now();
      }
      // Retention as an Agent keeps finished migrations.
      while (!finished_.empty() &&
             (static_cast<int>(finished_.size()) > options_.agent.keep_finished_count)) {
        auto oldest = std::min_element(finished_at_.begin(), finished_at_.end(),
                                       [](auto& a, auto& b) { return a.second < b.second; });
        finished_.erase(oldest->first);
        finished_at_.erase(oldest);
      }
    }
    Stop(vmm);
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (auto it = finished_at_.begin(); it != finished_at_.end();) {
    if (now - it->second > options_.agent.keep_finished) {
      finished_.erase(it->first);
      it = finished_at_.erase(it);
    } else {
      ++it;
    }
  }
}

void Supervisor::ReaperLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Milliseconds(250))) return;
    }
    ReapOnce();
  }
}

std::string Supervisor::RenderMetrics() {
  std::vector<std::shared_ptr<Vmm>> all;
  size_t processes, lost;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, vmm] : vmms_)
      if (!vmm->stopping) all.push_back(vmm);
    processes = vmms_.size();
    lost = lost_.size();
  }
  // Outside the lock, all at once: each process answers over its socket
  // within 2 s, so a few stuck ones cost a scrape 2 s, not 2 s each.
  std::vector<absl::StatusOr<std::string>> texts(all.size(), absl::UnknownError(""));
  {
    std::vector<std::thread> asks;
    for (size_t i = 0; i < all.size(); ++i)
      asks.emplace_back([&, i] { texts[i] = all[i]->client->Metrics(); });
    for (std::thread& t : asks) t.join();
  }
  std::vector<ExpositionPart> parts(1);
  int unavailable = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    // A process's exposition is small (tens of KiB); a larger one is not
    // taken.
    if (!texts[i].ok() || texts[i]->size() > (1u << 20)) {
      ++unavailable;
      continue;
    }
    parts.push_back({*std::move(texts[i]), {{"vm", all[i]->record.name}}});
  }
  parts[0].text = absl::StrFormat(
      "# HELP ferry_vmm_processes ferry-vmm processes this agent supervises.\n"
      "# TYPE ferry_vmm_processes gauge\n"
      "ferry_vmm_processes %d\n"
      "# HELP ferry_vms_lost VMs whose process exited by itself, not yet deleted.\n"
      "# TYPE ferry_vms_lost gauge\n"
      "ferry_vms_lost %d\n"
      "# HELP ferry_vmm_metrics_unavailable Processes whose figures this exposition lacks "
      "(no answer within 2 s).\n"
      "# TYPE ferry_vmm_metrics_unavailable gauge\n"
      "ferry_vmm_metrics_unavailable %d\n",
      processes, lost, unavailable);
  return MergeExpositions(parts);
}

}  // namespace ferry::agent
