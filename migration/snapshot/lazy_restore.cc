// LazyRestore (snapshot.h): the VM runs on a file-backed PageSource while a
// background reader fills the rest.
#include <algorithm>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/status_macros.h"
#include "migration/snapshot/snapshot.h"

namespace ferry::snapshot {
namespace {

// The background reader's unit: 64 pages (256 KiB of 4 KiB pages).
constexpr uint64_t kFillPages = 64;
constexpr uint64_t kNoHint = ~0ull;

// Calls fn(gpa, count) for the RAM pages [first, first + count) split at
// the memory map's slot boundaries (a run of gpas is contiguous only
// within a slot).
absl::Status ForEachGpaRun(const vmm::MemoryMap& map, uint64_t first, uint64_t count,
                           const std::function<absl::Status(uint64_t, uint64_t, uint64_t)>& fn) {
  const uint64_t ps = map.page_size();
  const uint64_t begin = first * ps, end = (first + count) * ps;
  for (const vmm::MemorySlot& s : map.slots()) {
    const uint64_t lo = std::max(begin, s.offset), hi = std::min(end, s.offset + s.size);
    if (lo >= hi) continue;
    // fn(gpa, count, first RAM page of the piece)
    RETURN_IF_ERROR(fn(s.gpa + (lo - s.offset), (hi - lo) / ps, lo / ps));
  }
  return absl::OkStatus();
}

}  // namespace

// Pages from the snapshot's memory file, read on the faulting thread (exit
// mode: the vCPU's own) and checked against their checksums. Remembers the
// latest fault for the background reader.
class SnapshotPageSource final : public vmm::PageSource {
 public:
  SnapshotPageSource(std::shared_ptr<const Snapshot> snapshot, vmm::MemoryMap map)
      : snapshot_(std::move(snapshot)), map_(std::move(map)) {}

  absl::StatusOr<vmm::FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t> out) override {
    const uint32_t ps = map_.page_size();
    if (out.size() < ps) return absl::InvalidArgumentError("a fetch buffer under a page");
    ASSIGN_OR_RETURN(const uint64_t offset, map_.GpaToOffset(gpa, ps));
    const uint64_t page = offset / ps;
    hint_.store(page, std::memory_order_relaxed);
    if (snapshot_->IsZero(page)) return vmm::FetchedPage{vmm::PageContent::kZero, nullptr};
    RETURN_IF_ERROR(Read(page, 1, out.data()));
    return vmm::FetchedPage{vmm::PageContent::kData, out.data()};
  }

  // A blocking-mode handler's batch: every run's reads in flight at once.
  absl::Status FetchRuns(absl::Span<const vmm::PageRunRequest> runs, uint32_t page_size,
                         const vmm::PageArrivedFn& arrived) override {
    if (page_size != map_.page_size())
      return absl::InvalidArgumentError("a page size that is not the snapshot's");
    std::vector<uint64_t> firsts;
    uint64_t pages = 0;
    for (const vmm::PageRunRequest& r : runs) {
      ASSIGN_OR_RETURN(const uint64_t offset,
                       map_.GpaToOffset(r.gpa, uint64_t{r.count} * page_size));
      firsts.push_back(offset / page_size);
      pages += r.count;
      if (r.count > 0) hint_.store(firsts.back() + r.count - 1, std::memory_order_relaxed);
    }
    std::vector<uint8_t> buf(pages * page_size);
    uint64_t at = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      RETURN_IF_ERROR(Read(firsts[i], runs[i].count, &buf[at * page_size]));
      at += runs[i].count;
    }
    at = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      for (uint32_t k = 0; k < runs[i].count; ++k, ++at) {
        const bool zero = snapshot_->IsZero(firsts[i] + k);
        RETURN_IF_ERROR(
            arrived(runs[i].gpa + uint64_t{k} * page_size,
                    vmm::FetchedPage{zero ? vmm::PageContent::kZero : vmm::PageContent::kData,
                                     zero ? nullptr : &buf[at * page_size]}));
      }
    }
    return absl::OkStatus();
  }

  // A ring of the calling thread's own for its reads (io_uring, single
  // issuer); without one (creation failed), pread.
  void PrepareThread() override {
    if (ring_ != nullptr) return;
    absl::StatusOr<std::unique_ptr<sys::IoUring>> ring =
        sys::IoUring::Create(Snapshot::kRingDepth, /*single_issuer=*/true);
    if (ring.ok()) ring_ = *std::move(ring);
  }

  // The RAM page of the latest fault since the last call, or kNoHint.
  uint64_t TakeHint() { return hint_.exchange(kNoHint, std::memory_order_relaxed); }

 private:
  absl::Status Read(uint64_t first, uint64_t count, uint8_t* out) {
    return snapshot_->ReadPages(first, count, out, ring_.get());
  }

  // Each faulting thread's ring (vCPU threads, userfaultfd handlers).
  static thread_local std::unique_ptr<sys::IoUring> ring_;

  const std::shared_ptr<const Snapshot> snapshot_;
  const vmm::MemoryMap map_;
  std::atomic<uint64_t> hint_{kNoHint};
};

