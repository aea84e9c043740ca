// FaultInjectingPageSource: a PageSource for tests that fails fetches on
// purpose, in front of a real source (or none). Rules: every fetch fails
// (FailAll), the next n fetches fail (FailNext), or fetches of one page fail
// (FailPage); anything no rule fails goes to the inner source, and with no
// inner source it fails with Unavailable. Counts what it saw.
//
// Thread-safe: Fetch() from every vCPU or handler thread, rules from any.
//
//   InMemoryPageSource image_source(image.get());
//   FaultInjectingPageSource source(&image_source);
//   source.FailNext(1, absl::UnavailableError("link down"));
#ifndef FERRY_VMM_FAULT_INJECTING_PAGE_SOURCE_H_
#define FERRY_VMM_FAULT_INJECTING_PAGE_SOURCE_H_

#include <cstdint>
#include <map>

#include "absl/synchronization/mutex.h"
#include "vmm/page_source.h"

namespace ferry::vmm {

class FaultInjectingPageSource final : public PageSource {
 public:
  // `inner` (may be null) must outlive this source.
  explicit FaultInjectingPageSource(PageSource* inner = nullptr) : inner_(inner) {}

  absl::StatusOr<FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t> out) override {
    {
      absl::MutexLock lock(&mu_);
      ++fetches_;
      absl::Status fail;
      if (!all_.ok()) {
        fail = all_;
      } else if (next_ > 0) {
        --next_;
        fail = next_error_;
      } else if (auto it = pages_.find(gpa); it != pages_.end()) {
        fail = it->second;
      } else if (inner_ == nullptr) {
        fail = absl::UnavailableError("no page source behind the fault injector");
      }
      if (!fail.ok()) {
        ++failures_;
        return fail;
      }
    }
    return inner_->Fetch(gpa, out);
  }
  void PrepareThread() override {
    if (inner_ != nullptr) inner_->PrepareThread();
  }

  void FailAll(absl::Status error) {
    absl::MutexLock lock(&mu_);
    all_ = std::move(error);
  }
  void FailNext(int n, absl::Status error) {
    absl::MutexLock lock(&mu_);
    next_ = n;
    next_error_ = std::move(error);
  }
  void FailPage(uint64_t gpa, absl::Status error) {
    absl::MutexLock lock(&mu_);
    pages_[gpa] = std::move(error);
  }
  // Removes every rule.
  void Heal() {
    absl::MutexLock lock(&mu_);
    all_ = absl::OkStatus();
    next_ = 0;
    pages_.clear();
  }

  uint64_t fetches() const {
    absl::MutexLock lock(&mu_);
    return fetches_;
  }
  uint64_t failures() const {
    absl::MutexLock lock(&mu_);
    return failures_;
  }

 private:
  PageSource* const inner_;
  mutable absl::Mutex mu_;
  absl::Status all_ ABSL_GUARDED_BY(mu_);
  int next_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status next_error_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, absl::Status> pages_ ABSL_GUARDED_BY(mu_);
  uint64_t fetches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failures_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_FAULT_INJECTING_PAGE_SOURCE_H_
