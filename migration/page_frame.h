// The page frame: how pages of guest memory travel on the migration stream,
// encoded by the source and decoded by the destination, both here.
//
// Every gRPC message the source sends on ferry.v1.Migration/Migrate starts
// with one kind byte: kControlFrame (a serialized ferry.v1.SourceMessage
// follows) or kPageFrame (this binary frame). Page data is never a protobuf
// field: the source hands gRPC slices that reference guest memory (or one
// buffer the frame owns, read through the memory file: FrameData), and the
// destination walks the received slices and installs each run from them.
//
// Layout (little-endian, docs/protocol.md):
//   header   32 bytes: u8 kind=2, u8 phase (1 precopy, 2 stop-and-copy,
//            3 postcopy), u16 0, u32 run_count, u64 round, u64 zero_base_gpa,
//            u32 zero_bitmap_bytes, u32 0
//   bitmap   zero_bitmap_bytes: bit i (LSB first) marks the zero page at
//            zero_base_gpa + i * page_size; zero pages carry no bytes
//   runs     run_count times: u64 gpa, u32 count, u32 0, then count pages of
//            data
//
// Decoding validates the whole frame before anything is installed, so a bad
// frame changes no guest memory. It rejects, naming what is wrong: a frame
// shorter or longer than its headers say, an unknown phase, a non-zero
// reserved field, an empty or unaligned run, a run outside RAM, more than
// kMaxBatchPages pages, a zero bitmap larger than the VM, with an unaligned
// base, with bits outside RAM or marking a page the frame also sends as data.
// Every size from the peer is checked before it is used.
//
// Thread-safe: every function is pure.
#ifndef FERRY_MIGRATION_PAGE_FRAME_H_
#define FERRY_MIGRATION_PAGE_FRAME_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ferry/v1/migration.pb.h"
#include "vmm/guest_memory.h"
#include "vmm/memory_map.h"

namespace ferry::migration {

// The first byte of every source message on the migration stream.
inline constexpr uint8_t kControlFrame = 1;
inline constexpr uint8_t kPageFrame = 2;
inline constexpr size_t kFrameHeaderBytes = 32;
inline constexpr size_t kRunHeaderBytes = 16;

// A control message as it travels: kControlFrame, then the serialized
// message.
std::string EncodeControlFrame(const ferry::v1::SourceMessage& message);

enum class FramePhase : uint8_t { kPrecopy = 1, kStopAndCopy = 2, kPostcopy = 3 };
const char* FramePhaseName(FramePhase phase);

// Bytes of the frame in wire order: either owned by the EncodedFrame
// (headers and bitmap) or guest memory (page data, referenced, not copied).
struct FramePiece {
  const uint8_t* data = nullptr;
  size_t size = 0;
  bool guest_memory = false;
};

// How an encoded frame carries its page data (send_path.h chooses).
enum class FrameData : uint8_t {
  // Pieces reference guest memory: no copy in user space; the kernel reads
  // each page through the VM's mapping as it sends it.
  kReference,
  // Read from the memory file (pread: the page cache) into one buffer the
  // frame owns, headers included: one copy more, and the kernel never
  // reads through the VM's mapping.
  kCopy,
};

// An encoded frame. Its guest-memory pieces point into the VM's memory,
// which must stay mapped until the transport is done with them.
class EncodedFrame {
 public:
  EncodedFrame() = default;
  EncodedFrame(EncodedFrame&&) = default;
  EncodedFrame& operator=(EncodedFrame&&) = default;

  const std::vector<FramePiece>& pieces() const { return pieces_; }
  uint64_t data_pages() const { return data_pages_; }
  uint64_t zero_pages() const { return zero_pages_; }
  // Bytes of the whole frame (headers, bitmap and page data).
  uint64_t wire_bytes() const { return wire_bytes_; }
  // The frame as one string (tests, and transports that must copy).
  std::string Flatten() const;
  // A frame of exactly `bytes`, unchecked: for tests and fuzzers that put
  // malformed frames on a real stream.
  static EncodedFrame FromBytes(std::string bytes);
  // A frame encoded with FrameData::kCopy holds every byte in one buffer
  // of wire_bytes(): this hands it over (free it with delete[]) and leaves
  // no pieces. nullptr for other frames.
  std::unique_ptr<uint8_t[]> ReleaseWhole();

