// DemandPager: the destination side of missing memory. It registers all of a
// VM's RAM with userfaultfd in MISSING mode, so every page starts missing,
// and makes pages present by atomic install (UFFDIO_COPY / UFFDIO_ZEROPAGE):
// a page is visible whole or not at all, and the first install wins (a later
// one sees EEXIST and counts the page as already present).
//
// Fault modes (chosen at creation):
//   kExit      an access to a missing page exits the vCPU and its own thread
//              calls ResolveFault() and re-enters. No thread hop on the
//              fault path. Software vCPUs: UFFD_FEATURE_SIGBUS (fault_trap.h).
//              KVM vCPUs (`exit_bitmap`): the memslots' userfault bitmap
//              (exit_bitmap() below, handed to KVM); userfaultfd stays
//              registered in blocking mode with handler threads as the
//              backstop for accesses that are not a vCPU's stage-2 fault
//              (KVM's own reads, the VMM's).
//   kBlocking  the vCPU sleeps in the kernel; `handler_threads` threads poll
//              the userfaultfd (and a stop eventfd), read up to 64 fault
//              events at a time and resolve them together (ResolveFaults):
//              duplicates dropped, adjacent pages in one request, every
//              request of the batch in flight at once, each page installed
//              the moment it arrives. QEMU's model, batched. KVM vCPUs
//              fault this way (docs/kvm.md).
//
// Present-page tracking: one bit per page, set after an install (by any
// path) and cleared by Discard(). With `exit_bitmap`, a third bitmap is its
// complement for KVM: a bit is cleared (release store) after its page's
// install and set again (before the page is dropped) by Discard(). A second bit marks pages known to be zero
// (sent as zero pages): they stay unallocated holes, are not missing, and a
// vCPU touching one resolves it locally (UFFDIO_ZEROPAGE, no fetch).
// missing_pages() counts pages with neither bit, so "nothing is missing" is
// known without touching memory; once the memory leaves userfault mode a
// known-zero hole reads as zeros.
//
// Threads: every method is thread-safe. Stop() (or the destructor) stops the
// handler threads and unregisters the memory; a vCPU asleep on a missing page
// is then woken and the page reads as zeros, so stop only a VM being torn
// down, or call Finish() once nothing is missing.
#ifndef FERRY_VMM_DEMAND_PAGER_H_
#define FERRY_VMM_DEMAND_PAGER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/histogram.h"
#include "base/unique_fd.h"
#include "vmm/guest_memory.h"
#include "vmm/page_source.h"
#include "sys/userfaultfd.h"
#include "vmm/vcpu.h"

namespace ferry::vmm {

enum class FaultMode { kExit = 1, kBlocking };

absl::StatusOr<FaultMode> ParseFaultMode(absl::string_view name);
const char* FaultModeName(FaultMode mode);

struct DemandPagerOptions {
  FaultMode mode = FaultMode::kExit;
  // Blocking mode only. 0: one per two vCPUs (Vm::EnableDemandPaging).
  int handler_threads = 1;
  // The VM's vCPUs, for blocktime per vCPU (MemoryFault::vcpu).
  int vcpus = 1;
  // Exit mode for KVM vCPUs: keep exit_bitmap() (1 = not present: the
  // vCPU's stage-2 fault exits) for memslots with KVM_MEM_USERFAULT, and
  // register userfaultfd in blocking mode with `handler_threads` threads as
  // the backstop instead of SIGBUS.
  bool exit_bitmap = false;
};

struct DemandPagerStats {
  uint64_t faults = 0;            // faults taken (counted as resolution starts)
  uint64_t pages_installed = 0;   // made present by this pager (data + zero)
  uint64_t zero_pages = 0;        // of those, installed as zero pages
  uint64_t already_present = 0;   // installs that found the page present
  uint64_t missing_pages = 0;
  uint64_t known_zero = 0;        // zero pages left unallocated (not missing)
  // Zero pages allocated only because the guest read them (shmem has no
  // shared zero page to map): memory a VMM with anonymous memory would not
  // spend. Counted when a read fault resolves to a zero page.
  uint64_t zero_for_reads = 0;
  HistogramSnapshot fault_latency;  // ns; see ResolveFault()
  // Two stages of a fault that ResolveFault fetched (exit mode), in ns:
  // from the trap to the fetch starting on the vCPU's thread (the exit out
  // of the guest; faults with a trap time only), and the install
  // (UFFDIO_COPY). The fetch between them is the page source's to time
  // (the fetch channel's round trip).
  HistogramSnapshot trap_latency;
  HistogramSnapshot install_latency;
  // Blocktime: how long vCPUs waited on missing pages, from the fault to
  // the install that woke them (time a vCPU waited on two faults at once
  // counts once). Per vCPU, and in all (which adds the waits no vCPU was
  // known for).
  std::vector<uint64_t> blocked_ns_per_vcpu;
  uint64_t blocked_ns = 0;
};

class DemandPager {
 public:
  // `memory` and `source` must outlive the pager. `memory` must hold no
  // pages yet (a fresh destination): every page starts missing.
  static absl::StatusOr<std::unique_ptr<DemandPager>> Create(
      GuestMemory* memory, PageSource* source, DemandPagerOptions options);
  ~DemandPager();