thread_local std::unique_ptr<sys::IoUring> SnapshotPageSource::ring_;

LazyRestore::LazyRestore(std::shared_ptr<const Snapshot> snapshot, vmm::Vm* vm)
    : snapshot_(std::move(snapshot)), vm_(vm) {}

absl::StatusOr<std::unique_ptr<LazyRestore>> LazyRestore::Start(
    std::shared_ptr<const Snapshot> snapshot, vmm::FaultMode mode,
    std::unique_ptr<vmm::Vm>* vm_out) {
  const int64_t t0 = MonotonicNowNanos();
  snapshot->Prefetch();
  ASSIGN_OR_RETURN(std::unique_ptr<vmm::Vm> vm, vmm::Vm::Create(snapshot->config()));
  std::unique_ptr<LazyRestore> r(new LazyRestore(snapshot, vm.get()));
  r->stats_.started_ns = t0;
  r->source_ = std::make_shared<SnapshotPageSource>(snapshot, vm->memory().map());
  vmm::DemandPagerOptions options;
  options.mode = mode;
  options.handler_threads = 0;  // one per two vCPUs (blocking mode)
  RETURN_IF_ERROR(vm->EnableDemandPaging(r->source_, options));
  // Zero pages are known here: never read, never fetched.
  vmm::DemandPager& pager = *vm->pager();
  const vmm::MemoryMap& map = vm->memory().map();
  for (uint64_t p = 0; p < snapshot->num_pages();) {
    if (!snapshot->IsZero(p)) {
      ++p;
      continue;
    }
    uint64_t n = 1;
    while (p + n < snapshot->num_pages() && snapshot->IsZero(p + n)) ++n;
    RETURN_IF_ERROR(ForEachGpaRun(map, p, n, [&](uint64_t gpa, uint64_t count, uint64_t) {
      return pager.MarkZeroPages(gpa, count);
    }));
    r->stats_.zero_pages += n;
    p += n;
  }
  RETURN_IF_ERROR(vm->RestoreVcpuStates(snapshot->vcpu_states()));
  RETURN_IF_ERROR(vm->Start());
  r->stats_.running_ns = MonotonicNowNanos();
  r->reader_ = std::thread(&LazyRestore::Fill, r.get());
  *vm_out = std::move(vm);
  return r;
}

LazyRestore::~LazyRestore() {
  stop_.store(true);
  if (reader_.joinable()) reader_.join();
  absl::MutexLock lock(&mu_);
  if (!done_) {
    done_ = true;
    status_ = absl::CancelledError("the lazy restore was stopped before its memory was filled");
  }
}

