#include "bench/restore.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/clock.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "migration/guest_impact.h"
#include "migration/snapshot/snapshot.h"
#include "sys/io_uring.h"
#include "vmm/digest.h"

namespace ferry::bench {
namespace {

using migration::Baseline;
using snapshot::LazyRestore;
using snapshot::Snapshot;

double Ms(int64_t ns) { return ns / 1e6; }

double Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p / 100 * v.size()));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return static_cast<double>(v[k]);
}

std::vector<uint64_t> OpsOf(const vmm::Vm& vm) {
  std::vector<uint64_t> ops;
  for (const vmm::VcpuStats& v : vm.Stats().vcpus) ops.push_back(v.counters.ops);
  return ops;
}

// Runs the guest until a baseline can be measured, snapshots it paused and
// live, and returns its baseline.
absl::StatusOr<Baseline> SnapshotGuest(const vmm::VmConfig& config, const std::string& dir,
                                       SnapshotRow* row) {
  ASSIGN_OR_RETURN(std::unique_ptr<vmm::Vm> vm, vmm::Vm::Create(config));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  RETURN_IF_ERROR(vm->Start());
  absl::SleepFor(migration::kWarmUp + migration::kBaselineWindow + absl::Milliseconds(100));
  ASSIGN_OR_RETURN(Baseline base, migration::MeasureBaseline(vm->ops_meter().Since(0),
                                                             vm->ops_meter().first_sample_ns(),
                                                             MonotonicNowNanos()));
  RETURN_IF_ERROR(vm->Pause());
  ASSIGN_OR_RETURN(snapshot::SnapshotSummary paused,
                   snapshot::WriteSnapshot(*vm, "bench", dir + "/paused"));
  row->data_bytes = paused.data_pages * config.page_size;
  row->write_ms = Ms(paused.write_ns);
  RETURN_IF_ERROR(vm->Resume());
  ASSIGN_OR_RETURN(snapshot::SnapshotSummary live,
                   snapshot::WriteLiveSnapshot(*vm, "bench", dir + "/live"));
  row->live_write_ms = Ms(live.write_ns);
  row->live_paused_ms = Ms(live.paused_ns);
  row->live_rounds = live.rounds;
  vm->Stop();
  return base;
}

// Watches a restored guest from t0 for `observe` (and until its memory is
// all present), then pauses it and checks it against a replay.
absl::Status Watch(vmm::Vm& vm, LazyRestore* lazy, int64_t t0, const Baseline& base,
                   absl::Duration observe, RestoreRow* row) {
  const int64_t end = t0 + absl::ToInt64Nanoseconds(observe);
  absl::SleepFor(absl::Nanoseconds(std::max<int64_t>(0, end - MonotonicNowNanos())));
  if (lazy != nullptr) {
    RETURN_IF_ERROR(lazy->Wait());
    const snapshot::LazyRestoreStats st = lazy->Stats();
    row->full_speed_ms = Ms(st.filled_ns - t0);
    row->faults = st.pager.faults;
    row->fault_p50_us = st.pager.fault_latency.Percentile(50) / 1e3;
    row->fault_p99_us = st.pager.fault_latency.Percentile(99) / 1e3;
    row->background_pages = st.pages_background;
  }
  RETURN_IF_ERROR(vm.Pause());
  ASSIGN_OR_RETURN(migration::GuestTimeline tl,
                   migration::Stitch(vm.ops_meter().Since(0), std::numeric_limits<int64_t>::max(),
                                     nullptr, base.counted));
  const migration::ImpactFigures f = migration::Figures(tl, base.ops_per_sec, t0, end);
  row->below_half_ms = f.below_half_ms;
  row->mgu_100ms = f.mgu_100ms;
  row->mgu_1s = f.mgu_1s;
  ASSIGN_OR_RETURN(vmm::MemoryDigest got, vm.Digest());
  ASSIGN_OR_RETURN(vmm::MemoryDigest want, vmm::ReferenceDigest(vm.config(), OpsOf(vm)));
  row->digest_match = got.digest == want.digest;
  return absl::OkStatus();
}

absl::Status DropFromPageCache(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path), errno);
  const int rc = posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  if (rc != 0) return ErrnoStatus(absl::StrCat("posix_fadvise ", path), rc);
  return absl::OkStatus();
}

absl::StatusOr<RestoreRow> RestoreOnce(const std::string& dir, const std::string& how,
                                       vmm::FaultMode mode, const Baseline& base,
                                       absl::Duration observe) {
  RestoreRow row;
  row.how = how;
  if (how == "lazy-cold")
    RETURN_IF_ERROR(DropFromPageCache(absl::StrCat(dir, "/", snapshot::kMemoryFile)));
  const int64_t t0 = MonotonicNowNanos();
  ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snap, Snapshot::Open(dir));
  if (how == "eager") {
    ASSIGN_OR_RETURN(std::unique_ptr<vmm::Vm> vm, snapshot::RestoreEager(*snap));
    RETURN_IF_ERROR(vm->Start());
    row.first_instruction_ms = row.full_speed_ms = Ms(MonotonicNowNanos() - t0);
    RETURN_IF_ERROR(Watch(*vm, nullptr, t0, base, observe, &row));
    return row;
  }
  std::unique_ptr<vmm::Vm> vm;
  ASSIGN_OR_RETURN(std::unique_ptr<LazyRestore> lazy, LazyRestore::Start(snap, mode, &vm));
  row.first_instruction_ms = Ms(lazy->Stats().running_ns - t0);
  absl::Status s = Watch(*vm, lazy.get(), t0, base, observe, &row);
  lazy.reset();  // before the VM
  RETURN_IF_ERROR(s);
  return row;
}

