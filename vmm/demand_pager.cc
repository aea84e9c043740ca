#include "vmm/demand_pager.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "vmm/fault_trap.h"

namespace ferry::vmm {
namespace {

constexpr uint32_t kMaxPageSize = 4096;
constexpr size_t kEventsPerRead = 64;

}  // namespace

absl::StatusOr<FaultMode> ParseFaultMode(absl::string_view name) {
  if (name == "exit") return FaultMode::kExit;
  if (name == "blocking") return FaultMode::kBlocking;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown fault mode '", name, "': choose exit or blocking"));
}

const char* FaultModeName(FaultMode mode) {
  return mode == FaultMode::kExit ? "exit" : "blocking";
}

absl::StatusOr<std::unique_ptr<DemandPager>> DemandPager::Create(
    GuestMemory* memory, PageSource* source, DemandPagerOptions options) {
  if (memory->page_size() > kMaxPageSize)
    return absl::UnimplementedError("demand paging supports 4 KiB pages only");
  if (options.exit_bitmap && options.mode != FaultMode::kExit)
    return absl::InvalidArgumentError("an exit bitmap is for exit mode");
  const bool blocks = options.mode == FaultMode::kBlocking || options.exit_bitmap;
  if (blocks && options.handler_threads < 1)
    return absl::InvalidArgumentError(options.exit_bitmap
                                          ? "exit mode on KVM needs a backstop handler thread"
                                          : "blocking mode needs a handler thread");
  ASSIGN_OR_RETURN(std::vector<bool> present, memory->PresentPages());
  for (bool p : present)
    if (p)
      return absl::FailedPreconditionError(
          "demand paging needs empty guest memory: some pages are already present");
  uint64_t features = UFFD_FEATURE_MISSING_SHMEM;
  features |= blocks ? UFFD_FEATURE_THREAD_ID : UFFD_FEATURE_SIGBUS;
  ASSIGN_OR_RETURN(sys::Userfaultfd uffd, sys::Userfaultfd::Open(features));
  ASSIGN_OR_RETURN(uint64_t ioctls, uffd.Register(memory->host(), memory->size(),
                                                  UFFDIO_REGISTER_MODE_MISSING));
  const uint64_t needed = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) |
                          (1ull << _UFFDIO_WAKE);
  if ((ioctls & needed) != needed)
    return absl::FailedPreconditionError(absl::StrFormat(
        "userfaultfd on guest memory lacks COPY/ZEROPAGE/WAKE (ioctls %#x)", ioctls));
  if (!blocks) RETURN_IF_ERROR(InstallFaultTrapHandler());
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop.valid()) return ErrnoStatus("eventfd", errno);
  auto pager = std::unique_ptr<DemandPager>(
      new DemandPager(memory, source, options, std::move(uffd), std::move(stop)));
  if (blocks)
    for (int i = 0; i < options.handler_threads; ++i)
      pager->handlers_.emplace_back(&DemandPager::HandlerLoop, pager.get());
  return pager;
}

DemandPager::DemandPager(GuestMemory* memory, PageSource* source, DemandPagerOptions options,
                         sys::Userfaultfd uffd, UniqueFd stop_fd)
    : memory_(memory),
      num_pages_(memory->num_pages()),
      source_(source),
      options_(options),
      uffd_(std::move(uffd)),
      stop_fd_(std::move(stop_fd)),
      present_(new std::atomic<uint64_t>[(memory->num_pages() + 63) / 64]()),
      zero_(new std::atomic<uint64_t>[(memory->num_pages() + 63) / 64]()),
      exit_(options.exit_bitmap ? new std::atomic<uint64_t>[(memory->num_pages() + 63) / 64]()
                                : nullptr),
      blocked_(new Blocked[std::max(options.vcpus, 1)]),
      vcpu_tids_(new std::atomic<uint32_t>[std::max(options.vcpus, 1)]()),
      shards_(new Shard[kShards]) {
  if (exit_) SetExitBits(0, memory->num_pages(), true);  // every page starts missing
}

void DemandPager::SetExitBits(uint64_t first, uint64_t count, bool exit) {
  if (!exit_) return;
  for (uint64_t p = first; p < first + count; ++p) {
    const uint64_t bit = 1ull << (p % 64);
    if (exit) {
      exit_[p / 64].fetch_or(bit, std::memory_order_release);
    } else {
      exit_[p / 64].fetch_and(~bit, std::memory_order_release);
    }
  }
}

