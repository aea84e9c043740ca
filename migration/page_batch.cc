#include "migration/page_batch.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "migration/protocol.h"
#include "vmm/page_source.h"

namespace ferry::migration {
namespace {

// Appends the page at `gpa` to `runs`, extending the last run when it is
// contiguous.
void AppendRun(google::protobuf::RepeatedPtrField<ferry::v1::PageRun>* runs, uint64_t gpa,
               uint32_t page_size) {
  if (!runs->empty()) {
    ferry::v1::PageRun& last = *runs->rbegin();
    if (last.gpa() + uint64_t{last.count()} * page_size == gpa) {
      last.set_count(last.count() + 1);
      return;
    }
  }
  ferry::v1::PageRun* run = runs->Add();
  run->set_gpa(gpa);
  run->set_count(1);
}

// One past the highest guest-physical address of RAM.
uint64_t GpaEnd(const vmm::MemoryMap& map) {
  uint64_t end = 0;
  for (const vmm::MemorySlot& s : map.slots()) end = std::max(end, s.gpa + s.size);
  return end;
}

absl::Status CheckInRam(const vmm::MemoryMap& map, uint64_t gpa, uint64_t count,
                        const char* what) {
  const uint32_t ps = map.page_size();
  if (count > map.num_pages())
    return absl::OutOfRangeError(absl::StrFormat(
        "page batch: %s at gpa %#x of %d pages is larger than the VM's %d pages", what, gpa,
        count, map.num_pages()));
  absl::StatusOr<uint64_t> offset = map.GpaToOffset(gpa, count * ps);
  if (!offset.ok())
    return absl::OutOfRangeError(absl::StrFormat("page batch: %s at gpa %#x of %d pages: %s",
                                                 what, gpa, count, offset.status().message()));
  return absl::OkStatus();
}

// True when [gpa, gpa + count pages) overlaps one of `sorted` (by gpa).
bool Overlaps(const std::vector<DecodedRun>& sorted, uint64_t gpa, uint64_t count,
              uint32_t ps) {
  auto it = std::upper_bound(sorted.begin(), sorted.end(), gpa,
                             [](uint64_t g, const DecodedRun& r) { return g < r.gpa; });
  if (it != sorted.end() && it->gpa < gpa + count * ps) return true;
  if (it != sorted.begin()) {
    const DecodedRun& prev = *(it - 1);
    if (prev.gpa + prev.count * ps > gpa) return true;
  }
  return false;
}

}  // namespace

void AppendPageRuns(const vmm::MemoryMap& map, absl::Span<const uint64_t> pages,
                    google::protobuf::RepeatedPtrField<ferry::v1::PageRun>* runs) {
  const uint32_t ps = map.page_size();
  for (uint64_t p : pages) AppendRun(runs, map.OffsetToGpa(p * ps), ps);
}

EncodedBatch EncodePageBatch(const vmm::GuestMemory& memory,
                             absl::Span<const uint64_t> pages, ferry::v1::Phase phase,
                             uint64_t round, ferry::v1::PageBatch* out,
                             absl::FunctionRef<void(uint64_t page, bool is_data)> on_page) {
  const vmm::MemoryMap& map = memory.map();
  const uint32_t ps = memory.page_size();
  out->Clear();
  out->set_phase(phase);
  out->set_round(round);
  std::string* data = out->mutable_data();
  data->reserve(pages.size() * ps);
  std::vector<uint64_t> zeros;  // gpas
  for (uint64_t p : pages) {
    const uint8_t* src = memory.host() + p * ps;
    const uint64_t gpa = map.OffsetToGpa(p * ps);
    const bool zero = vmm::IsZeroPage(src, ps);
    on_page(p, !zero);
    if (zero) {
      zeros.push_back(gpa);
      continue;
    }
    AppendRun(out->mutable_runs(), gpa, ps);
    data->append(reinterpret_cast<const char*>(src), ps);
  }
  if (!zeros.empty()) {
    const auto [lo, hi] = std::minmax_element(zeros.begin(), zeros.end());
    out->set_zero_base_gpa(*lo);
    std::string* bits = out->mutable_zero_bitmap();
    bits->assign((*hi - *lo) / ps / 8 + 1, '\0');
    for (uint64_t g : zeros) {
      const uint64_t bit = (g - *lo) / ps;
      (*bits)[bit / 8] |= static_cast<char>(1 << (bit % 8));
    }
  }
  EncodedBatch e;
  e.data_pages = data->size() / ps;
  e.zero_pages = zeros.size();
  e.wire_bytes = data->size() + out->zero_bitmap().size();
  return e;
}

absl::StatusOr<DecodedBatch> DecodePageBatch(const ferry::v1::PageBatch& b,
                                             const vmm::MemoryMap& map) {
  const uint32_t ps = map.page_size();
  DecodedBatch d;
  // Data runs: each non-empty, aligned, inside RAM, and together exactly the
  // bytes the batch carries.
  const auto* data = reinterpret_cast<const uint8_t*>(b.data().data());
  const uint64_t data_bytes = b.data().size();
  uint64_t offset = 0;
  for (const ferry::v1::PageRun& run : b.runs()) {
    if (run.count() == 0 || run.gpa() % ps != 0)
      return absl::InvalidArgumentError(absl::StrFormat(
          "page batch: run at gpa %#x of %d pages is empty or not page aligned", run.gpa(),
          run.count()));
    if (d.pages + run.count() > kMaxBatchPages)
      return absl::InvalidArgumentError(absl::StrFormat(
          "page batch: its runs name more than %d pages", kMaxBatchPages));
    if (run.count() * uint64_t{ps} > data_bytes - offset)
      return absl::InvalidArgumentError(absl::StrFormat(
          "page batch: the run at gpa %#x of %d pages reaches past the %d bytes of data "
          "the batch carries",
          run.gpa(), run.count(), data_bytes));
    if (absl::Status s = CheckInRam(map, run.gpa(), run.count(), "run"); !s.ok()) return s;
    d.data_runs.push_back({run.gpa(), run.count(), data + offset});
    offset += run.count() * uint64_t{ps};
    d.pages += run.count();
  }
  if (offset != data_bytes)
    return absl::InvalidArgumentError(absl::StrFormat(
        "page batch: runs name %d pages (%d bytes) but the batch carries %d bytes",
        offset / ps, offset, data_bytes));

  // The zero bitmap: bounded by the VM's size before any bit is looked at.
  const std::string& bits = b.zero_bitmap();
  if (bits.empty()) return d;
  const uint64_t max_bytes = GpaEnd(map) / ps / 8 + 1;
  if (bits.size() > max_bytes)
    return absl::InvalidArgumentError(absl::StrFormat(
        "page batch: a zero bitmap of %d bytes is larger than the VM's address space "
        "(at most %d bytes)",
        bits.size(), max_bytes));
  if (b.zero_base_gpa() % ps != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "page batch: the zero bitmap's base %#x is not page aligned", b.zero_base_gpa()));
  std::vector<DecodedRun> sorted = d.data_runs;
  std::sort(sorted.begin(), sorted.end(),
            [](const DecodedRun& x, const DecodedRun& y) { return x.gpa < y.gpa; });
  const uint64_t nbits = bits.size() * 8;
  auto bit = [&bits](uint64_t i) { return (static_cast<uint8_t>(bits[i / 8]) >> (i % 8)) & 1; };
  for (uint64_t i = 0; i < nbits;) {
    if (!bit(i)) {
      ++i;
      continue;
    }
    const uint64_t first = i;
    while (i < nbits && bit(i)) ++i;
    const uint64_t count = i - first;
    if (d.pages + count > kMaxBatchPages)
      return absl::InvalidArgumentError(absl::StrFormat(
          "page batch: with its zero bitmap it names more than %d pages", kMaxBatchPages));
    const uint64_t gpa = b.zero_base_gpa() + first * ps;
    if (gpa < b.zero_base_gpa())
      return absl::OutOfRangeError("page batch: the zero bitmap wraps the address space");
    if (absl::Status s = CheckInRam(map, gpa, count, "a zero run"); !s.ok()) return s;
    if (Overlaps(sorted, gpa, count, ps))
      return absl::InvalidArgumentError(absl::StrFormat(
          "page batch: the zero bitmap marks pages at gpa %#x that the batch also sends "
          "as data",
          gpa));
    d.zero_runs.push_back({gpa, count, nullptr});
    d.pages += count;
  }
  return d;
}

}  // namespace ferry::migration
