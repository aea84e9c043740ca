// Userfaultfd: one userfaultfd file descriptor and every operation Ferry
// performs on it. All raw userfaultfd calls live in userfaultfd.cc.
//
// Ownership: the object owns the fd; ranges registered on it stay registered
// until Unregister() or until the object is destroyed (closing the fd wakes
// every thread blocked on it and the faults then resolve as if no userfaultfd
// were registered).
//
// Threads: every method may be called from any thread concurrently (the
// kernel serialises per page); the object must outlive all callers.
//
// Failures: every failed call returns a Status naming the ioctl. Outcomes the
// kernel reports that are normal are handled here, with the reason at the
// call: EEXIST on COPY/ZEROPAGE means another path installed the page first
// (counted as already present, the range is woken); EAGAIN means the address
// space changed under the call and the rest is retried.
//
//   ASSIGN_OR_RETURN(Userfaultfd uffd,
//                    Userfaultfd::Open(UFFD_FEATURE_SIGBUS | UFFD_FEATURE_MISSING_SHMEM));
//   RETURN_IF_ERROR(uffd.Register(base, len, UFFDIO_REGISTER_MODE_MISSING));
//   ASSIGN_OR_RETURN(InstallResult r, uffd.Copy(base + off, page, 4096));
#ifndef FERRY_SYS_USERFAULTFD_H_
#define FERRY_SYS_USERFAULTFD_H_

#include <linux/userfaultfd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace ferry::sys {

// What one install call did, in bytes (whole pages).
struct InstallResult {
  size_t installed = 0;        // pages this call made present
  size_t already_present = 0;  // pages another path had installed (EEXIST)
};

class Userfaultfd {
 public:
  // The feature bits the running kernel offers: UFFDIO_API with features 0 on
  // a throwaway userfaultfd. Fails only if userfaultfd itself is unusable.
  static absl::StatusOr<uint64_t> ProbeFeatures();

  // The name of one feature bit ("SIGBUS") and the first Linux version with it.
  static std::string FeatureName(uint64_t bit);
  static const char* FeatureSince(uint64_t bit);

  // Opens /dev/userfaultfd now and keeps it for the life of the process:
  // every later Open makes its userfaultfd from this descriptor, so a
  // process that then switches to a user without access to the device node
  // (the VMM sandbox, base/sandbox.h) still can. Idempotent.
  static absl::Status HoldDevice();

  // Opens a userfaultfd (O_CLOEXEC | O_NONBLOCK) through /dev/userfaultfd,
  // falling back to the userfaultfd(2) syscall, and enables `features`. A
  // feature the kernel lacks gives FailedPrecondition naming it and the
  // kernel version that has it.
  static absl::StatusOr<Userfaultfd> Open(uint64_t features);

  Userfaultfd(Userfaultfd&&) = default;
  Userfaultfd& operator=(Userfaultfd&&) = default;

  int fd() const { return fd_.get(); }
  uint64_t features() const { return features_; }

  // Registers [addr, addr + len) (page aligned) in `modes`
  // (UFFDIO_REGISTER_MODE_MISSING / _WP / _MINOR). Returns the ioctls the
  // range supports (the uffdio_register.ioctls bitmask).
  absl::StatusOr<uint64_t> Register(void* addr, size_t len, uint64_t modes);
  absl::Status Unregister(void* addr, size_t len);

  // Atomically installs len bytes (whole pages) at dst from src: each page
  // becomes visible whole or not at all. Pages already present are skipped
  // and counted. wake=false leaves sleeping faulters asleep (the caller wakes
  // the range later with Wake()).
  absl::StatusOr<InstallResult> Copy(void* dst, const void* src, size_t len,
                                     bool wake = true);
  // Installs zero-filled pages, with Copy()'s semantics.
  absl::StatusOr<InstallResult> ZeroPage(void* dst, size_t len, bool wake = true);
  // Wakes threads sleeping on faults in [addr, addr + len).
  absl::Status Wake(void* addr, size_t len);
  // Sets (protect=true) or clears write protection on [addr, addr + len).
  absl::Status WriteProtect(void* addr, size_t len, bool protect);

  // Reads pending events into msgs[0..max); returns how many. 0 means none
  // is pending (the fd is non-blocking: poll it for readability).
  absl::StatusOr<size_t> ReadEvents(uffd_msg* msgs, size_t max);

 private:
  Userfaultfd(UniqueFd fd, uint64_t features)
      : fd_(std::move(fd)), features_(features) {}

  template <typename Ioctl>
  absl::StatusOr<InstallResult> Install(const char* name, void* dst, size_t len,
                                        bool wake, Ioctl call);

  UniqueFd fd_;
  uint64_t features_ = 0;
};

}  // namespace ferry::sys

#endif  // FERRY_SYS_USERFAULTFD_H_