void DemandPager::RegisterVcpuThread(int vcpu) {
  if (vcpu >= 0 && vcpu < options_.vcpus)
    vcpu_tids_[vcpu].store(static_cast<uint32_t>(::gettid()), std::memory_order_release);
}

int DemandPager::VcpuOfThread(uint32_t tid) const {
  for (int v = 0; v < options_.vcpus; ++v)
    if (vcpu_tids_[v].load(std::memory_order_acquire) == tid) return v;
  return -1;
}

void DemandPager::RecordWait(const MemoryFault& fault, int64_t now) {
  if (fault.time_ns <= 0 || now < fault.time_ns) return;
  MyShard().fault_latency.Record(now - fault.time_ns);
  if (fault.vcpu < 0 || fault.vcpu >= options_.vcpus) {
    unattributed_ns_.fetch_add(now - fault.time_ns, std::memory_order_relaxed);
    return;
  }
  // A vCPU waits on one page at a time; a second event for the same wait
  // (a retried fault, a duplicate) must not count its time twice.
  Blocked& b = blocked_[fault.vcpu];
  int64_t prev = b.last_end.load(std::memory_order_relaxed);
  while (prev < now && !b.last_end.compare_exchange_weak(prev, now)) {
  }
  if (prev >= now) return;  // covered by a wait already counted
  b.ns.fetch_add(now - std::max(fault.time_ns, prev), std::memory_order_relaxed);
}

DemandPager::Shard& DemandPager::MyShard() {
  static std::atomic<int> next{0};
  thread_local const int index = next.fetch_add(1) % kShards;
  return shards_[index];
}

uint64_t DemandPager::missing_pages() const {
  // Counted from the bitmaps (a page is missing unless present or known to
  // be zero): exact whatever the order of concurrent updates.
  // The zero word first: MarkPresent sets a page's present bit before it
  // clears its zero bit, so a page held when the scan starts is seen in one
  // of the two words whatever lands between the loads.
  const uint64_t n = num_pages_;
  uint64_t held = 0;
  for (uint64_t w = 0; w < (n + 63) / 64; ++w) {
    const uint64_t zero = zero_[w].load(std::memory_order_acquire);
    uint64_t bits = present_[w].load(std::memory_order_acquire) | zero;
    if (w == n / 64 && n % 64 != 0) bits &= (1ull << (n % 64)) - 1;
    held += __builtin_popcountll(bits);
  }
  return n - held;
}

uint64_t DemandPager::known_zero_pages() const {
  const uint64_t n = num_pages_;
  uint64_t zero = 0;
  for (uint64_t w = 0; w < (n + 63) / 64; ++w)
    zero += __builtin_popcountll(zero_[w].load(std::memory_order_acquire) &
                                 ~present_[w].load(std::memory_order_acquire));
  return zero;
}

void DemandPager::CountInstall(const sys::InstallResult& r, bool zero) {
  const uint32_t ps = memory_->page_size();
  Shard& shard = MyShard();
  shard.installed.fetch_add(r.installed / ps, std::memory_order_relaxed);
  if (zero) shard.zero_installed.fetch_add(r.installed / ps, std::memory_order_relaxed);
  if (r.already_present)
    shard.already_present.fetch_add(r.already_present / ps, std::memory_order_relaxed);
}

DemandPager::~DemandPager() { Stop(); }

absl::StatusOr<uint64_t> DemandPager::PageIndexOf(uint64_t gpa, uint64_t count) const {
  const uint32_t ps = memory_->page_size();
  if (gpa % ps != 0)
    return absl::InvalidArgumentError(
        absl::StrFormat("gpa %#x is not aligned to the %d-byte page", gpa, ps));
  ASSIGN_OR_RETURN(uint64_t offset, memory_->map().GpaToOffset(gpa, count * ps));
  if (offset / ps + count > num_pages_)
    return absl::OutOfRangeError(absl::StrFormat(
        "gpa %#x: %d pages past the %d the demand pager tracks (the map grew after it finished)",
        gpa, count, num_pages_));
  return offset / ps;
}

bool DemandPager::IsPresent(uint64_t page) const {
  return (present_[page / 64].load(std::memory_order_acquire) >> (page % 64)) & 1;
}

