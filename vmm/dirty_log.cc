#include "vmm/dirty_log.h"

#include "base/status_macros.h"
#include "sys/kernel_abi.h"

namespace ferry::vmm {

absl::StatusOr<std::unique_ptr<UffdDirtyLog>> UffdDirtyLog::Start(
    GuestMemory* memory) {
  ASSIGN_OR_RETURN(sys::PagemapScan scan, sys::PagemapScan::Open());
  // WP_UNPOPULATED: pages never touched (zero pages left as holes) are
  // protected too, so their first write is logged.
  ASSIGN_OR_RETURN(sys::Userfaultfd uffd,
                   sys::Userfaultfd::Open(sys::abi::kUffdFeatureWpAsync |
                                     sys::abi::kUffdFeatureWpUnpopulated));
  RETURN_IF_ERROR(
      uffd.Register(memory->host(), memory->size(), UFFDIO_REGISTER_MODE_WP).status());
  RETURN_IF_ERROR(uffd.WriteProtect(memory->host(), memory->size(), true));
  return std::unique_ptr<UffdDirtyLog>(
      new UffdDirtyLog(memory, std::move(uffd), std::move(scan)));
}

UffdDirtyLog::~UffdDirtyLog() {
  (void)uffd_.Unregister(memory_->host(), memory_->size());
}

absl::Status UffdDirtyLog::Collect(std::vector<uint64_t>* pages) {
  return Gather(/*rearm=*/true, pages);
}

absl::Status UffdDirtyLog::CollectFinal(std::vector<uint64_t>* pages) {
  return Gather(/*rearm=*/false, pages);
}

absl::Status UffdDirtyLog::Gather(bool rearm, std::vector<uint64_t>* pages) {
  pages->clear();
  ranges_.clear();
  RETURN_IF_ERROR(rearm ? scan_.TakeWritten(memory_->host(), memory_->size(), &ranges_)
                        : scan_.PeekWritten(memory_->host(), memory_->size(), &ranges_));
  const auto base = reinterpret_cast<uintptr_t>(memory_->host());
  const uint32_t ps = memory_->page_size();
  for (const sys::PageRange& r : ranges_)
    for (uintptr_t a = r.start; a < r.end; a += ps) pages->push_back((a - base) / ps);
  return absl::OkStatus();
}

}  // namespace ferry::vmm
