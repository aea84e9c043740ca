// Snapshots: a VM's memory and vCPU state in a directory, and restores from
// it, eager or lazy (docs/snapshots.md). A lazy restore is the postcopy
// destination's engine with a file as the PageSource: the VM starts at once,
// a vCPU that touches a page not yet read faults (exit mode on its own
// thread, or blocking mode through userfaultfd) and reads it from the file,
// and a background reader brings in the rest, nearest the latest fault
// first.
//
// The directory (format version kSnapshotFormatVersion):
//   snapshot.ferry  header (magic "FERRYSNP", version, manifest length,
//                   SHA-256 of the manifest) + ferry.v1.SnapshotManifest
//   memory          RAM page p at offset p * page_size; zero pages are
//                   holes (sparse), so the file can be read in place.
// Directory 0700, files 0600: a snapshot holds all of guest memory.
//
// Trust: Open() refuses a snapshot whose header, version, manifest checksum,
// layout or memory file size does not hold, before any VM exists; every
// page read is checked against its hash in the manifest (vmm::HashPage:
// accidents, not attacks), and a page that fails is never installed.
#ifndef FERRY_MIGRATION_SNAPSHOT_SNAPSHOT_H_
#define FERRY_MIGRATION_SNAPSHOT_SNAPSHOT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/unique_fd.h"
#include "ferry/v1/snapshot.pb.h"
#include "migration/snapshot/snapshot_io.h"
#include "sys/io_uring.h"
#include "vmm/page_source.h"
#include "vmm/vm.h"

namespace ferry::snapshot {

inline constexpr char kManifestFile[] = "snapshot.ferry";
inline constexpr char kMemoryFile[] = "memory";

struct SnapshotSummary {
  std::string dir;
  uint64_t memory_bytes = 0;
  uint64_t data_pages = 0;  // written to the memory file
  uint64_t zero_pages = 0;  // holes
  uint64_t guest_ops = 0;   // all vCPUs, at the snapshot
  uint64_t memory_digest = 0;
  int64_t write_ns = 0;  // memory and manifest written and synced
  // A live snapshot: the guest ran during all but the final round.
  int rounds = 1;              // passes over memory, the final one included
  uint64_t pages_written = 0;  // all rounds (a page written twice counts twice)
  int64_t paused_ns = 0;       // the guest was paused (all of write_ns unless live)
};

struct LiveSnapshotOptions {
  // The final pause comes once a round finds at most this many pages
  // written since the one before (1 MiB of 4 KiB pages), or after
  // max_rounds rounds whatever is left.
  uint64_t final_pages = 256;
  int max_rounds = 8;
};

// Writes `vm`, which must be paused (or halted), to `dir`. `dir` must not
// exist; its parent must. Everything is written into a sibling temporary
// directory, synced, then renamed to `dir`: a crash or an error leaves no
// snapshot at `dir`, never half of one. The VM is not resumed here.
absl::StatusOr<SnapshotSummary> WriteSnapshot(vmm::Vm& vm, const std::string& vm_name,
                                              const std::string& dir);

// A live snapshot of a running `vm`, as a precopy to a file: every page
// written while the guest runs, with the dirty log started first, then
// rounds of the pages written since, then a short pause for the last of
// them and the vCPU state. Returns with the VM paused (the caller resumes
// it, or leaves it stopped); on an error the VM is resumed if it was paused
// here and nothing is left at `dir`.
absl::StatusOr<SnapshotSummary> WriteLiveSnapshot(vmm::Vm& vm, const std::string& vm_name,
                                                  const std::string& dir,
                                                  const LiveSnapshotOptions& options = {});

// An opened, validated snapshot. Thread-safe: ReadPages may be called from
// many threads at once (pread).
class Snapshot {
 public:
  // Refuses (InvalidArgument / FailedPrecondition / DataLoss, naming what
  // failed) a missing or truncated file, a wrong magic, another format
  // version, a manifest whose checksum fails or does not parse, a layout a
  // VM cannot have, vCPU states or hashes whose count does not match, and a
  // memory file of another size.
  static absl::StatusOr<std::unique_ptr<Snapshot>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const vmm::VmConfig& config() const { return config_; }
  const ferry::v1::SnapshotManifest& manifest() const { return manifest_; }
  std::vector<std::string> vcpu_states() const;
  std::vector<uint64_t> vcpu_ops() const;
  uint64_t num_pages() const { return num_pages_; }
  uint32_t page_size() const { return config_.page_size; }
  // Page `page` (RAM order) is a zero page: a hole, never read.
  bool IsZero(uint64_t page) const;

