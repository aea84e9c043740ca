// DirtyLog: which pages of a running VM were written since the last look.
// The source of a migration calls Collect() once per precopy round and once
// more, with the vCPUs paused, at switchover.
//
// UffdDirtyLog is the software-vCPU implementation: userfaultfd
// write-protect in WP_ASYNC mode (a write to a protected page is let through
// by the kernel and leaves the page marked written; no event, no thread
// hop) plus PAGEMAP_SCAN with PM_SCAN_WP_MATCHING, which returns the written
// pages and re-protects them in one call. It reports exactly the pages
// written: a page that was only read is not reported. (KVM's dirty log, by
// contrast, may report pages that were only read.)
//
// Threads: Collect() from one thread at a time; the vCPUs may run meanwhile.
// A write that races with Collect() is reported by this call or the next.
//
//   ASSIGN_OR_RETURN(auto log, UffdDirtyLog::Start(&memory));
//   std::vector<uint64_t> pages;
//   RETURN_IF_ERROR(log->Collect(&pages));   // RAM page indices, ascending
#ifndef FERRY_VMM_DIRTY_LOG_H_
#define FERRY_VMM_DIRTY_LOG_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/guest_memory.h"
#include "sys/pagemap_scan.h"
#include "sys/userfaultfd.h"

namespace ferry::vmm {

class DirtyLog {
 public:
  virtual ~DirtyLog() = default;
  // Replaces *pages with the RAM page indices written since the previous
  // Collect() (or since the log started), ascending, and starts the next
  // interval.
  virtual absl::Status Collect(std::vector<uint64_t>* pages) = 0;
  // The last Collect(), with the VM paused and the log about to be torn
  // down: the same pages, possibly cheaper (nothing is re-armed).
  virtual absl::Status CollectFinal(std::vector<uint64_t>* pages) { return Collect(pages); }
  // What tracks the writes, for reports ("userfaultfd write-protect + ...").
  virtual const char* Name() const = 0;
};

class UffdDirtyLog final : public DirtyLog {
 public:
  // Write-protects all of `memory` (which must outlive the log): from now
  // on, every write is logged. Fails naming the missing facility on kernels
  // without WP_ASYNC or PAGEMAP_SCAN (Linux 6.7).
  static absl::StatusOr<std::unique_ptr<UffdDirtyLog>> Start(GuestMemory* memory);
  // Stops logging (unregisters the memory).
  ~UffdDirtyLog() override;

  absl::Status Collect(std::vector<uint64_t>* pages) override;
  // Reads the page tables without write-protecting again.
  absl::Status CollectFinal(std::vector<uint64_t>* pages) override;
  const char* Name() const override {
    return "userfaultfd write-protect (WP_ASYNC) + PAGEMAP_SCAN";
  }

 private:
  absl::Status Gather(bool rearm, std::vector<uint64_t>* pages);
  UffdDirtyLog(GuestMemory* memory, sys::Userfaultfd uffd, sys::PagemapScan scan)
      : memory_(memory), uffd_(std::move(uffd)), scan_(std::move(scan)) {}

  GuestMemory* memory_;
  sys::Userfaultfd uffd_;
  sys::PagemapScan scan_;
  std::vector<sys::PageRange> ranges_;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_DIRTY_LOG_H_
