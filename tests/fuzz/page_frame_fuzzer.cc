// Fuzz target: the page-stream decoder (migration/page_frame.h). The first
// byte sets where the frame is cut into received slices (as gRPC hands
// them over); the rest is the frame. A frame that decodes must only name
// pages inside the VM's RAM, at most kMaxBatchPages of them, none both as
// data and as zero; walking its data runs must visit exactly the pages
// named, in order.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "migration/page_frame.h"
#include "migration/protocol.h"
#include "vmm/memory_map.h"

namespace {

constexpr uint32_t kPage = 4096;

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "page_frame_fuzzer: %s\n", what);
    abort();
  }
}

const ferry::vmm::MemoryMap& Map() {
  static const auto* map =
      new ferry::vmm::MemoryMap(*ferry::vmm::MemoryMap::ForSize(256 * kPage, kPage));
  return *map;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ferry::migration;  // NOLINT: a fuzz target
  if (size < 1) return 0;
  const size_t piece = 1 + data[0] * 64;
  std::vector<absl::Span<const uint8_t>> spans;
  for (size_t at = 1; at < size; at += piece)
    spans.emplace_back(data + at, std::min(piece, size - at));
  const ferry::vmm::MemoryMap& map = Map();
  absl::StatusOr<DecodedFrame> d = DecodePageFrame(spans, map);
  if (!d.ok()) return 0;
  uint64_t named = 0;
  std::vector<bool> zero(map.num_pages(), false);
  auto mark = [&](uint64_t gpa, uint64_t count, bool is_zero) {
    auto offset = map.GpaToOffset(gpa, count * kPage);
    Check(offset.ok(), "a decoded run lies inside RAM");
    for (uint64_t p = *offset / kPage; p < *offset / kPage + count; ++p) {
      if (is_zero) zero[p] = true;
      else Check(!zero[p], "no page is both zero and data");
    }
    named += count;
  };
  for (const FrameZeroRun& z : d->zero_runs) mark(z.gpa, z.count, true);
  std::vector<uint8_t> bounce(kPage);
  for (const FrameDataRun& r : d->data_runs) {
    uint64_t next = r.gpa, walked = 0;
    absl::Status s = ForEachRunPages(spans, r, kPage, bounce.data(),
                                     [&](uint64_t gpa, const uint8_t* bytes, uint64_t count) {
                                       Check(gpa == next, "pages are visited in order");
                                       Check(bytes != nullptr, "page bytes exist");
                                       next += count * kPage;
                                       walked += count;
                                       return absl::OkStatus();
                                     });
    Check(s.ok(), "a decoded run can be walked");
    Check(walked == r.count, "a walk visits every page of its run");
    mark(r.gpa, r.count, false);
  }
  Check(named <= kMaxBatchPages, "a frame names at most kMaxBatchPages pages");
  Check(named == d->pages, "the decoder's page count is the runs' sum");
  return 0;
}
