#include "migration/page_frame.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/str_format.h"
#include "migration/protocol.h"
#include "vmm/page_source.h"

namespace ferry::migration {
namespace {

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// One past the highest guest-physical address of RAM.
uint64_t GpaEnd(const vmm::MemoryMap& map) {
  uint64_t end = 0;
  for (const vmm::MemorySlot& s : map.slots()) end = std::max(end, s.gpa + s.size);
  return end;
}

absl::Status CheckInRam(const vmm::MemoryMap& map, uint64_t gpa, uint64_t count,
                        const char* what) {
  if (count > map.num_pages())
    return absl::OutOfRangeError(absl::StrFormat(
        "page frame: %s at gpa %#x of %d pages is larger than the VM's %d pages", what, gpa,
        count, map.num_pages()));
  absl::StatusOr<uint64_t> offset = map.GpaToOffset(gpa, count * map.page_size());
  if (!offset.ok())
    return absl::OutOfRangeError(absl::StrFormat("page frame: %s at gpa %#x of %d pages: %s",
                                                 what, gpa, count, offset.status().message()));
  return absl::OkStatus();
}

// True when [gpa, gpa + count pages) overlaps one of `sorted` (by gpa).
bool Overlaps(const std::vector<FrameDataRun>& sorted, uint64_t gpa, uint64_t count,
              uint32_t ps) {
  auto it = std::upper_bound(sorted.begin(), sorted.end(), gpa,
                             [](uint64_t g, const FrameDataRun& r) { return g < r.gpa; });
  if (it != sorted.end() && it->gpa < gpa + count * ps) return true;
  if (it != sorted.begin()) {
    const FrameDataRun& prev = *(it - 1);
    if (prev.gpa + prev.count * ps > gpa) return true;
  }
  return false;
}

// Reads a frame spread over spans.
class Cursor {
 public:
  explicit Cursor(FrameBytes bytes) : bytes_(bytes) { SkipEmpty(); }

  size_t piece() const { return piece_; }
  size_t offset() const { return offset_; }
  uint64_t remaining() const {
    uint64_t n = 0;
    for (size_t i = piece_; i < bytes_.size(); ++i) n += bytes_[i].size();
    return n - offset_;
  }
  // Copies the next n bytes to out; false when fewer are left.
  bool Read(void* out, size_t n) {
    auto* dst = static_cast<uint8_t*>(out);
    while (n > 0) {
      if (piece_ >= bytes_.size()) return false;
      const size_t take = std::min(n, bytes_[piece_].size() - offset_);
      std::memcpy(dst, bytes_[piece_].data() + offset_, take);
      dst += take;
      n -= take;
      Advance(take);
    }
    return true;
  }
  // Skips n bytes; false when fewer are left.
  bool Skip(uint64_t n) {
    while (n > 0) {
      if (piece_ >= bytes_.size()) return false;
      const uint64_t take = std::min<uint64_t>(n, bytes_[piece_].size() - offset_);
      n -= take;
      Advance(take);
    }
    return true;
  }

