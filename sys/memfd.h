// MemfdMapping: a memfd (the guest memory file) and one MAP_SHARED mapping of
// all of it; WriteAt() fills the file without going through the mapping. All raw memfd, mmap and fallocate calls live in memfd.cc.
//
// Ownership: owns the fd and the mapping; unmaps and closes on destruction.
// Threads: data() may be used from any thread; PunchHole and DataRanges are
// safe to call concurrently with accesses (the kernel serialises per page).
//
// Page sizes: 4 KiB (shmem) now. 2 MiB hugetlb pages (MFD_HUGETLB) are the
// planned second size; asking for any other size is Unimplemented.
//
//   ASSIGN_OR_RETURN(MemfdMapping m, MemfdMapping::Create("guest", 1 << 30, 4096));
//   m.data()[0] = 1;
//   RETURN_IF_ERROR(m.PunchHole(0, 4096));   // the page is missing again
#ifndef FERRY_SYS_MEMFD_H_
#define FERRY_SYS_MEMFD_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace ferry::sys {

class MemfdMapping {
 public:
  // Creates a memfd of `size` bytes (a multiple of page_size) and maps it
  // shared, read-write. THP is disabled on the mapping so the kernel works
  // in `page_size` pages.
  static absl::StatusOr<MemfdMapping> Create(const std::string& name, size_t size,
                                             size_t page_size);

  MemfdMapping(MemfdMapping&& other) noexcept;
  MemfdMapping& operator=(MemfdMapping&& other) noexcept;
  MemfdMapping(const MemfdMapping&) = delete;
  MemfdMapping& operator=(const MemfdMapping&) = delete;
  ~MemfdMapping();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t page_size() const { return page_size_; }
  int fd() const { return fd_.get(); }

  // Frees [offset, offset + len) of the file: its pages are missing again
  // (the next access faults, or reads zeros where no userfaultfd is
  // registered). Page aligned.
  absl::Status PunchHole(size_t offset, size_t len);

  // The [offset, end) ranges of the file that hold pages (SEEK_DATA /
  // SEEK_HOLE); everything else is missing. Reading this never allocates.
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> DataRanges() const;

  // Writes `len` bytes at file offset `offset` through the file (pwrite):
  // no page fault per page, no userfaultfd involvement. Bounds-checked.
  absl::Status WriteAt(size_t offset, const uint8_t* data, size_t len);

  // Reads `len` bytes at file offset `offset` through the file (pread):
  // the kernel copies from the page cache, never through this mapping
  // (a hole reads as zeros and stays a hole). Bounds-checked.
  absl::Status ReadAt(size_t offset, uint8_t* out, size_t len) const;

  // Bytes of memory the file holds (its allocated pages).
  absl::StatusOr<uint64_t> AllocatedBytes() const;

 private:
  MemfdMapping(UniqueFd fd, uint8_t* data, size_t size, size_t page_size)
      : fd_(std::move(fd)), data_(data), size_(size), page_size_(page_size) {}

  UniqueFd fd_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t page_size_ = 0;
};

}  // namespace ferry::sys

#endif  // FERRY_SYS_MEMFD_H_
