// PageSource: where a missing page's content comes from. The fault path
// knows only this interface: the destination's remote source (the fetch
// channel to the source host), an in-memory image (tests, benchmarks, the
// local demo), or a fake.
//
// Threads: Fetch() is called concurrently from every vCPU thread (exit mode)
// and from userfaultfd handler threads (blocking mode); implementations are
// thread-safe and may block the caller until the page arrives.
#ifndef FERRY_VMM_PAGE_SOURCE_H_
#define FERRY_VMM_PAGE_SOURCE_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace ferry::vmm {

class GuestMemory;

enum class PageContent { kData, kZero };

// What Fetch() found. For kData, `data` points at the page's bytes: either
// the caller's `out` buffer or memory the source guarantees stable until the
// page is installed (an in-memory image), which saves a copy.
struct FetchedPage {
  PageContent content = PageContent::kData;
  const uint8_t* data = nullptr;
};

// `count` pages from page-aligned `gpa`, for FetchRuns().
struct PageRunRequest {
  uint64_t gpa = 0;
  uint32_t count = 0;
};

// Called by FetchRuns() for each page as it arrives, on the fetching
// thread; `page.data` is valid only during the call. An error stops the
// batch and is FetchRuns()' result.
using PageArrivedFn = std::function<absl::Status(uint64_t gpa, const FetchedPage& page)>;

class PageSource {
 public:
  virtual ~PageSource() = default;

  // Fetches the page at page-aligned `gpa`. On kData, the result's `data`
  // points at its bytes (in `out`, one page, or in the source's own stable
  // memory); on kZero the page is all zeros and `out` is unspecified.
  // OutOfRange for a gpa outside the VM's RAM; other errors are the
  // transport's (Unavailable, DeadlineExceeded, ...).
  virtual absl::StatusOr<FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t> out) = 0;

  // Fetches every page of `runs`, with as many requests in flight at once
  // as the source can (the remote source: every request of the batch on the
  // wire before the first reply), calling `arrived` for each page the moment
  // it is here. Stops at the first error. Default: Fetch() page by page.
  // `page_size` is the VM's (at most 64 KiB).
  virtual absl::Status FetchRuns(absl::Span<const PageRunRequest> runs, uint32_t page_size,
                                 const PageArrivedFn& arrived);

  // Called once on every thread that will call Fetch() (vCPU threads, fault
  // handler threads) before its first fault, so per-thread resources (a
  // connection) are ready before they are needed. Errors surface at Fetch().
  virtual void PrepareThread() {}
};

// Serves pages from a fully populated GuestMemory (a memory image) without
// copying them: `data` points into the image. The image must outlive the
// source and must not change while pages are fetched and installed.
class InMemoryPageSource final : public PageSource {
 public:
  explicit InMemoryPageSource(const GuestMemory* image) : image_(image) {}
  absl::StatusOr<FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t> out) override;

 private:
  const GuestMemory* image_;
};

// True when the `len` bytes at `p` are all zero (len a multiple of 64).
bool IsZeroPage(const uint8_t* p, size_t len);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_PAGE_SOURCE_H_