 private:
  void Advance(size_t n) {
    offset_ += n;
    SkipEmpty();
  }
  void SkipEmpty() {
    while (piece_ < bytes_.size() && offset_ >= bytes_[piece_].size()) {
      ++piece_;
      offset_ = 0;
    }
  }
  FrameBytes bytes_;
  size_t piece_ = 0;
  size_t offset_ = 0;
};

}  // namespace

const char* FramePhaseName(FramePhase phase) {
  switch (phase) {
    case FramePhase::kPrecopy: return "precopy";
    case FramePhase::kStopAndCopy: return "stop-and-copy";
    case FramePhase::kPostcopy: return "postcopy";
  }
  return "unknown";
}

std::string EncodeControlFrame(const ferry::v1::SourceMessage& message) {
  std::string bytes(1, static_cast<char>(kControlFrame));
  message.AppendToString(&bytes);
  return bytes;
}

bool ParseControlFrame(FrameBytes bytes, ferry::v1::SourceMessage* message) {
  if (bytes.empty() || bytes[0].empty() || bytes[0][0] != kControlFrame) return false;
  std::string buf;
  for (absl::Span<const uint8_t> b : bytes)
    buf.append(reinterpret_cast<const char*>(b.data()), b.size());
  return message->ParseFromArray(buf.data() + 1, static_cast<int>(buf.size() - 1));
}

std::string EncodedFrame::Flatten() const {
  std::string out;
  out.reserve(wire_bytes_);
  for (const FramePiece& p : pieces_) out.append(reinterpret_cast<const char*>(p.data), p.size);
  return out;
}

namespace {
std::atomic<uint64_t> copy_fallbacks{0};
}  // namespace

uint64_t FrameCopyFallbacks() { return copy_fallbacks.load(std::memory_order_relaxed); }

std::unique_ptr<uint8_t[]> EncodedFrame::ReleaseWhole() {
  if (whole_ != nullptr) pieces_.clear();
  return std::move(whole_);
}

EncodedFrame EncodedFrame::FromBytes(std::string bytes) {
  EncodedFrame f;
  f.headers_.assign(bytes.begin(), bytes.end());
  f.pieces_.push_back({f.headers_.data(), f.headers_.size(), false});
  f.wire_bytes_ = f.headers_.size();
  return f;
}

void AppendPageRuns(const vmm::MemoryMap& map, absl::Span<const uint64_t> pages,
                    google::protobuf::RepeatedPtrField<ferry::v1::PageRun>* runs) {
  const uint32_t ps = map.page_size();
  for (uint64_t p : pages) {
    const uint64_t gpa = map.OffsetToGpa(p * ps);
    if (!runs->empty()) {
      ferry::v1::PageRun& last = *runs->rbegin();
      if (last.gpa() + uint64_t{last.count()} * ps == gpa) {
        last.set_count(last.count() + 1);
        continue;
      }
    }
    ferry::v1::PageRun* run = runs->Add();
    run->set_gpa(gpa);
    run->set_count(1);
  }
}

EncodedFrame EncodePageFrame(const vmm::GuestMemory& memory, absl::Span<const uint64_t> pages,
                             FramePhase phase, uint64_t round,
                             absl::FunctionRef<void(uint64_t page, bool is_data)> on_page,
                             FrameData data) {
  const vmm::MemoryMap& map = memory.map();
  const uint32_t ps = memory.page_size();
  struct Run {
    uint64_t gpa;
    uint64_t first_page;
    uint32_t count;
  };
  std::vector<Run> runs;
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
    if (!runs.empty() && runs.back().gpa + uint64_t{runs.back().count} * ps == gpa &&
        runs.back().first_page + runs.back().count == p) {
      ++runs.back().count;
    } else {
      runs.push_back({gpa, p, 1});
    }
  }
  uint64_t zero_base = 0;
  std::string bitmap;
  if (!zeros.empty()) {
    const auto [lo, hi] = std::minmax_element(zeros.begin(), zeros.end());
    zero_base = *lo;
    bitmap.assign((*hi - *lo) / ps / 8 + 1, '\0');
    for (uint64_t g : zeros) {
      const uint64_t bit = (g - *lo) / ps;
      bitmap[bit / 8] |= static_cast<char>(1 << (bit % 8));
    }
  }

