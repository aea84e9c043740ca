// The PageBatch codec: how pages of guest memory travel on the migration
// stream (message PageBatch in proto/ferry/v1/migration.proto), encoded by
// the source and decoded by the destination, both here.
//
// Format: data pages as `runs` (gpa, count) in order with their bytes back
// to back in `data`; zero pages as bits of `zero_bitmap` (bit i, LSB first,
// is the page at zero_base_gpa + i * page_size). A zero page never travels
// as 4 KiB of zeros.
//
// Decoding validates the whole batch before anything is installed, so a bad
// batch changes no guest memory. It rejects, each with InvalidArgument or
// OutOfRange naming what is wrong: an empty or unaligned run, a run outside
// RAM (or past its end), runs naming more bytes than the batch carries (or
// fewer), a batch naming more than kMaxBatchPages pages, a zero bitmap
// larger than the VM, with an unaligned base, with bits outside RAM, or
// marking a page the same batch also sends as data. Sizes from the peer are
// checked before anything is expanded.
//
// Thread-safe: both functions are pure.
//
//   ferry::v1::PageBatch batch;
//   EncodePageBatch(memory, pages, ferry::v1::PHASE_PRECOPY, 0, &batch, nullptr);
//   ASSIGN_OR_RETURN(DecodedBatch d, DecodePageBatch(batch, memory.map()));
#ifndef FERRY_MIGRATION_PAGE_BATCH_H_
#define FERRY_MIGRATION_PAGE_BATCH_H_

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ferry/v1/migration.pb.h"
#include "vmm/guest_memory.h"
#include "vmm/memory_map.h"

namespace ferry::migration {

// What one encoded batch carries.
struct EncodedBatch {
  uint64_t data_pages = 0;
  uint64_t zero_pages = 0;
  uint64_t wire_bytes = 0;  // page data plus the zero bitmap
};

// Encodes RAM pages `pages` (RAM page indices; adjacent ascending pages
// share a run) of `memory` into `out`, which is cleared first. For each
// page, `on_page(page, is_data)` is called (may be null).
EncodedBatch EncodePageBatch(const vmm::GuestMemory& memory,
                             absl::Span<const uint64_t> pages, ferry::v1::Phase phase,
                             uint64_t round, ferry::v1::PageBatch* out,
                             absl::FunctionRef<void(uint64_t page, bool is_data)> on_page);

// Appends RAM pages `pages` (ascending) to `runs` as (gpa, count) runs,
// merging adjacent pages; used for discard sets.
void AppendPageRuns(const vmm::MemoryMap& map, absl::Span<const uint64_t> pages,
                    google::protobuf::RepeatedPtrField<ferry::v1::PageRun>* runs);

// `count` pages from guest-physical `gpa`; `data` points at their bytes in
// the batch (null for zero pages). Valid as long as the batch is.
struct DecodedRun {
  uint64_t gpa = 0;
  uint64_t count = 0;
  const uint8_t* data = nullptr;
};

struct DecodedBatch {
  std::vector<DecodedRun> data_runs;
  std::vector<DecodedRun> zero_runs;
  uint64_t pages = 0;  // data and zero
};

// Validates `batch` whole against `map` and returns its runs.
absl::StatusOr<DecodedBatch> DecodePageBatch(const ferry::v1::PageBatch& batch,
                                             const vmm::MemoryMap& map);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_PAGE_BATCH_H_