  FaultMode mode() const { return options_.mode; }

  // With options.exit_bitmap: one bit per RAM page (bit p % 64 of word
  // p / 64), set while page p is not present. Lives as long as the pager;
  // KVM reads it in its fault path, the pager alone writes it. Null
  // without options.exit_bitmap.
  const std::atomic<uint64_t>* exit_bitmap() const { return exit_.get(); }

  // Readies the page source for faults resolved on the calling thread.
  void PrepareThread() { source_->PrepareThread(); }
  // The calling thread runs vCPU `vcpu`: in blocking mode its faults
  // (which name the thread) are then counted as that vCPU's blocktime.
  void RegisterVcpuThread(int vcpu);

  // Makes the page holding `fault.gpa` present, fetching it from the source
  // unless another path installed it first. Records the fault latency from
  // fault.time_ns (the trap, in exit mode; the event read, in blocking mode)
  // to the end of the install. Errors: OutOfRange for a gpa outside RAM,
  // the source's errors; memory is unchanged on error.
  absl::Status ResolveFault(const MemoryFault& fault);
  // Resolves several faults at once (a blocking-mode handler's batch): one
  // fetch per missing page however many faults wait on it, adjacent pages
  // in one request, all requests in flight together (PageSource::FetchRuns),
  // each page installed as it arrives; latency recorded per fault. A page
  // another path installed meanwhile is success. A sleeper on a page is
  // woken only after the page is present, its exit bit clear and its wait
  // counted (install without wake, then UFFDIO_WAKE), so whoever it tells
  // next sees all three. Errors as ResolveFault.
  absl::Status ResolveFaults(absl::Span<const MemoryFault> faults);

  // Installs `count` pages of data (count * page size bytes) at gpa, or
  // `count` zero pages, atomically per page. For pages pushed ahead of
  // faults (precopy, background push).
  absl::Status InstallPages(uint64_t gpa, const uint8_t* data, uint64_t count);
  absl::Status InstallZeroPages(uint64_t gpa, uint64_t count);

  // Marks `count` pages at gpa known to be zero, allocating nothing; a page
  // already present keeps its content. For zero pages pushed in postcopy.
  absl::Status MarkZeroPages(uint64_t gpa, uint64_t count);

  // Precopy loads, only while no vCPU runs (the writes are not atomic):
  // WritePages writes the data into the memory file (GuestMemory::Load: no
  // userfaultfd round trip; a page sent in an earlier round is
  // overwritten). WriteZeroPages frees pages that held data and marks every
  // page of the run known zero.
  absl::Status WritePages(uint64_t gpa, const uint8_t* data, uint64_t count);
  absl::Status WriteZeroPages(uint64_t gpa, uint64_t count);

  // Makes the pages of [gpa, gpa + count pages) missing again. Only while no
  // vCPU runs (a discard racing an access could lose the access).
  absl::Status Discard(uint64_t gpa, uint64_t count);

  uint64_t missing_pages() const;
  uint64_t known_zero_pages() const;
  bool IsPresent(uint64_t page_index) const;
  bool IsKnownZero(uint64_t page_index) const;

  // Leaves userfault mode once nothing is missing: unregisters the memory
  // and stops handler threads. FailedPrecondition while pages are missing.
  absl::Status Finish();
  // Stops handler threads and unregisters, missing pages or not.
  void Stop();

  DemandPagerStats Stats() const;