  EncodedFrame f;
  const size_t header_bytes = kFrameHeaderBytes + bitmap.size() + runs.size() * kRunHeaderBytes;
  uint8_t* h;
  if (data == FrameData::kCopy) {
    uint64_t data_bytes = 0;
    for (const Run& r : runs) data_bytes += uint64_t{r.count} * ps;
    f.whole_.reset(new uint8_t[header_bytes + data_bytes]);
    h = f.whole_.get();
    std::memset(h, 0, kFrameHeaderBytes);
  } else {
    f.headers_.assign(header_bytes, 0);
    h = f.headers_.data();
  }
  h[0] = kPageFrame;
  h[1] = static_cast<uint8_t>(phase);
  Put32(h + 4, static_cast<uint32_t>(runs.size()));
  Put64(h + 8, round);
  Put64(h + 16, zero_base);
  Put32(h + 24, static_cast<uint32_t>(bitmap.size()));
  std::memcpy(h + kFrameHeaderBytes, bitmap.data(), bitmap.size());
  const size_t lead = kFrameHeaderBytes + bitmap.size();
  if (data == FrameData::kCopy) {
    // Run header, then its pages read through the file, run after run.
    uint8_t* at = h + lead;
    for (const Run& r : runs) {
      std::memset(at, 0, kRunHeaderBytes);
      Put64(at, r.gpa);
      Put32(at + 8, r.count);
      at += kRunHeaderBytes;
      const size_t bytes = uint64_t{r.count} * ps;
      // The file is the memory: should the read fail, the mapping has the
      // same bytes (counted: FrameCopyFallbacks).
      if (!memory.Read(r.first_page * ps, at, bytes).ok()) {
        copy_fallbacks.fetch_add(1, std::memory_order_relaxed);
        std::memcpy(at, memory.host() + r.first_page * ps, bytes);
      }
      at += bytes;
      f.data_pages_ += r.count;
    }
    f.wire_bytes_ = static_cast<uint64_t>(at - h);
    f.pieces_.push_back({h, f.wire_bytes_, false});
    f.zero_pages_ = zeros.size();
    return f;
  }
  f.pieces_.push_back({h, lead, false});
  f.wire_bytes_ = lead;
  for (size_t i = 0; i < runs.size(); ++i) {
    uint8_t* rh = h + lead + i * kRunHeaderBytes;
    Put64(rh, runs[i].gpa);
    Put32(rh + 8, runs[i].count);
    const size_t bytes = uint64_t{runs[i].count} * ps;
    f.pieces_.push_back({rh, kRunHeaderBytes, false});
    f.pieces_.push_back({memory.host() + runs[i].first_page * ps, bytes, true});
    f.wire_bytes_ += kRunHeaderBytes + bytes;
    f.data_pages_ += runs[i].count;
  }
  f.zero_pages_ = zeros.size();
  return f;
}

