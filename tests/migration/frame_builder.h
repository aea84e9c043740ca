// Hand-built page frames for tests (migration/page_frame.h gives the
// layout): any field may be set to a value the encoder would never write.
#ifndef FERRY_TESTS_MIGRATION_FRAME_BUILDER_H_
#define FERRY_TESTS_MIGRATION_FRAME_BUILDER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "migration/page_frame.h"

namespace ferry::migration::testing {

struct RawRun {
  uint64_t gpa = 0;
  uint32_t count = 0;
  std::string data;  // usually count pages; tests may make it shorter
};

struct RawFrame {
  uint8_t kind = kPageFrame;
  uint8_t phase = static_cast<uint8_t>(FramePhase::kPrecopy);
  uint64_t round = 0;
  uint64_t zero_base_gpa = 0;
  std::string zero_bitmap;
  std::vector<RawRun> runs;
  int run_count_delta = 0;  // added to the header's run count

  // A frame of one run of `count` pages at page `first`, each byte `fill`.
  static RawFrame Data(uint64_t first, uint32_t count, char fill, uint32_t page = 4096) {
    RawFrame f;
    f.runs.push_back({first * page, count, std::string(uint64_t{count} * page, fill)});
    return f;
  }

  std::string Bytes() const {
    std::string out(kFrameHeaderBytes, '\0');
    auto put = [&out](size_t at, uint64_t v, int n) {
      for (int i = 0; i < n; ++i) out[at + i] = static_cast<char>(v >> (8 * i));
    };
    out[0] = static_cast<char>(kind);
    out[1] = static_cast<char>(phase);
    put(4, static_cast<uint32_t>(static_cast<int>(runs.size()) + run_count_delta), 4);
    put(8, round, 8);
    put(16, zero_base_gpa, 8);
    put(24, zero_bitmap.size(), 4);
    out += zero_bitmap;
    for (const RawRun& r : runs) {
      std::string h(kRunHeaderBytes, '\0');
      for (int i = 0; i < 8; ++i) h[i] = static_cast<char>(r.gpa >> (8 * i));
      for (int i = 0; i < 4; ++i) h[8 + i] = static_cast<char>(r.count >> (8 * i));
      out += h;
      out += r.data;
    }
    return out;
  }
};

// `bytes` cut into spans of `piece` bytes (the last may be shorter), as a
// transport might deliver them.
inline std::vector<absl::Span<const uint8_t>> Split(const std::string& bytes, size_t piece) {
  std::vector<absl::Span<const uint8_t>> out;
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  for (size_t at = 0; at < bytes.size(); at += piece)
    out.emplace_back(p + at, std::min(piece, bytes.size() - at));
  return out;
}

}  // namespace ferry::migration::testing

#endif  // FERRY_TESTS_MIGRATION_FRAME_BUILDER_H_