absl::StatusOr<RestoreReference> MeasureReference(const std::string& dir) {
  RestoreReference ref;
  ASSIGN_OR_RETURN(std::unique_ptr<Snapshot> snap, Snapshot::Open(dir));
  const std::string path = absl::StrCat(dir, "/", snapshot::kMemoryFile);
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path), errno);
  const uint32_t ps = snap->page_size();
  std::vector<uint64_t> data;
  for (uint64_t p = 0; p < snap->num_pages(); ++p)
    if (!snap->IsZero(p)) data.push_back(p);
  if (data.empty()) return ref;
  // Cold: the data pages in order, 1 MiB reads at most, after a drop.
  RETURN_IF_ERROR(DropFromPageCache(path));
  std::vector<uint8_t> buf(1 << 20);
  const int64_t c0 = MonotonicNowNanos();
  for (size_t i = 0; i < data.size();) {
    size_t n = 1;
    while (i + n < data.size() && data[i + n] == data[i] + n && n * ps < buf.size()) ++n;
    if (pread(fd.get(), buf.data(), n * ps, static_cast<off_t>(data[i] * ps)) < 0)
      return ErrnoStatus(absl::StrCat("read ", path), errno);
    i += n;
  }
  ref.cold_read_gbps = data.size() * ps * 8.0 / (MonotonicNowNanos() - c0);
  // Warm now (just read): 4 KiB random reads through io_uring, one at a time.
  ASSIGN_OR_RETURN(std::unique_ptr<sys::IoUring> ring, sys::IoUring::Create(4, true));
  std::mt19937_64 rng(7);
  std::vector<int64_t> lat;
  for (int i = 0; i < 20000; ++i) {
    const uint64_t p = data[rng() % data.size()];
    const int64_t t = MonotonicNowNanos();
    RETURN_IF_ERROR(ring->PrepareRead(fd.get(), buf.data(), ps, 1, p * ps));
    RETURN_IF_ERROR(ring->SubmitAndWait(1));
    sys::IoCompletion c;
    if (!ring->PopCompletion(&c) || c.result != static_cast<int32_t>(ps))
      return absl::InternalError("a page-cache reference read came back short");
    lat.push_back(MonotonicNowNanos() - t);
  }
  ref.page_cache_read_p50_us = Percentile(lat, 50) / 1e3;
  ref.page_cache_read_p99_us = Percentile(lat, 99) / 1e3;
  return ref;
}

absl::StatusOr<uint64_t> ResidentBytes(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path), errno);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  const size_t len = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) return ErrnoStatus(absl::StrCat("mmap ", path), errno);
  const long page = sysconf(_SC_PAGESIZE);
  std::vector<unsigned char> vec((len + page - 1) / page);
  const int rc = mincore(map, len, vec.data());
  const int err = errno;
  munmap(map, len);
  if (rc != 0) return ErrnoStatus("mincore", err);
  uint64_t resident = 0;
  for (unsigned char v : vec) resident += v & 1;
  return resident * page;
}

