// MemfdMapping: a MemfdFile (sys/memfd_file.h) of fixed size and one
// MAP_SHARED, read-write mapping of all of it, with transparent huge pages
// off. The file calls (PunchHole, DataRanges, WriteAt, ReadAt,
// AllocatedBytes) are the file's and never go through the mapping; the
// mapping's mmap lives in memfd.cc, every other raw call in memfd_file.cc.
//
// Ownership: owns the file and the mapping; unmaps and closes on
// destruction. Threads: data() may be used from any thread; the file calls
// are safe concurrently with accesses through the mapping (the kernel
// serialises per page).
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
#include "sys/memfd_file.h"

namespace ferry::sys {

class MemfdMapping {
 public:
  // Creates a memfd of `size` bytes (a positive multiple of page_size) and
  // maps it shared, read-write. THP is disabled on the mapping so the
  // kernel works in `page_size` pages.
  static absl::StatusOr<MemfdMapping> Create(const std::string& name, size_t size,
                                             size_t page_size);

  MemfdMapping(MemfdMapping&& other) noexcept;
  MemfdMapping& operator=(MemfdMapping&& other) noexcept;
  MemfdMapping(const MemfdMapping&) = delete;
  MemfdMapping& operator=(const MemfdMapping&) = delete;
  ~MemfdMapping();

  uint8_t* data() const { return data_; }
  size_t size() const { return file_.size(); }
  size_t page_size() const { return file_.page_size(); }
  int fd() const { return file_.fd(); }

  // Frees [offset, offset + len) of the file: its pages are missing again
  // (the next access faults, or reads zeros where no userfaultfd is
  // registered). Page aligned, inside the file; OutOfRange otherwise.
  absl::Status PunchHole(size_t offset, size_t len) { return file_.PunchHole(offset, len); }

  // The [offset, end) ranges of the file that hold pages (SEEK_DATA /
  // SEEK_HOLE); everything else is missing. Reading this never allocates.
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> DataRanges() const {
    return file_.DataRanges(0, file_.size());
  }

  // Writes `len` bytes at file offset `offset` through the file (pwrite):
  // no page fault per page, no userfaultfd involvement. OutOfRange past the
  // end of the file.
  absl::Status WriteAt(size_t offset, const uint8_t* data, size_t len) {
    return file_.WriteAt(offset, data, len);
  }

  // Reads `len` bytes at file offset `offset` through the file (pread):
  // the kernel copies from the page cache, never through this mapping
  // (a hole reads as zeros and stays a hole). OutOfRange past the end of
  // the file.
  absl::Status ReadAt(size_t offset, uint8_t* out, size_t len) const {
    return file_.ReadAt(offset, out, len);
  }

  // Bytes of memory the file holds (its allocated pages).
  absl::StatusOr<uint64_t> AllocatedBytes() const { return file_.AllocatedBytes(); }

 private:
  MemfdMapping(MemfdFile file, uint8_t* data) : file_(std::move(file)), data_(data) {}

  MemfdFile file_;  // never resized: the mapping covers all of it
  uint8_t* data_ = nullptr;
};

}  // namespace ferry::sys

#endif  // FERRY_SYS_MEMFD_H_