absl::StatusOr<DecodedFrame> DecodePageFrame(FrameBytes bytes, const vmm::MemoryMap& map) {
  const uint32_t ps = map.page_size();
  Cursor c(bytes);
  uint8_t h[kFrameHeaderBytes];
  if (!c.Read(h, sizeof(h)))
    return absl::InvalidArgumentError(absl::StrFormat(
        "page frame: truncated: %d bytes, shorter than the %d-byte header", c.remaining(),
        kFrameHeaderBytes));
  if (h[0] != kPageFrame)
    return absl::InvalidArgumentError(
        absl::StrFormat("page frame: kind %d is not a page frame", h[0]));
  DecodedFrame d;
  if (h[1] < 1 || h[1] > 3)
    return absl::InvalidArgumentError(absl::StrFormat("page frame: unknown phase %d", h[1]));
  d.phase = static_cast<FramePhase>(h[1]);
  if (h[2] != 0 || h[3] != 0 || Get32(h + 28) != 0)
    return absl::InvalidArgumentError("page frame: a reserved header field is not zero");
  const uint32_t run_count = Get32(h + 4);
  d.round = Get64(h + 8);
  const uint64_t zero_base = Get64(h + 16);
  const uint32_t bitmap_bytes = Get32(h + 24);
  if (run_count > kMaxBatchPages)
    return absl::InvalidArgumentError(absl::StrFormat(
        "page frame: %d runs name more than %d pages", run_count, kMaxBatchPages));
  const uint64_t max_bitmap = GpaEnd(map) / ps / 8 + 1;
  if (bitmap_bytes > max_bitmap)
    return absl::InvalidArgumentError(absl::StrFormat(
        "page frame: a zero bitmap of %d bytes is larger than the VM's address space "
        "(at most %d bytes)",
        bitmap_bytes, max_bitmap));
  if (bitmap_bytes > c.remaining())
    return absl::InvalidArgumentError(absl::StrFormat(
        "page frame: truncated: the zero bitmap of %d bytes reaches past the frame's end",
        bitmap_bytes));
  std::string bitmap(bitmap_bytes, '\0');
  c.Read(bitmap.data(), bitmap_bytes);

  // Data runs: each non-empty, aligned, inside RAM, and its bytes present.
  for (uint32_t i = 0; i < run_count; ++i) {
    uint8_t rh[kRunHeaderBytes];
    if (!c.Read(rh, sizeof(rh)))
      return absl::InvalidArgumentError(absl::StrFormat(
          "page frame: truncated: the header of run %d of %d is missing", i + 1, run_count));
    const uint64_t gpa = Get64(rh);
    const uint32_t count = Get32(rh + 8);
    if (Get32(rh + 12) != 0)
      return absl::InvalidArgumentError("page frame: a reserved run field is not zero");
    if (count == 0 || gpa % ps != 0)
      return absl::InvalidArgumentError(absl::StrFormat(
          "page frame: run at gpa %#x of %d pages is empty or not page aligned", gpa, count));
    if (d.pages + count > kMaxBatchPages)
      return absl::InvalidArgumentError(absl::StrFormat(
          "page frame: its runs name more than %d pages", kMaxBatchPages));
    if (absl::Status s = CheckInRam(map, gpa, count, "run"); !s.ok()) return s;
    FrameDataRun run{gpa, count, c.piece(), c.offset()};
    if (!c.Skip(uint64_t{count} * ps))
      return absl::InvalidArgumentError(absl::StrFormat(
          "page frame: truncated: the run at gpa %#x of %d pages reaches past the frame's "
          "end",
          gpa, count));
    d.data_runs.push_back(run);
    d.pages += count;
  }
  if (c.remaining() != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "page frame: %d bytes follow the last of its %d runs", c.remaining(), run_count));

  if (bitmap.empty()) return d;
  if (zero_base % ps != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "page frame: the zero bitmap's base %#x is not page aligned", zero_base));
  std::vector<FrameDataRun> sorted = d.data_runs;
  std::sort(sorted.begin(), sorted.end(),
            [](const FrameDataRun& x, const FrameDataRun& y) { return x.gpa < y.gpa; });
  const uint64_t nbits = bitmap.size() * 8;
  auto bit = [&bitmap](uint64_t i) {
    return (static_cast<uint8_t>(bitmap[i / 8]) >> (i % 8)) & 1;
  };
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
          "page frame: with its zero bitmap it names more than %d pages", kMaxBatchPages));
    const uint64_t gpa = zero_base + first * ps;
    if (gpa < zero_base)
      return absl::OutOfRangeError("page frame: the zero bitmap wraps the address space");
    if (absl::Status s = CheckInRam(map, gpa, count, "a zero run"); !s.ok()) return s;
    if (Overlaps(sorted, gpa, count, ps))
      return absl::InvalidArgumentError(absl::StrFormat(
          "page frame: the zero bitmap marks pages at gpa %#x that the frame also sends "
          "as data",
          gpa));
    d.zero_runs.push_back({gpa, count});
    d.pages += count;
  }
  return d;
}

absl::Status ForEachRunPages(
    FrameBytes bytes, const FrameDataRun& run, uint32_t page_size, uint8_t* bounce,
    absl::FunctionRef<absl::Status(uint64_t gpa, const uint8_t* data, uint64_t count)> fn) {
  size_t piece = run.piece;
  size_t offset = run.offset;
  uint64_t page = 0;     // pages of the run handed to fn so far
  size_t partial = 0;    // bytes of the current page gathered in `bounce`
  while (page < run.count) {
    if (piece >= bytes.size())
      return absl::InternalError("page frame: a run reaches past its frame (not decoded?)");
    const absl::Span<const uint8_t> span = bytes[piece];
    const uint8_t* p = span.data() + offset;
    size_t avail = span.size() - offset;
    if (partial > 0 || avail < page_size) {
      // A page split across spans: gather it.
      const size_t take = std::min(avail, page_size - partial);
      std::memcpy(bounce + partial, p, take);
      partial += take;
      offset += take;
      if (partial == page_size) {
        if (absl::Status s = fn(run.gpa + page * page_size, bounce, 1); !s.ok()) return s;
        ++page;
        partial = 0;
      }
    } else {
      const uint64_t n = std::min<uint64_t>(avail / page_size, run.count - page);
      if (absl::Status s = fn(run.gpa + page * page_size, p, n); !s.ok()) return s;
      page += n;
      offset += n * page_size;
    }
    if (offset >= span.size()) {
      ++piece;
      offset = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::migration