bool DemandPager::IsKnownZero(uint64_t page) const {
  return (zero_[page / 64].load(std::memory_order_acquire) >> (page % 64)) & 1;
}

void DemandPager::MarkPresent(uint64_t first, uint64_t count) {
  // Present first, then no longer known-zero: the page is never counted
  // missing in between.
  for (uint64_t p = first; p < first + count; ++p) {
    const uint64_t bit = 1ull << (p % 64);
    present_[p / 64].fetch_or(bit, std::memory_order_acq_rel);
    zero_[p / 64].fetch_and(~bit, std::memory_order_acq_rel);
  }
  // The pages are installed: KVM may map them (its next fault on them
  // finds them through the host mapping).
  SetExitBits(first, count, false);
}

void DemandPager::MarkKnownZero(uint64_t first, uint64_t count) {
  for (uint64_t p = first; p < first + count; ++p) {
    const uint64_t bit = 1ull << (p % 64);
    zero_[p / 64].fetch_or(bit, std::memory_order_acq_rel);
    // An install that won meanwhile keeps the page: it is not "zero and
    // missing" but present.
    if (IsPresent(p)) zero_[p / 64].fetch_and(~bit, std::memory_order_acq_rel);
  }
}

absl::Status DemandPager::ResolveFault(const MemoryFault& fault) {
  const uint32_t ps = memory_->page_size();
  const uint64_t gpa = fault.gpa & ~uint64_t{ps - 1};
  ASSIGN_OR_RETURN(uint64_t page, PageIndexOf(gpa, 1));
  uint8_t* dst = memory_->host() + page * ps;
  // Counted before the install: in blocking mode the install wakes the
  // vCPU, which may finish its workload before this thread runs again, and
  // whoever then reads the statistics must see this fault.
  Shard& shard = MyShard();
  shard.faults.fetch_add(1, std::memory_order_relaxed);
  if (IsPresent(page)) {
    // Installed by another path after this fault was taken. In blocking
    // mode that install woke the range already; waking again is harmless and
    // covers a faulter that went to sleep just after it. On KVM the exit
    // may have read the bit just before that install cleared it: it is
    // clear now, and nothing is installed twice.
    if (uffd_blocks()) RETURN_IF_ERROR(uffd_.Wake(dst, ps));
    SetExitBits(page, 1, false);
  } else if (IsKnownZero(page)) {
    // Sent as a zero page: resolved here, no fetch.
    RETURN_IF_ERROR(InstallFetched(page, FetchedPage{PageContent::kZero, nullptr},
                                   !(fault.flags & kFaultWrite)));
  } else {
    const int64_t t_start = MonotonicNowNanos();
    if (fault.time_ns > 0 && t_start >= fault.time_ns)
      shard.trap_latency.Record(t_start - fault.time_ns);
    alignas(64) uint8_t buf[kMaxPageSize];
    absl::StatusOr<FetchedPage> fetched = source_->Fetch(gpa, absl::MakeSpan(buf, ps));
    const int64_t t_fetched = MonotonicNowNanos();  // the install starts
    if (!fetched.ok()) {
      // Another path resolved the page while this fetch was under way (and
      // the source may have stopped serving since): nothing is lost, and the
      // vCPU waited until now like any other fault.
      RETURN_IF_ERROR(ResolvedMeanwhile(page, fault, fetched.status()));
      RecordWait(fault, MonotonicNowNanos());
      return absl::OkStatus();
    }
    // Exit mode: the faulting vCPU is this thread, not asleep in the kernel,
    // so the install wakes no one (UFFDIO_COPY_MODE_DONTWAKE); a backstop
    // sleeper on the same page is woken by its handler, which finds the
    // page present.
    RETURN_IF_ERROR(InstallFetched(page, *fetched, !(fault.flags & kFaultWrite),
                                   /*wake=*/options_.mode != FaultMode::kExit));
    shard.install_latency.Record(MonotonicNowNanos() - t_fetched);
  }
  RecordWait(fault, MonotonicNowNanos());
  return absl::OkStatus();
}