void LazyRestore::Fill() {
  const uint64_t pages = snapshot_->num_pages();
  const uint32_t ps = snapshot_->page_size();
  const uint64_t units = (pages + kFillPages - 1) / kFillPages;
  std::vector<bool> filled(units, false);
  std::vector<uint8_t> buf(kFillPages * ps);
  vmm::DemandPager& pager = *vm_->pager();
  const vmm::MemoryMap& map = vm_->memory().map();
  // The unit at which the sweep goes on; a fault moves the reader to the
  // fault's unit (the guest is working there), then the sweep resumes.
  uint64_t sweep = 0;
  uint64_t done_units = 0;
  while (done_units < units) {
    if (stop_.load()) return;
    uint64_t unit;
    if (const uint64_t hint = source_->TakeHint(); hint != kNoHint && !filled[hint / kFillPages]) {
      unit = hint / kFillPages;
    } else {
      while (sweep < units && filled[sweep]) ++sweep;
      if (sweep == units) break;
      unit = sweep;
    }
    filled[unit] = true;
    ++done_units;
    const uint64_t first = unit * kFillPages;
    const uint64_t n = std::min(kFillPages, pages - first);
    bool missing = false;
    for (uint64_t p = first; p < first + n && !missing; ++p)
      missing = !pager.IsPresent(p) && !pager.IsKnownZero(p);
    if (!missing) continue;
    absl::Status s = snapshot_->ReadPages(first, n, buf.data());
    // Runs of data pages in, each page atomically (one a fault installed
    // meanwhile stays as it is); on KVM mapped at stage 2 behind them.
    for (uint64_t i = 0; s.ok() && i < n;) {
      if (snapshot_->IsZero(first + i) || pager.IsPresent(first + i)) {
        ++i;
        continue;
      }
      uint64_t run = 1;
      while (i + run < n && !snapshot_->IsZero(first + i + run) &&
             !pager.IsPresent(first + i + run))
        ++run;
      s = ForEachGpaRun(map, first + i, run, [&](uint64_t gpa, uint64_t count, uint64_t page) {
        RETURN_IF_ERROR(pager.InstallPages(gpa, &buf[(page - first) * ps], count));
        pages_background_.fetch_add(count, std::memory_order_relaxed);
        return vm_->PreFault(gpa, count * ps);
      });
      i += run;
    }
    if (!s.ok()) {
      Finish(absl::Status(s.code(),
                          absl::StrCat("lazy restore from ", snapshot_->dir(), ": ", s.message())));
      return;
    }
  }
  // Every unit read: nothing is missing but what a fault is installing
  // this moment, which its vCPU completes.
  while (pager.missing_pages() != 0) {
    if (stop_.load()) return;
    absl::SleepFor(absl::Microseconds(200));
  }
  // Every page is here, but a vCPU whose own read failed (exit mode) is
  // failed for good: the restore did not deliver a VM that runs.
  if (absl::Status health = vm_->Health(); !health.ok()) {
    Finish(absl::Status(health.code(), absl::StrCat("lazy restore from ", snapshot_->dir(),
                                                    ": the VM cannot run: ", health.message())));
    return;
  }
  Finish(vm_->FinishDemandPaging());
}

void LazyRestore::Finish(absl::Status status) {
  // The VM never runs on what did not check: every vCPU fails with why.
  if (!status.ok()) vm_->Fail(status);
  absl::MutexLock lock(&mu_);
  done_ = true;
  status_ = status;
  if (status.ok()) filled_ns_ = MonotonicNowNanos();
}

absl::Status LazyRestore::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
  return status_;
}

bool LazyRestore::done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

LazyRestoreStats LazyRestore::Stats() const {
  LazyRestoreStats s = stats_;
  s.pages_background = pages_background_.load(std::memory_order_relaxed);
  s.pager = vm_->pager() != nullptr ? vm_->pager()->Stats() : vmm::DemandPagerStats{};
  absl::MutexLock lock(&mu_);
  s.filled_ns = filled_ns_;
  return s;
}

}  // namespace ferry::snapshot