 private:
  DemandPager(GuestMemory* memory, PageSource* source, DemandPagerOptions options,
              sys::Userfaultfd uffd, UniqueFd stop_fd);

  void HandlerLoop();
  // Installs a fetched page at RAM page `page` (UFFDIO_COPY or ZEROPAGE),
  // counts it (a zero page for a read fault in zero_for_reads) and marks it
  // present; a page another path installed meanwhile is success.
  // `wake`: wake threads asleep on the page (false: UFFDIO_*_MODE_DONTWAKE).
  absl::Status InstallFetched(uint64_t page, const FetchedPage& fetched, bool read_fault,
                              bool wake = true);
  // After a fetch of RAM page `page` for `fault` failed: OK if another path
  // resolved the page meanwhile (installed it, or learnt it is zero, which
  // is installed here); otherwise fetch_error.
  absl::Status ResolvedMeanwhile(uint64_t page, const MemoryFault& fault,
                                 const absl::Status& fetch_error);
  // Marks [first, first + count) present (and no longer known zero).
  void MarkPresent(uint64_t first, uint64_t count);
  // Marks [first, first + count) known zero, except pages already present.
  void MarkKnownZero(uint64_t first, uint64_t count);
  // Records one fault's wait, from start_ns to now: its latency, and the
  // blocktime of fault.vcpu (or unattributed).
  void RecordWait(const MemoryFault& fault, int64_t now);
  int VcpuOfThread(uint32_t tid) const;
  // Counts an install's outcome in the calling thread's shard.
  void CountInstall(const sys::InstallResult& r, bool zero);
  // Calls fn on the maximal runs of pages [first, first + count) that are all
  // present or all missing; `index` is relative to `first`.
  absl::Status ForEachRun(
      uint64_t first, uint64_t count,
      const std::function<absl::Status(uint64_t index, uint64_t n, bool present)>& fn);
  absl::StatusOr<uint64_t> PageIndexOf(uint64_t gpa, uint64_t count) const;

  GuestMemory* const memory_;
  // The memory's pages when the pager was created: the bitmaps' size. The
  // map changes only after demand paging finished (Vm::ChangeMemory), so
  // pages past this were never missing.
  const uint64_t num_pages_;
  PageSource* const source_;
  const DemandPagerOptions options_;
  sys::Userfaultfd uffd_;
  UniqueFd stop_fd_;
  std::vector<std::thread> handlers_;

  std::unique_ptr<std::atomic<uint64_t>[]> present_;  // bitmap, 1 = present
  std::unique_ptr<std::atomic<uint64_t>[]> zero_;     // bitmap, 1 = known zero
  std::unique_ptr<std::atomic<uint64_t>[]> exit_;     // 1 = not present (KVM); may be null
  // userfaultfd blocks faulting threads (blocking mode, or the backstop of
  // KVM's exit mode): installs found done must wake the range.
  bool uffd_blocks() const { return options_.mode == FaultMode::kBlocking || options_.exit_bitmap; }
  // Sets or clears [first, first + count) in exit_ (no-op without it).
  void SetExitBits(uint64_t first, uint64_t count, bool exit);

  absl::Mutex stop_mu_;
  bool registered_ ABSL_GUARDED_BY(stop_mu_) = true;

  // Statistics, sharded by thread so that concurrent faults on different
  // vCPUs never write the same cache line. Stats() and missing_pages() sum.
  struct alignas(64) Shard {
    std::atomic<uint64_t> faults{0};
    std::atomic<uint64_t> installed{0};
    std::atomic<uint64_t> zero_installed{0};
    std::atomic<uint64_t> already_present{0};
    std::atomic<uint64_t> zero_for_reads{0};  // zero pages allocated by a read
    LatencyHistogram fault_latency;
    LatencyHistogram trap_latency;
    LatencyHistogram install_latency;
  };
  // Blocktime per vCPU: the end of the last wait counted, so that waits
  // that overlap count once.
  struct alignas(64) Blocked {
    std::atomic<uint64_t> ns{0};
    std::atomic<int64_t> last_end{0};
  };
  std::unique_ptr<Blocked[]> blocked_;  // options_.vcpus entries
  std::atomic<uint64_t> unattributed_ns_{0};
  std::unique_ptr<std::atomic<uint32_t>[]> vcpu_tids_;  // 0: not registered
  static constexpr int kShards = 16;
  Shard& MyShard();
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_DEMAND_PAGER_H_