absl::StatusOr<ClonesRow> RunClones(const std::string& dir, int n, vmm::FaultMode mode) {
  ClonesRow row;
  row.clones = n;
  ASSIGN_OR_RETURN(std::shared_ptr<const Snapshot> snap, Snapshot::Open(dir));
  row.memory_bytes = snap->config().memory_bytes;
  std::vector<std::unique_ptr<vmm::Vm>> vms(n);
  std::vector<std::unique_ptr<LazyRestore>> lazies(n);
  std::vector<int64_t> start_ns;
  const int64_t t0 = MonotonicNowNanos();
  absl::Status s;
  for (int i = 0; i < n && s.ok(); ++i) {
    const int64_t t = MonotonicNowNanos();
    absl::StatusOr<std::unique_ptr<LazyRestore>> r = LazyRestore::Start(snap, mode, &vms[i]);
    if (!r.ok()) {
      s = r.status();
      break;
    }
    lazies[i] = *std::move(r);
    start_ns.push_back(lazies[i]->Stats().running_ns - t);
  }
  int64_t last_filled = t0;
  for (int i = 0; i < n && s.ok(); ++i) {
    s = lazies[i]->Wait();
    if (s.ok()) last_filled = std::max(last_filled, lazies[i]->Stats().filled_ns);
  }
  row.digests_match = s.ok();
  std::vector<int64_t> guest_bytes;
  // All paused first: a replay is as long as its guest ran.
  for (int i = 0; i < n && s.ok(); ++i) s = vms[i]->Pause();
  for (int i = 0; i < n && s.ok(); ++i) {
    absl::StatusOr<uint64_t> bytes = vms[i]->memory().AllocatedBytes();
    if (bytes.ok()) guest_bytes.push_back(static_cast<int64_t>(*bytes));
    absl::StatusOr<vmm::MemoryDigest> got = vms[i]->Digest();
    absl::StatusOr<vmm::MemoryDigest> want = vmm::ReferenceDigest(vms[i]->config(), OpsOf(*vms[i]));
    if (!got.ok() || !want.ok()) {
      s = !got.ok() ? got.status() : want.status();
      break;
    }
    row.digests_match &= got->digest == want->digest;
  }
  for (auto& l : lazies) l.reset();  // before the VMs
  RETURN_IF_ERROR(s);
  row.start_ms_median = Percentile(start_ns, 50) / 1e6;
  row.start_ms_max = *std::max_element(start_ns.begin(), start_ns.end()) / 1e6;
  row.all_filled_ms = Ms(last_filled - t0);
  row.guest_bytes_per_clone = static_cast<uint64_t>(Percentile(guest_bytes, 50));
  ASSIGN_OR_RETURN(row.shared_page_cache_bytes,
                   ResidentBytes(absl::StrCat(dir, "/", snapshot::kMemoryFile)));
  return row;
}

// Removes a snapshot directory this bench wrote.
void RemoveSnapshot(const std::string& dir) {
  unlink(absl::StrCat(dir, "/", snapshot::kManifestFile).c_str());
  unlink(absl::StrCat(dir, "/", snapshot::kMemoryFile).c_str());
  rmdir(dir.c_str());
}

}  // namespace

absl::StatusOr<RestoreBenchResult> RunRestoreBench(const RestoreBenchOptions& options) {
  std::string root = options.dir;
  if (root.empty()) root = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
  std::string base_dir = absl::StrCat(root, "/ferry-bench-restoreXXXXXX");
  if (mkdtemp(base_dir.data()) == nullptr)
    return ErrnoStatus(absl::StrCat("mkdtemp ", base_dir), errno);
  RestoreBenchResult out;
  absl::Status status;
  std::vector<std::string> written;
  bool clones_done = false;
  for (uint64_t memory : options.memory_bytes) {
    for (vmm::WorkloadKind kind : options.workloads) {
      if (!status.ok()) break;
      vmm::VmConfig config;
      config.memory_bytes = memory;
      config.vcpus = options.vcpus;
      config.workload.kind = kind;
      const std::string name = absl::StrFormat("%s-%dM", vmm::WorkloadKindName(kind), memory >> 20);
      const std::string dir = absl::StrCat(base_dir, "/", name);
      if (mkdir(dir.c_str(), 0700) != 0) {
        status = ErrnoStatus(absl::StrCat("mkdir ", dir), errno);
        break;
      }
      written.push_back(dir);
      SnapshotRow snap;
      snap.workload = vmm::WorkloadKindName(kind);
      snap.memory_bytes = memory;
      absl::StatusOr<Baseline> base = SnapshotGuest(config, dir, &snap);
      if (!base.ok()) {
        status = base.status();
        break;
      }
      out.snapshots.push_back(snap);
      RemoveSnapshot(dir + "/live");
      const std::string paused = dir + "/paused";
      if (out.restores.empty()) {
        absl::StatusOr<RestoreReference> ref = MeasureReference(paused);
        if (!ref.ok()) {
          status = ref.status();
          break;
        }
        out.reference = *ref;
      }
      for (const char* how : {"eager", "lazy", "lazy-cold"}) {
        absl::StatusOr<RestoreRow> row =
            RestoreOnce(paused, how, options.fault_mode, *base, options.observe);
        if (!row.ok()) {
          status = row.status();
          break;
        }
        row->workload = snap.workload;
        row->memory_bytes = memory;
        row->data_bytes = snap.data_bytes;
        if (row->how == "lazy-cold" && out.reference.cold_read_gbps > 0)
          row->limit_ms = snap.data_bytes * 8.0 / out.reference.cold_read_gbps / 1e6;
        out.restores.push_back(*row);
      }
      if (status.ok() && !clones_done && options.clones > 0 && kind == vmm::WorkloadKind::kZipf) {
        absl::StatusOr<ClonesRow> clones = RunClones(paused, options.clones, options.fault_mode);
        if (!clones.ok()) {
          status = clones.status();
        } else {
          out.clones = *clones;
          clones_done = true;
        }
      }
      RemoveSnapshot(paused);
    }
  }
  for (const std::string& d : written) {
    RemoveSnapshot(d + "/live");
    RemoveSnapshot(d + "/paused");
    rmdir(d.c_str());
  }
  rmdir(base_dir.c_str());
  RETURN_IF_ERROR(status);
  return out;
}

}  // namespace ferry::bench
