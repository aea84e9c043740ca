#include "sys/memfd.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/errno_status.h"

namespace ferry::sys {

absl::StatusOr<MemfdMapping> MemfdMapping::Create(const std::string& name,
                                                  size_t size, size_t page_size) {
  if (page_size != 4096) {
    return absl::UnimplementedError(absl::StrFormat(
        "guest page size %d: only 4096-byte pages are supported so far "
        "(2 MiB hugetlb pages are planned)",
        page_size));
  }
  if (size == 0 || size % page_size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "guest memory size %d is not a positive multiple of the %d-byte page",
        size, page_size));
  }
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("memfd_create", errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
    return ErrnoStatus("ftruncate(memfd)", errno);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap(memfd)", errno);
  // Best effort: shmem THP is off by default; make sure pages stay 4 KiB.
  (void)::madvise(p, size, MADV_NOHUGEPAGE);
  return MemfdMapping(std::move(fd), static_cast<uint8_t*>(p), size, page_size);
}

MemfdMapping::MemfdMapping(MemfdMapping&& other) noexcept
    : fd_(std::move(other.fd_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      page_size_(other.page_size_) {}

MemfdMapping& MemfdMapping::operator=(MemfdMapping&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(data_, size_);
    fd_ = std::move(other.fd_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    page_size_ = other.page_size_;
  }
  return *this;
}

MemfdMapping::~MemfdMapping() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

absl::Status MemfdMapping::WriteAt(size_t offset, const uint8_t* data, size_t len) {
  if (offset > size_ || len > size_ - offset)
    return absl::OutOfRangeError(absl::StrFormat(
        "write [%#x, +%#x) beyond the %#x-byte guest memory", offset, len, size_));
  while (len > 0) {
    const ssize_t n = ::pwrite(fd_.get(), data, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("pwrite(memfd)", errno);
    }
    if (n == 0) return absl::InternalError("pwrite(memfd) wrote nothing");
    data += n;
    offset += static_cast<size_t>(n);
    len -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status MemfdMapping::ReadAt(size_t offset, uint8_t* out, size_t len) const {
  if (offset > size_ || len > size_ - offset)
    return absl::OutOfRangeError(
        absl::StrFormat("read [%#x, +%#x) beyond the %#x-byte guest memory", offset, len, size_));
  while (len > 0) {
    const ssize_t n = ::pread(fd_.get(), out, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("pread(memfd)", errno);
    }
    if (n == 0) return absl::InternalError("pread(memfd) read nothing inside the file");
    out += n;
    offset += static_cast<size_t>(n);
    len -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MemfdMapping::AllocatedBytes() const {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ErrnoStatus("fstat(memfd)", errno);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

absl::Status MemfdMapping::PunchHole(size_t offset, size_t len) {
  if (offset % page_size_ != 0 || len % page_size_ != 0 || offset + len > size_ ||
      offset + len < offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "punch hole [%#x, +%#x): not page aligned or beyond the %#x-byte guest "
        "memory",
        offset, len, size_));
  }
  if (len == 0) return absl::OkStatus();
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(len)) != 0)
    return ErrnoStatus("fallocate(PUNCH_HOLE)", errno);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<size_t, size_t>>> MemfdMapping::DataRanges()
    const {
  std::vector<std::pair<size_t, size_t>> ranges;
  off_t pos = 0;
  const off_t end = static_cast<off_t>(size_);
  while (pos < end) {
    off_t data = ::lseek(fd_.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      return ErrnoStatus("lseek(SEEK_DATA)", errno);
    }
    off_t hole = ::lseek(fd_.get(), data, SEEK_HOLE);
    if (hole < 0) return ErrnoStatus("lseek(SEEK_HOLE)", errno);
    ranges.emplace_back(static_cast<size_t>(data), static_cast<size_t>(hole));
    pos = hole;
  }
  return ranges;
}

}  // namespace ferry::sys
