// MemfdFile: a memfd without a mapping of its own, whose size can change
// (one guest memory region's backing file), and AddressReservation: a range
// of host address space reserved up front (PROT_NONE) into which such files
// are mapped at fixed places and moved without copying a byte. GuestMemory
// builds RAM offset space from the two (vmm/guest_memory.h).
//
// Ownership: each owns its fd or its range; the reservation unmaps all of it
// on destruction. Threads: the file's data calls (ReadAt, WriteAt,
// PunchHole, DataRanges) are safe concurrently with accesses through any
// mapping; Resize and the reservation's Map/Unmap only while nothing
// accesses the range they change.
//
//   ASSIGN_OR_RETURN(AddressReservation r, AddressReservation::Create(64ull << 30));
//   ASSIGN_OR_RETURN(MemfdFile f, MemfdFile::Create("ram", 1 << 30, 4096));
//   RETURN_IF_ERROR(r.Map(0, f, 0, 1 << 30));   // r.base()[0..1 GiB) is f
#ifndef FERRY_SYS_MEMFD_FILE_H_
#define FERRY_SYS_MEMFD_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace ferry::sys {

class MemfdFile {
 public:
  // A memfd of `size` bytes (0 allowed; a multiple of page_size, which must
  // be 4096 for now), all of it a hole.
  static absl::StatusOr<MemfdFile> Create(const std::string& name, size_t size, size_t page_size);

  int fd() const { return fd_.get(); }
  size_t size() const { return size_; }
  size_t page_size() const { return page_size_; }

  // Grows (the new tail is a hole: zeros) or shrinks (the pages past the
  // new end are freed) the file. No mapping may cover what a shrink frees.
  absl::Status Resize(size_t size);
  // Frees [offset, offset + len): those pages read as zeros again, or fault
  // under userfaultfd MISSING registration. Page aligned, inside the file.
  absl::Status PunchHole(size_t offset, size_t len);
  // The [begin, end) ranges of [from, to) that hold pages; never allocates.
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> DataRanges(size_t from, size_t to) const;
  // pwrite/pread of [offset, offset + len) through the page cache, not
  // through any mapping. Bounds-checked.
  absl::Status WriteAt(size_t offset, const uint8_t* data, size_t len);
  absl::Status ReadAt(size_t offset, uint8_t* out, size_t len) const;
  // Bytes of memory the file holds.
  absl::StatusOr<uint64_t> AllocatedBytes() const;

 private:
  MemfdFile(UniqueFd fd, size_t size, size_t page_size)
      : fd_(std::move(fd)), size_(size), page_size_(page_size) {}

  UniqueFd fd_;
  size_t size_ = 0;
  size_t page_size_ = 4096;
};

class AddressReservation {
 public:
  // Reserves `bytes` (page aligned, > 0) of address space, inaccessible and
  // without memory behind it.
  static absl::StatusOr<AddressReservation> Create(size_t bytes);

  AddressReservation(AddressReservation&& other) noexcept;
  AddressReservation& operator=(AddressReservation&& other) noexcept;
  AddressReservation(const AddressReservation&) = delete;
  AddressReservation& operator=(const AddressReservation&) = delete;
  ~AddressReservation();

  uint8_t* base() const { return base_; }
  size_t size() const { return size_; }

  // Maps [file_offset, file_offset + len) of `file` shared, read-write, at
  // base() + at, replacing whatever was there in one step (MAP_FIXED), with
  // transparent huge pages off. Inside the reservation and the file.
  absl::Status Map(size_t at, const MemfdFile& file, size_t file_offset, size_t len);
  // Makes [at, at + len) inaccessible and unbacked again.
  absl::Status Unmap(size_t at, size_t len);
  // Moves the mapping at `from` + [from_at, from_at + len) to base() + at,
  // page tables and all (mremap with MREMAP_DONTUNMAP): the pages stay
  // mapped where they go, so nothing faults again, and the source range
  // stays mapped (empty: it faults its pages back in from the file if
  // touched) until the caller maps over it or unmaps it. Both ranges inside
  // their reservations, not overlapping, and [from_at, +len) one mapping.
  absl::Status MoveFrom(const AddressReservation& from, size_t from_at, size_t at, size_t len);

 private:
  AddressReservation(uint8_t* base, size_t size) : base_(base), size_(size) {}

  uint8_t* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ferry::sys

#endif  // FERRY_SYS_MEMFD_FILE_H_
