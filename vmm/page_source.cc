#include "vmm/page_source.h"

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "vmm/guest_memory.h"

namespace ferry::vmm {

bool IsZeroPage(const uint8_t* p, size_t len) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < len / 8; i += 8) {
    if ((w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
         w[i + 7]) != 0)
      return false;
  }
  return true;
}

absl::Status PageSource::FetchRuns(absl::Span<const PageRunRequest> runs, uint32_t page_size,
                                   const PageArrivedFn& arrived) {
  alignas(64) uint8_t buf[65536];
  if (page_size > sizeof(buf))
    return absl::InvalidArgumentError(absl::StrFormat("page size %d is over 64 KiB", page_size));
  for (const PageRunRequest& run : runs) {
    for (uint32_t i = 0; i < run.count; ++i) {
      const uint64_t gpa = run.gpa + uint64_t{i} * page_size;
      ASSIGN_OR_RETURN(FetchedPage page, Fetch(gpa, absl::MakeSpan(buf, page_size)));
      RETURN_IF_ERROR(arrived(gpa, page));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FetchedPage> InMemoryPageSource::Fetch(uint64_t gpa,
                                                      absl::Span<uint8_t> out) {
  const uint32_t ps = image_->page_size();
  if (gpa % ps != 0 || out.size() < ps)
    return absl::InvalidArgumentError(absl::StrFormat(
        "fetch of gpa %#x: not page aligned or buffer of %d bytes too small", gpa,
        out.size()));
  ASSIGN_OR_RETURN(uint8_t* page, image_->HostAddress(gpa, ps));
  if (IsZeroPage(page, ps)) return FetchedPage{PageContent::kZero, nullptr};
  return FetchedPage{PageContent::kData, page};
}

}  // namespace ferry::vmm