 private:
  friend EncodedFrame EncodePageFrame(const vmm::GuestMemory&, absl::Span<const uint64_t>,
                                      FramePhase, uint64_t, absl::FunctionRef<void(uint64_t, bool)>,
                                      FrameData);
  // Every owned byte, back to back; never resized once built (a move keeps
  // the buffer, so pieces stay valid).
  std::vector<uint8_t> headers_;
  std::unique_ptr<uint8_t[]> whole_;  // FrameData::kCopy: the whole frame
  std::vector<FramePiece> pieces_;
  uint64_t data_pages_ = 0;
  uint64_t zero_pages_ = 0;
  uint64_t wire_bytes_ = 0;
};

// Encodes RAM pages `pages` (RAM page indices, any order; adjacent ascending
// pages share a run) of `memory`. For each page, on_page(page, is_data).
// The bytes on the wire are the same whatever `data` says.
EncodedFrame EncodePageFrame(const vmm::GuestMemory& memory, absl::Span<const uint64_t> pages,
                             FramePhase phase, uint64_t round,
                             absl::FunctionRef<void(uint64_t page, bool is_data)> on_page,
                             FrameData data = FrameData::kReference);

// Runs of pages that FrameData::kCopy could not read through the memory
// file (the read failed) and copied from the mapping instead, in this
// process so far: the same bytes, by the slow path. Reports show it.
uint64_t FrameCopyFallbacks();

// Appends RAM pages `pages` (ascending) to `runs` as (gpa, count) runs,
// merging adjacent pages; used for discard sets.
void AppendPageRuns(const vmm::MemoryMap& map, absl::Span<const uint64_t> pages,
                    google::protobuf::RepeatedPtrField<ferry::v1::PageRun>* runs);

// A received frame as the transport holds it: byte spans in order (gRPC's
// slices), split anywhere.
using FrameBytes = absl::Span<const absl::Span<const uint8_t>>;

// A data run of a decoded frame: `count` pages at `gpa`, whose bytes start
// at byte `offset` of span `piece` of the frame and may continue into the
// following spans.
struct FrameDataRun {
  uint64_t gpa = 0;
  uint64_t count = 0;
  size_t piece = 0;
  size_t offset = 0;
};

struct FrameZeroRun {
  uint64_t gpa = 0;
  uint64_t count = 0;
};

struct DecodedFrame {
  FramePhase phase = FramePhase::kPrecopy;
  uint64_t round = 0;
  std::vector<FrameDataRun> data_runs;
  std::vector<FrameZeroRun> zero_runs;
  uint64_t pages = 0;  // data and zero
};

// Parses a control frame received in `bytes` (spans in order); false when
// it is not one or does not parse. Control messages are small: the spans
// are joined into one buffer.
bool ParseControlFrame(FrameBytes bytes, ferry::v1::SourceMessage* message);

// Validates the frame in `bytes` whole against `map` and returns its runs.
absl::StatusOr<DecodedFrame> DecodePageFrame(FrameBytes bytes, const vmm::MemoryMap& map);

// Calls fn(gpa, data, count) over the pages of `run` in order, in page-
// aligned pieces that are contiguous in memory: straight from the received
// spans where a stretch of whole pages lies in one span, through `bounce`
// (one page, caller-owned) for a page split across spans. Stops at fn's
// first error. `run` must come from DecodePageFrame(bytes, ...).
absl::Status ForEachRunPages(
    FrameBytes bytes, const FrameDataRun& run, uint32_t page_size, uint8_t* bounce,
    absl::FunctionRef<absl::Status(uint64_t gpa, const uint8_t* data, uint64_t count)> fn);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_PAGE_FRAME_H_
