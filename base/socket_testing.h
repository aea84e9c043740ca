// Socket helpers for tests that flood or starve a server.
#ifndef FERRY_BASE_SOCKET_TESTING_H_
#define FERRY_BASE_SOCKET_TESTING_H_

#include <sys/resource.h>

#include <algorithm>
#include <cstdint>

#include "base/clock.h"
#include "base/net.h"

namespace ferry::testing {

// True once the peer closed `fd` (whatever it sent before is read and
// dropped); false if it is still open after `ms`.
inline bool ClosedWithin(int fd, int ms) {
  uint8_t byte;
  const int64_t deadline = MonotonicNowNanos() + int64_t{ms} * 1'000'000;
  while (MonotonicNowNanos() < deadline) {
    absl::Status s = RecvAll(fd, &byte, 1, 200);
    if (!s.ok() && !absl::IsDeadlineExceeded(s)) return true;
  }
  return false;
}

// Raises this process's soft file-descriptor limit to at least `n` while
// it lives; ok() is false when the hard limit does not allow it.
class ScopedFdLimit {
 public:
  explicit ScopedFdLimit(rlim_t n) {
    if (getrlimit(RLIMIT_NOFILE, &saved_) != 0 || saved_.rlim_max < n) return;
    rlimit raised = saved_;
    raised.rlim_cur = std::max(saved_.rlim_cur, n);
    ok_ = setrlimit(RLIMIT_NOFILE, &raised) == 0;
  }
  ~ScopedFdLimit() {
    if (ok_) setrlimit(RLIMIT_NOFILE, &saved_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

}  // namespace ferry::testing

#endif  // FERRY_BASE_SOCKET_TESTING_H_
