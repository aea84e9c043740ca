#include "sys/pagemap_scan.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <atomic>
#include <cerrno>

#include "base/errno_status.h"
#include "sys/kernel_version.h"

namespace ferry::sys {
namespace {

constexpr size_t kRegionsPerCall = 512;

// The file held by PagemapScan::Hold; -1: none.
std::atomic<int> held_pagemap{-1};

}  // namespace

absl::Status PagemapScan::Hold() {
  if (held_pagemap.load() >= 0) return absl::OkStatus();
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open(/proc/self/pagemap)", errno);
  int expected = -1;
  if (!held_pagemap.compare_exchange_strong(expected, fd)) ::close(fd);
  return absl::OkStatus();
}

absl::StatusOr<PagemapScan> PagemapScan::Open() {
  const int held = held_pagemap.load();
  UniqueFd fd(held >= 0 ? ::fcntl(held, F_DUPFD_CLOEXEC, 0)
                        : ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open(/proc/self/pagemap)", errno);
  // An empty scan: kernels without PAGEMAP_SCAN answer ENOTTY.
  abi::PmScanArg arg{};
  arg.size = sizeof(arg);
  if (::ioctl(fd.get(), abi::kPagemapScan, &arg) < 0) {
    if (errno == ENOTTY || errno == EINVAL)
      return MissingFacility("the PAGEMAP_SCAN ioctl", "6.7");
    return ErrnoStatus("PAGEMAP_SCAN", errno);
  }
  PagemapScan scan(std::move(fd));
  scan.regions_.resize(kRegionsPerCall);
  return scan;
}

absl::Status PagemapScan::TakeWritten(void* addr, size_t len,
                                      std::vector<PageRange>* out) {
  return Scan(addr, len, /*reprotect=*/true, out);
}

absl::Status PagemapScan::PeekWritten(void* addr, size_t len,
                                      std::vector<PageRange>* out) {
  return Scan(addr, len, /*reprotect=*/false, out);
}

absl::Status PagemapScan::Scan(void* addr, size_t len, bool reprotect,
                               std::vector<PageRange>* out) {
  uintptr_t start = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t end = start + len;
  while (start < end) {
    abi::PmScanArg arg{};
    arg.size = sizeof(arg);
    arg.flags = reprotect ? abi::kPmScanWpMatching | abi::kPmScanCheckWpAsync : 0;
    arg.start = start;
    arg.end = end;
    arg.vec = reinterpret_cast<uint64_t>(regions_.data());
    arg.vec_len = regions_.size();
    arg.category_mask = abi::kPageIsWritten;
    arg.return_mask = abi::kPageIsWritten;
    long n = ::ioctl(fd_.get(), abi::kPagemapScan, &arg);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ErrnoStatus("PAGEMAP_SCAN", errno);
    }
    for (long i = 0; i < n; ++i) {
      const abi::PageRegion& r = regions_[i];
      if (!out->empty() && out->back().end == r.start) {
        out->back().end = r.end;
      } else {
        out->push_back({static_cast<uintptr_t>(r.start),
                        static_cast<uintptr_t>(r.end)});
      }
    }
    // Kernel quirk (platform-facts.md): walk_end may stop short of `end`
    // even when the walk finished; it is only a real stop when the vector
    // filled up.
    if (static_cast<size_t>(n) < regions_.size()) break;
    start = arg.walk_end;
  }
  return absl::OkStatus();
}

}  // namespace ferry::sys