  // Reads pages [first, first + count) into `out` (count * page size
  // bytes) and checks each against its hash: DataLoss naming the page on a
  // mismatch, the errno's status on a read error, OutOfRange past the end.
  // Zero pages in the range are filled with zeros without a read. With
  // `ring` (the calling thread's, at least kRingDepth deep) the reads of
  // every run of data pages are in flight at once; else pread, run by run.
  absl::Status ReadPages(uint64_t first, uint64_t count, uint8_t* out,
                         sys::IoUring* ring = nullptr) const;

  static constexpr unsigned kRingDepth = 16;

  // Asks the kernel to read the memory file into the page cache in the
  // background (POSIX_FADV_WILLNEED): a lazy restore's faults and reader
  // then find it there sooner than their own reads would bring it.
  void Prefetch() const;

 private:
  struct DataRun {
    uint8_t* dst;
    uint64_t len;
    uint64_t offset;
  };
  Snapshot() = default;
  absl::Status PreadAll(uint8_t* dst, uint64_t len, uint64_t offset) const;
  absl::Status ReadRuns(const std::vector<DataRun>& runs, sys::IoUring* ring) const;

  std::string dir_;
  ferry::v1::SnapshotManifest manifest_;
  vmm::VmConfig config_;
  uint64_t num_pages_ = 0;
  UniqueFd memory_;
};

// The VM of `snapshot`, built and filled: every page read and checked, the
// vCPU states restored. Returned paused, not started (Start() runs it on).
absl::StatusOr<std::unique_ptr<vmm::Vm>> RestoreEager(const Snapshot& snapshot);

// What a lazy restore did, for the report and the bench.
struct LazyRestoreStats {
  int64_t started_ns = 0;       // monotonic: Start() called
  int64_t running_ns = 0;       // the vCPUs were started (first instruction)
  int64_t filled_ns = 0;        // every page present (0 while not)
  uint64_t pages_background = 0;  // read by the background reader
  uint64_t zero_pages = 0;        // marked zero, never read
  vmm::DemandPagerStats pager;
};

// A lazy restore in progress: the VM runs while the background reader
// fills its memory. Contract: destroy the LazyRestore (it stops and joins
// the reader) before the VM; it holds the VM by pointer.
class LazyRestore {
 public:
  // Builds the VM of `snapshot` with demand paging from the file (`mode`
  // as Vm::ChooseFaultMode allows), marks the zero pages, restores the
  // vCPU states, starts the vCPUs and the background reader. On return the
  // guest runs. The VM is the caller's (*vm_out); errors leave nothing
  // running.
  static absl::StatusOr<std::unique_ptr<LazyRestore>> Start(
      std::shared_ptr<const Snapshot> snapshot, vmm::FaultMode mode,
      std::unique_ptr<vmm::Vm>* vm_out);
  ~LazyRestore();

  // Blocks until every page is present and demand paging finished (OK), or
  // the fill failed: a read or checksum error, which also fails the VM
  // (paused, and Health() says why). The VM never runs on a page that did
  // not check.
  absl::Status Wait();
  bool done() const;
  LazyRestoreStats Stats() const;

 private:
  LazyRestore(std::shared_ptr<const Snapshot> snapshot, vmm::Vm* vm);
  void Fill();
  void Finish(absl::Status status);

  const std::shared_ptr<const Snapshot> snapshot_;
  vmm::Vm* const vm_;
  std::shared_ptr<class SnapshotPageSource> source_;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  LazyRestoreStats stats_;  // started/running set before the reader starts
  std::atomic<uint64_t> pages_background_{0};
  mutable absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int64_t filled_ns_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry::snapshot

#endif  // FERRY_MIGRATION_SNAPSHOT_SNAPSHOT_H_