absl::Status DemandPager::InstallFetched(uint64_t page, const FetchedPage& fetched,
                                         bool read_fault, bool wake) {
  const uint32_t ps = memory_->page_size();
  uint8_t* dst = memory_->host() + page * ps;
  const bool zero = fetched.content == PageContent::kZero;
  absl::StatusOr<sys::InstallResult> r =
      zero ? uffd_.ZeroPage(dst, ps, wake) : uffd_.Copy(dst, fetched.data, ps, wake);
  if (!r.ok()) {
    // While this thread fetched, another path installed the page, nothing
    // was missing any more and the memory left userfault mode (the install
    // then fails with ENOENT): the page is there, which is all we wanted.
    // Likewise for a known-zero page: once nothing is missing the memory
    // leaves userfault mode with it a hole, which reads as zeros.
    // Only that: any other error (ENOMEM) leaves the page uninstalled.
    // Known zero read first (as in missing_pages()).
    const bool zero_page = IsKnownZero(page);
    if (!absl::IsNotFound(r.status()) || (!IsPresent(page) && !zero_page)) return r.status();
    r = sys::InstallResult{0, ps};
  }
  CountInstall(*r, zero);
  if (zero && read_fault) MyShard().zero_for_reads.fetch_add(1, std::memory_order_relaxed);
  MarkPresent(page, 1);
  return absl::OkStatus();
}

