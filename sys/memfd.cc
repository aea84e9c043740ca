#include "sys/memfd.h"

#include <sys/mman.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "base/status_macros.h"

namespace ferry::sys {

absl::StatusOr<MemfdMapping> MemfdMapping::Create(const std::string& name, size_t size,
                                                  size_t page_size) {
  // Checked here as well as by the file: a mapping needs a positive size,
  // and the errors name guest memory.
  if (page_size != 4096) {
    return absl::UnimplementedError(absl::StrFormat(
        "guest page size %d: only 4096-byte pages are supported so far "
        "(2 MiB hugetlb pages are planned)",
        page_size));
  }
  if (size == 0 || size % page_size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "guest memory size %d is not a positive multiple of the %d-byte page", size, page_size));
  }
  ASSIGN_OR_RETURN(MemfdFile file, MemfdFile::Create(name, size, page_size));
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap(memfd)", errno);
  // Best effort: shmem THP is off by default; make sure pages stay 4 KiB.
  (void)::madvise(p, size, MADV_NOHUGEPAGE);
  return MemfdMapping(std::move(file), static_cast<uint8_t*>(p));
}

MemfdMapping::MemfdMapping(MemfdMapping&& other) noexcept
    : file_(std::move(other.file_)), data_(std::exchange(other.data_, nullptr)) {}

MemfdMapping& MemfdMapping::operator=(MemfdMapping&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(data_, file_.size());
    file_ = std::move(other.file_);
    data_ = std::exchange(other.data_, nullptr);
  }
  return *this;
}

MemfdMapping::~MemfdMapping() {
  if (data_ != nullptr) ::munmap(data_, file_.size());
}

}  // namespace ferry::sys
