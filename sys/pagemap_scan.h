// PagemapScan: the PAGEMAP_SCAN ioctl (Linux 6.7) on /proc/self/pagemap,
// used for dirty tracking together with userfaultfd WP_ASYNC. All raw
// PAGEMAP_SCAN calls live in pagemap_scan.cc.
//
// Threads: one PagemapScan may be used by one thread at a time.
//
//   ASSIGN_OR_RETURN(PagemapScan scan, PagemapScan::Open());
//   std::vector<PageRange> written;
//   RETURN_IF_ERROR(scan.TakeWritten(base, len, &written));  // and re-protect
#ifndef FERRY_SYS_PAGEMAP_SCAN_H_
#define FERRY_SYS_PAGEMAP_SCAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "sys/kernel_abi.h"

namespace ferry::sys {

// [start, end) in host virtual addresses.
struct PageRange {
  uintptr_t start;
  uintptr_t end;
};

class PagemapScan {
 public:
  // Opens /proc/self/pagemap and checks that the kernel knows PAGEMAP_SCAN
  // (FailedPrecondition naming Linux 6.7 otherwise).
  static absl::StatusOr<PagemapScan> Open();
  // Opens /proc/self/pagemap now and keeps it for the life of the process:
  // every later Open duplicates it, so a process that then switches user
  // and turns non-dumpable (its /proc files become root's) still can.
  // Idempotent.
  static absl::Status Hold();

  // Appends to `out` the ranges of [addr, addr + len) written since they were
  // last write-protected (userfaultfd WP_ASYNC), and write-protects them
  // again, in one pass: a write that lands during the call is either
  // reported now or by the next call, never lost.
  absl::Status TakeWritten(void* addr, size_t len, std::vector<PageRange>* out);
  // Like TakeWritten, without re-protecting: a read of the page tables only
  // (the last look at a log that is about to stop).
  absl::Status PeekWritten(void* addr, size_t len, std::vector<PageRange>* out);

 private:
  absl::Status Scan(void* addr, size_t len, bool reprotect, std::vector<PageRange>* out);

 public:

 private:
  explicit PagemapScan(UniqueFd fd) : fd_(std::move(fd)) {}

  UniqueFd fd_;
  std::vector<abi::PageRegion> regions_;
};

}  // namespace ferry::sys

#endif  // FERRY_SYS_PAGEMAP_SCAN_H_