absl::Status DemandPager::ResolveFaults(absl::Span<const MemoryFault> faults) {
  const uint32_t ps = memory_->page_size();
  Shard& shard = MyShard();
  // Counted before any install, as in ResolveFault.
  shard.faults.fetch_add(faults.size(), std::memory_order_relaxed);
  // (page, fault) of every fault on a missing page, by page.
  std::vector<std::pair<uint64_t, const MemoryFault*>> waiting;
  waiting.reserve(faults.size());
  for (const MemoryFault& f : faults) {
    ASSIGN_OR_RETURN(uint64_t page, PageIndexOf(f.gpa & ~uint64_t{ps - 1}, 1));
    if (IsPresent(page)) {
      // Installed by another path after the fault: make sure it is awake.
      RecordWait(f, MonotonicNowNanos());
      RETURN_IF_ERROR(uffd_.Wake(memory_->host() + page * ps, ps));
      continue;
    }
    if (IsKnownZero(page)) {  // sent as a zero page: resolved here, no fetch
      RETURN_IF_ERROR(InstallFetched(page, FetchedPage{PageContent::kZero, nullptr},
                                     !(f.flags & kFaultWrite), /*wake=*/false));
      RecordWait(f, MonotonicNowNanos());
      RETURN_IF_ERROR(uffd_.Wake(memory_->host() + page * ps, ps));
      continue;
    }
    waiting.emplace_back(page, &f);
  }
  if (waiting.empty()) return absl::OkStatus();
  std::sort(waiting.begin(), waiting.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  // Distinct pages, adjacent ones in one run (runs stay within a slot).
  std::vector<PageRunRequest> runs;
  uint64_t last = ~0ull;
  for (const auto& [page, t] : waiting) {
    if (page == last) continue;
    const uint64_t gpa = memory_->map().OffsetToGpa(page * ps);
    if (!runs.empty() && page == last + 1 &&
        runs.back().gpa + uint64_t{runs.back().count} * ps == gpa) {
      ++runs.back().count;
    } else {
      runs.push_back({gpa, 1});
    }
    last = page;
  }
  absl::Status s = source_->FetchRuns(
      runs, ps, [&](uint64_t gpa, const FetchedPage& fetched) -> absl::Status {
        ASSIGN_OR_RETURN(uint64_t page, PageIndexOf(gpa, 1));
        RETURN_IF_ERROR(InstallFetched(page, fetched, /*read_fault=*/false, /*wake=*/false));
        const int64_t now = MonotonicNowNanos();
        auto range = std::equal_range(
            waiting.begin(), waiting.end(), std::make_pair(page, nullptr),
            [](const auto& a, const auto& b) { return a.first < b.first; });
        for (auto it = range.first; it != range.second; ++it) {
          RecordWait(*it->second, now);
          it->second = nullptr;  // counted
        }
        // Woken last: a sleeper resumes with its page present, its exit bit
        // clear and its wait counted.
        return uffd_.Wake(memory_->host() + page * ps, ps);
      });
  if (!s.ok()) {
    // Pages another path resolved meanwhile are not lost; any other missing
    // page is the source's failure to report. The faults whose fetch failed
    // but whose page is resolved waited until now.
    absl::Status unresolved;
    for (auto& [page, f] : waiting) {
      if (f == nullptr) continue;  // fetched
      if (absl::Status r = ResolvedMeanwhile(page, *f, s); !r.ok()) {
        unresolved.Update(r);
        continue;
      }
      RecordWait(*f, MonotonicNowNanos());
      f = nullptr;
      // Woken after its wait is counted, as above; every resolved page is
      // woken even when another one fails the batch.
      unresolved.Update(uffd_.Wake(memory_->host() + page * ps, ps));
    }
    return unresolved;
  }
  return absl::OkStatus();
}

absl::Status DemandPager::ResolvedMeanwhile(uint64_t page, const MemoryFault& fault,
                                            const absl::Status& fetch_error) {
  // Known zero read first: MarkPresent sets the present bit before it
  // clears the zero bit, so a page resolved all along is never missed.
  const bool zero = IsKnownZero(page);
  if (IsPresent(page)) return absl::OkStatus();
  // Pushed as a zero page while the fetch was under way: nothing was missing
  // any more, so the destination may have completed, the memory left
  // userfault mode (the hole reads as zeros) and the source closed the fetch
  // channel. Installed here as any known-zero fault is (an install that finds
  // the memory out of userfault mode succeeds).
  if (zero)
    return InstallFetched(page, FetchedPage{PageContent::kZero, nullptr},
                          !(fault.flags & kFaultWrite), /*wake=*/false);
  return fetch_error;
}

absl::Status DemandPager::InstallPages(uint64_t gpa, const uint8_t* data,
                                       uint64_t count) {
  const uint32_t ps = memory_->page_size();
  ASSIGN_OR_RETURN(uint64_t first, PageIndexOf(gpa, count));
  ASSIGN_OR_RETURN(sys::InstallResult r,
                   uffd_.Copy(memory_->host() + first * ps, data, count * ps));
  CountInstall(r, false);
  MarkPresent(first, count);
  return absl::OkStatus();
}

absl::Status DemandPager::InstallZeroPages(uint64_t gpa, uint64_t count) {
  const uint32_t ps = memory_->page_size();
  ASSIGN_OR_RETURN(uint64_t first, PageIndexOf(gpa, count));
  ASSIGN_OR_RETURN(sys::InstallResult r,
                   uffd_.ZeroPage(memory_->host() + first * ps, count * ps));
  CountInstall(r, true);
  MarkPresent(first, count);
  return absl::OkStatus();
}

absl::Status DemandPager::ForEachRun(
    uint64_t first, uint64_t count,
    const std::function<absl::Status(uint64_t index, uint64_t n, bool present)>& fn) {
  uint64_t i = 0;
  while (i < count) {
    uint64_t n = 1;
    const bool present = IsPresent(first + i);
    while (i + n < count && IsPresent(first + i + n) == present) ++n;
    RETURN_IF_ERROR(fn(i, n, present));
    i += n;
  }
  return absl::OkStatus();
}

absl::Status DemandPager::WritePages(uint64_t gpa, const uint8_t* data,
                                     uint64_t count) {
  const uint32_t ps = memory_->page_size();
  ASSIGN_OR_RETURN(uint64_t first, PageIndexOf(gpa, count));
  // No vCPU runs: write through the file, which userfaultfd does not watch
  // (one copy, no fault per page).
  RETURN_IF_ERROR(memory_->Load(first * ps, data, count * ps));
  Shard& shard = MyShard();
  shard.installed.fetch_add(count, std::memory_order_relaxed);
  MarkPresent(first, count);
  return absl::OkStatus();
}

absl::Status DemandPager::WriteZeroPages(uint64_t gpa, uint64_t count) {
  const uint32_t ps = memory_->page_size();
  ASSIGN_OR_RETURN(uint64_t first, PageIndexOf(gpa, count));
  // A page that holds data from an earlier round is freed; every page of
  // the run is then known zero, unallocated until a vCPU touches it.
  RETURN_IF_ERROR(ForEachRun(first, count, [&](uint64_t i, uint64_t n, bool present) {
    if (!present) return absl::OkStatus();
    SetExitBits(first + i, n, true);  // before the page goes
    RETURN_IF_ERROR(memory_->DiscardOffsets((first + i) * ps, n * ps));
    for (uint64_t p = first + i; p < first + i + n; ++p)
      present_[p / 64].fetch_and(~(1ull << (p % 64)), std::memory_order_acq_rel);
    return absl::OkStatus();
  }));
  MarkKnownZero(first, count);
  return absl::OkStatus();
}

absl::Status DemandPager::MarkZeroPages(uint64_t gpa, uint64_t count) {
  ASSIGN_OR_RETURN(uint64_t first, PageIndexOf(gpa, count));
  MarkKnownZero(first, count);
  return absl::OkStatus();
}

absl::Status DemandPager::Discard(uint64_t gpa, uint64_t count) {
  const uint32_t ps = memory_->page_size();
  ASSIGN_OR_RETURN(uint64_t first, PageIndexOf(gpa, count));
  SetExitBits(first, count, true);  // before the pages go
  RETURN_IF_ERROR(memory_->DiscardOffsets(first * ps, count * ps));
  for (uint64_t p = first; p < first + count; ++p) {
    const uint64_t bit = 1ull << (p % 64);
    present_[p / 64].fetch_and(~bit, std::memory_order_acq_rel);
    zero_[p / 64].fetch_and(~bit, std::memory_order_acq_rel);
  }
  return absl::OkStatus();
}

void DemandPager::HandlerLoop() {
  const uint32_t ps = memory_->page_size();
  const auto base = reinterpret_cast<uintptr_t>(memory_->host());
  pollfd fds[2] = {{uffd_.fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
  uffd_msg msgs[kEventsPerRead];
  source_->PrepareThread();
  while (true) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    absl::StatusOr<size_t> n = uffd_.ReadEvents(msgs, kEventsPerRead);
    if (!n.ok()) return;
    const int64_t now = MonotonicNowNanos();
    std::vector<MemoryFault> faults;
    faults.reserve(*n);
    for (size_t i = 0; i < *n; ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      const uintptr_t addr = msgs[i].arg.pagefault.address;
      MemoryFault fault;
      fault.gpa = memory_->map().OffsetToGpa((addr - base) & ~uintptr_t{ps - 1});
      fault.size = ps;
      fault.flags = (msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE)
                        ? kFaultWrite
                        : kFaultRead;
      fault.time_ns = now;
      fault.vcpu = VcpuOfThread(msgs[i].arg.pagefault.feat.ptid);
      faults.push_back(fault);
    }
    // A failed fetch leaves its pages missing and their vCPUs asleep on
    // them; the failure is the source's to report (the migration fails),
    // and Stop() wakes the sleepers when the VM is torn down.
    (void)ResolveFaults(faults);
  }
}

absl::Status DemandPager::Finish() {
  uint64_t missing = missing_pages();
  if (missing != 0)
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot leave userfault mode: %d pages are still missing", missing));
  Stop();
  return absl::OkStatus();
}

void DemandPager::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (!registered_) return;
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof(one));
  for (std::thread& t : handlers_) t.join();
  handlers_.clear();
  // Unregistering wakes any sleeper; the memory stays mapped and usable.
  (void)uffd_.Unregister(memory_->host(), num_pages_ * memory_->page_size());
  registered_ = false;
}

DemandPagerStats DemandPager::Stats() const {
  DemandPagerStats s;
  for (int i = 0; i < kShards; ++i) {
    const Shard& shard = shards_[i];
    s.faults += shard.faults.load(std::memory_order_relaxed);
    s.pages_installed += shard.installed.load(std::memory_order_relaxed);
    s.zero_pages += shard.zero_installed.load(std::memory_order_relaxed);
    s.already_present += shard.already_present.load(std::memory_order_relaxed);
    s.zero_for_reads += shard.zero_for_reads.load(std::memory_order_relaxed);
    s.fault_latency.Merge(shard.fault_latency.Snapshot());
    s.trap_latency.Merge(shard.trap_latency.Snapshot());
    s.install_latency.Merge(shard.install_latency.Snapshot());
  }
  s.missing_pages = missing_pages();
  s.known_zero = known_zero_pages();
  s.blocked_ns = unattributed_ns_.load(std::memory_order_relaxed);
  for (int v = 0; v < options_.vcpus; ++v) {
    s.blocked_ns_per_vcpu.push_back(blocked_[v].ns.load(std::memory_order_relaxed));
    s.blocked_ns += s.blocked_ns_per_vcpu.back();
  }
  return s;
}

}  // namespace ferry::vmm
