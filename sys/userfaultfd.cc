#include "sys/userfaultfd.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "sys/kernel_abi.h"
#include "sys/kernel_version.h"

namespace ferry::sys {
namespace {

constexpr size_t kPage = 4096;

struct FeatureInfo {
  uint64_t bit;
  const char* name;
  const char* since;
};

constexpr FeatureInfo kFeatures[] = {
    {UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP", "5.7"},
    {UFFD_FEATURE_EVENT_FORK, "EVENT_FORK", "4.11"},
    {UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP", "4.11"},
    {UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE", "4.11"},
    {UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS", "4.11"},
    {UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM", "4.11"},
    {UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP", "4.11"},
    {UFFD_FEATURE_SIGBUS, "SIGBUS", "4.14"},
    {UFFD_FEATURE_THREAD_ID, "THREAD_ID", "4.14"},
    {UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS", "5.13"},
    {UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM", "5.14"},
    {UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS", "5.18"},
    {UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM", "5.19"},
    {abi::kUffdFeatureWpUnpopulated, "WP_UNPOPULATED", "6.4"},
    {abi::kUffdFeaturePoison, "POISON", "6.6"},
    {abi::kUffdFeatureWpAsync, "WP_ASYNC", "6.7"},
    {abi::kUffdFeatureMove, "MOVE", "6.8"},
};

bool Aligned(const void* addr, size_t len) {
  return (reinterpret_cast<uintptr_t>(addr) % kPage) == 0 && len % kPage == 0 &&
         len > 0;
}

absl::Status Misaligned(const char* call, const void* addr, size_t len) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: range [%p, +%#x) is empty or not aligned to the %d-byte page", call,
      addr, len, kPage));
}

// Opens a raw userfaultfd: /dev/userfaultfd (6.1+, needs only read-write
// access to the device node, no capability) and else the syscall. The device
// comes first because it is what works for a process without capabilities
// (the sandboxed VMM, base/sandbox.h): with vm.unprivileged_userfaultfd=0
// (Debian's default) the syscall needs CAP_SYS_PTRACE to handle the kernel's
// own faults and fails with EPERM otherwise. When both fail the error names
// both and what would make either work.
// The device held by Userfaultfd::HoldDevice; -1: none.
std::atomic<int> held_device{-1};

absl::StatusOr<UniqueFd> OpenRaw() {
  const int flags = O_CLOEXEC | O_NONBLOCK;
  std::string device_error;
  if (const int held = held_device.load(); held >= 0) {
    int fd = ::ioctl(held, USERFAULTFD_IOC_NEW, flags);
    if (fd >= 0) return UniqueFd(fd);
  }
  UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (dev.valid()) {
    int fd = ::ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags);
    if (fd >= 0) return UniqueFd(fd);
    device_error = std::string(
        ErrnoStatus("ioctl(/dev/userfaultfd, USERFAULTFD_IOC_NEW)", errno).message());
  } else {
    device_error = std::string(ErrnoStatus("open(/dev/userfaultfd)", errno).message());
  }
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
  if (fd < 0) {
    int err = errno;
    if (err == ENOSYS) return MissingFacility("userfaultfd", "4.3");
    absl::Status syscall_error = ErrnoStatus("userfaultfd(2)", err);
    if (err != EPERM) return syscall_error;
    return absl::Status(
        syscall_error.code(),
        absl::StrCat(syscall_error.message(), "; ", device_error,
                     ". A process without CAP_SYS_PTRACE needs read-write access to "
                     "/dev/userfaultfd (Linux 6.1+; e.g. a group, docs/security.md) or "
                     "vm.unprivileged_userfaultfd=1"));
  }
  return UniqueFd(fd);
}

}  // namespace

std::string Userfaultfd::FeatureName(uint64_t bit) {
  for (const FeatureInfo& f : kFeatures)
    if (f.bit == bit) return f.name;
  return absl::StrFormat("feature bit %#x", bit);
}

const char* Userfaultfd::FeatureSince(uint64_t bit) {
  for (const FeatureInfo& f : kFeatures)
    if (f.bit == bit) return f.since;
  return "a newer release";
}

absl::Status Userfaultfd::HoldDevice() {
  if (held_device.load() >= 0) return absl::OkStatus();
  const int fd = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open(/dev/userfaultfd)", errno);
  int expected = -1;
  if (!held_device.compare_exchange_strong(expected, fd)) ::close(fd);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Userfaultfd::ProbeFeatures() {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenRaw());
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = 0;
  if (::ioctl(fd.get(), UFFDIO_API, &api) != 0)
    return ErrnoStatus("UFFDIO_API", errno);
  return api.features;
}

absl::StatusOr<Userfaultfd> Userfaultfd::Open(uint64_t features) {
  ASSIGN_OR_RETURN(uint64_t offered, ProbeFeatures());
  for (int bit = 0; bit < 64; ++bit) {
    uint64_t f = 1ull << bit;
    if ((features & f) && !(offered & f)) {
      return MissingFacility(absl::StrCat("userfaultfd feature ", FeatureName(f)),
                             FeatureSince(f));
    }
  }
  ASSIGN_OR_RETURN(UniqueFd fd, OpenRaw());
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd.get(), UFFDIO_API, &api) != 0)
    return ErrnoStatus("UFFDIO_API", errno);
  return Userfaultfd(std::move(fd), api.features);
}

absl::StatusOr<uint64_t> Userfaultfd::Register(void* addr, size_t len,
                                               uint64_t modes) {
  if (!Aligned(addr, len)) return Misaligned("UFFDIO_REGISTER", addr, len);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(addr);
  reg.range.len = len;
  reg.mode = modes;
  if (::ioctl(fd_.get(), UFFDIO_REGISTER, &reg) != 0) {
    int err = errno;
    return absl::Status(
        ErrnoStatus("UFFDIO_REGISTER", err).code(),
        absl::StrFormat("UFFDIO_REGISTER of [%p, +%#x) mode %#x: %s (errno %s); "
                        "the range must be one mapping of anonymous, memfd or "
                        "hugetlbfs memory that no other userfaultfd holds",
                        addr, len, modes, strerror(err), ErrnoName(err)));
  }
  return reg.ioctls;
}

absl::Status Userfaultfd::Unregister(void* addr, size_t len) {
  if (!Aligned(addr, len)) return Misaligned("UFFDIO_UNREGISTER", addr, len);
  uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
  if (::ioctl(fd_.get(), UFFDIO_UNREGISTER, &range) != 0)
    return ErrnoStatus("UFFDIO_UNREGISTER", errno);
  return absl::OkStatus();
}

// The shared loop of COPY and ZEROPAGE. `call(dst, len, done)` issues one
// ioctl for [dst, dst + len) and stores the kernel's progress (bytes
// installed, or a negative errno) in *done; it returns the ioctl's result.
template <typename Ioctl>
absl::StatusOr<InstallResult> Userfaultfd::Install(const char* name, void* dst,
                                                   size_t len, bool wake,
                                                   Ioctl call) {
  if (!Aligned(dst, len)) return Misaligned(name, dst, len);
  InstallResult result;
  size_t off = 0;
  auto* base = static_cast<uint8_t*>(dst);
  while (off < len) {
    int64_t done = 0;
    int rc = call(base + off, len - off, &done);
    if (rc == 0) {
      result.installed += len - off;
      break;
    }
    int err = errno;
    if (done > 0) {  // partial progress before the error
      result.installed += done;
      off += done;
    }
    if (err == EAGAIN) continue;  // mappings changed under us: retry the rest
    if (err == EEXIST) {
      // Another path (a vCPU's own fault, the background push) installed this
      // page first. That is success for us: count it, make sure nobody stays
      // asleep on it, and go on with the next page.
      result.already_present += kPage;
      if (wake) RETURN_IF_ERROR(Wake(base + off, kPage));
      off += kPage;
      continue;
    }
    return absl::Status(
        ErrnoStatus(name, err).code(),
        absl::StrFormat("%s at %p (+%#x of %#x): %s (errno %s)", name, base + off,
                        off, len, strerror(err), ErrnoName(err)));
  }
  return result;
}

absl::StatusOr<InstallResult> Userfaultfd::Copy(void* dst, const void* src,
                                                size_t len, bool wake) {
  const uint8_t* src_base = static_cast<const uint8_t*>(src);
  uint8_t* dst_base = static_cast<uint8_t*>(dst);
  return Install("UFFDIO_COPY", dst, len, wake,
                 [&](uint8_t* at, size_t n, int64_t* done) {
                   uffdio_copy c{};
                   c.dst = reinterpret_cast<uint64_t>(at);
                   c.src = reinterpret_cast<uint64_t>(src_base + (at - dst_base));
                   c.len = n;
                   c.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE;
                   int rc = ::ioctl(fd_.get(), UFFDIO_COPY, &c);
                   *done = c.copy;
                   return rc;
                 });
}

absl::StatusOr<InstallResult> Userfaultfd::ZeroPage(void* dst, size_t len,
                                                    bool wake) {
  return Install("UFFDIO_ZEROPAGE", dst, len, wake,
                 [&](uint8_t* at, size_t n, int64_t* done) {
                   uffdio_zeropage z{};
                   z.range.start = reinterpret_cast<uint64_t>(at);
                   z.range.len = n;
                   z.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE;
                   int rc = ::ioctl(fd_.get(), UFFDIO_ZEROPAGE, &z);
                   *done = z.zeropage;
                   return rc;
                 });
}

absl::Status Userfaultfd::Wake(void* addr, size_t len) {
  if (!Aligned(addr, len)) return Misaligned("UFFDIO_WAKE", addr, len);
  uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
  if (::ioctl(fd_.get(), UFFDIO_WAKE, &range) != 0)
    return ErrnoStatus("UFFDIO_WAKE", errno);
  return absl::OkStatus();
}

absl::Status Userfaultfd::WriteProtect(void* addr, size_t len, bool protect) {
  if (!Aligned(addr, len)) return Misaligned("UFFDIO_WRITEPROTECT", addr, len);
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uint64_t>(addr);
  wp.range.len = len;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  while (::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &wp) != 0) {
    if (errno == EAGAIN) continue;  // address space changed: retry
    return ErrnoStatus("UFFDIO_WRITEPROTECT", errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> Userfaultfd::ReadEvents(uffd_msg* msgs, size_t max) {
  while (true) {
    ssize_t n = ::read(fd_.get(), msgs, max * sizeof(uffd_msg));
    if (n >= 0) {
      if (n % sizeof(uffd_msg) != 0)
        return absl::InternalError("userfaultfd read returned a partial message");
      return static_cast<size_t>(n) / sizeof(uffd_msg);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;  // nothing pending
    return ErrnoStatus("read(userfaultfd)", errno);
  }
}

}  // namespace ferry::sys
