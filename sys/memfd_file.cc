#include "sys/memfd_file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/errno_status.h"

namespace ferry::sys {

absl::StatusOr<MemfdFile> MemfdFile::Create(const std::string& name, size_t size,
                                            size_t page_size) {
  if (page_size != 4096)
    return absl::UnimplementedError(absl::StrFormat(
        "guest page size %d: only 4096-byte pages are supported so far", page_size));
  if (size % page_size != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory file size %d is not a multiple of the %d-byte page", size, page_size));
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("memfd_create", errno);
  MemfdFile file(std::move(fd), 0, page_size);
  if (size > 0) {
    absl::Status s = file.Resize(size);
    if (!s.ok()) return s;
  }
  return file;
}

absl::Status MemfdFile::Resize(size_t size) {
  if (size % page_size_ != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory file size %d is not a multiple of the %d-byte page", size, page_size_));
  if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0)
    return ErrnoStatus("ftruncate(memfd)", errno);
  size_ = size;
  return absl::OkStatus();
}

absl::Status MemfdFile::PunchHole(size_t offset, size_t len) {
  if (offset % page_size_ != 0 || len % page_size_ != 0 || offset > size_ || len > size_ - offset)
    return absl::OutOfRangeError(absl::StrFormat(
        "punch hole [%#x, +%#x): not page aligned or beyond the %#x-byte memory file", offset, len,
        size_));
  if (len == 0) return absl::OkStatus();
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(len)) != 0)
    return ErrnoStatus("fallocate(PUNCH_HOLE)", errno);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<size_t, size_t>>> MemfdFile::DataRanges(size_t from,
                                                                             size_t to) const {
  std::vector<std::pair<size_t, size_t>> ranges;
  if (to > size_) to = size_;
  off_t pos = static_cast<off_t>(from);
  const off_t end = static_cast<off_t>(to);
  while (pos < end) {
    const off_t data = ::lseek(fd_.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      return ErrnoStatus("lseek(SEEK_DATA)", errno);
    }
    if (data >= end) break;
    off_t hole = ::lseek(fd_.get(), data, SEEK_HOLE);
    if (hole < 0) return ErrnoStatus("lseek(SEEK_HOLE)", errno);
    if (hole > end) hole = end;
    ranges.emplace_back(static_cast<size_t>(data), static_cast<size_t>(hole));
    pos = hole;
  }
  return ranges;
}

absl::Status MemfdFile::WriteAt(size_t offset, const uint8_t* data, size_t len) {
  if (offset > size_ || len > size_ - offset)
    return absl::OutOfRangeError(
        absl::StrFormat("write [%#x, +%#x) beyond the %#x-byte memory file", offset, len, size_));
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

absl::Status MemfdFile::ReadAt(size_t offset, uint8_t* out, size_t len) const {
  if (offset > size_ || len > size_ - offset)
    return absl::OutOfRangeError(
        absl::StrFormat("read [%#x, +%#x) beyond the %#x-byte memory file", offset, len, size_));
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

absl::StatusOr<uint64_t> MemfdFile::AllocatedBytes() const {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ErrnoStatus("fstat(memfd)", errno);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

absl::StatusOr<AddressReservation> AddressReservation::Create(size_t bytes) {
  if (bytes == 0 || bytes % 4096 != 0)
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot reserve %d bytes of address space", bytes));
  void* p = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap(reserve)", errno);
  return AddressReservation(static_cast<uint8_t*>(p), bytes);
}

AddressReservation::AddressReservation(AddressReservation&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}

AddressReservation& AddressReservation::operator=(AddressReservation&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, size_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

AddressReservation::~AddressReservation() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

absl::Status AddressReservation::Map(size_t at, const MemfdFile& file, size_t file_offset,
                                     size_t len) {
  if (at > size_ || len > size_ - at || file_offset > file.size() ||
      len > file.size() - file_offset || at % 4096 || file_offset % 4096 || len % 4096)
    return absl::OutOfRangeError(absl::StrFormat(
        "map [%#x, +%#x) of a %#x-byte file at %#x: outside the %#x-byte reservation or the "
        "file, or not page aligned",
        file_offset, len, file.size(), at, size_));
  if (len == 0) return absl::OkStatus();
  void* p = ::mmap(base_ + at, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, file.fd(),
                   static_cast<off_t>(file_offset));
  if (p == MAP_FAILED) return ErrnoStatus("mmap(MAP_FIXED memfd)", errno);
  // Best effort: shmem THP is off by default; make sure pages stay 4 KiB.
  (void)::madvise(p, len, MADV_NOHUGEPAGE);
  return absl::OkStatus();
}

absl::Status AddressReservation::Unmap(size_t at, size_t len) {
  if (at > size_ || len > size_ - at || at % 4096 || len % 4096)
    return absl::OutOfRangeError(
        absl::StrFormat("unmap [%#x, +%#x): outside the %#x-byte reservation", at, len, size_));
  if (len == 0) return absl::OkStatus();
  void* p = ::mmap(base_ + at, len, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap(MAP_FIXED reserve)", errno);
  return absl::OkStatus();
}

absl::Status AddressReservation::MoveFrom(const AddressReservation& from, size_t from_at, size_t at,
                                          size_t len) {
  if (at > size_ || len > size_ - at || from_at > from.size_ || len > from.size_ - from_at ||
      at % 4096 || from_at % 4096 || len % 4096)
    return absl::OutOfRangeError(absl::StrFormat(
        "move [%#x, +%#x) to %#x: outside a reservation or not page aligned", from_at, len, at));
  if (len == 0) return absl::OkStatus();
  void* p = ::mremap(from.base_ + from_at, len, len,
                     MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, base_ + at);
  if (p == MAP_FAILED) return ErrnoStatus("mremap(MREMAP_FIXED | MREMAP_DONTUNMAP)", errno);
  return absl::OkStatus();
}

}  // namespace ferry::sys
