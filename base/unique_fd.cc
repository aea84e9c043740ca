#include "base/unique_fd.h"

#include <unistd.h>

namespace ferry {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) Reset(other.Release());
  return *this;
}

int UniqueFd::Release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void UniqueFd::Reset(int fd) {
  // close() errors on a descriptor we own cannot be acted on; the fd is gone
  // either way (Linux never leaves it open after EINTR).
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

}  // namespace ferry
