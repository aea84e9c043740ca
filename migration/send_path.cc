#include "migration/send_path.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "sys/memfd.h"

namespace ferry::migration {
namespace {

constexpr size_t kProbeBytes = 2 << 20;
constexpr size_t kChunkBytes = 256 << 10;
constexpr size_t kPage = 4096;
constexpr int kTrials = 3;
// A copied frame costs a second copy; it must save more than half again.
constexpr double kCopyWinsAbove = 1.5;

// A fresh memory file of kProbeBytes whose pages were written through its
// mapping (as a guest writes its memory): user space has touched them, the
// kernel has not.
absl::StatusOr<sys::MemfdMapping> FreshlyWritten() {
  ASSIGN_OR_RETURN(sys::MemfdMapping m,
                   sys::MemfdMapping::Create("ferry-send-probe", kProbeBytes, kPage));
  for (size_t off = 0; off < kProbeBytes; off += kPage)
    std::memset(m.data() + off, static_cast<int>(off / kPage) | 1, kPage);
  return m;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

const char* FrameDataName(FrameData data) {
  return data == FrameData::kCopy ? "copy" : "reference";
}

absl::StatusOr<SendPathChoice> ProbeSendPath() {
  // The kernel's copy stands in for sendmsg: a write into another memory
  // file copies from the user buffer the same way.
  ASSIGN_OR_RETURN(sys::MemfdMapping sink,
                   sys::MemfdMapping::Create("ferry-send-probe-sink", kChunkBytes, kPage));
  std::vector<uint8_t> buffer(kChunkBytes, 1);  // touched: a reused frame buffer
  double reference_s = 1e9, copy_s = 1e9;
  for (int t = 0; t < kTrials; ++t) {
    {
      ASSIGN_OR_RETURN(sys::MemfdMapping m, FreshlyWritten());
      const auto start = std::chrono::steady_clock::now();
      for (size_t off = 0; off < kProbeBytes; off += kChunkBytes)
        RETURN_IF_ERROR(sink.WriteAt(0, m.data() + off, kChunkBytes));
      reference_s = std::min(reference_s, Seconds(start));
    }
    {
      ASSIGN_OR_RETURN(sys::MemfdMapping m, FreshlyWritten());
      const auto start = std::chrono::steady_clock::now();
      for (size_t off = 0; off < kProbeBytes; off += kChunkBytes) {
        RETURN_IF_ERROR(m.ReadAt(off, buffer.data(), kChunkBytes));
        RETURN_IF_ERROR(sink.WriteAt(0, buffer.data(), kChunkBytes));
      }
      copy_s = std::min(copy_s, Seconds(start));
    }
  }
  SendPathChoice c;
  c.reference_gbps = kProbeBytes / std::max(reference_s, 1e-9) / 1e9;
  c.copy_gbps = kProbeBytes / std::max(copy_s, 1e-9) / 1e9;
  const bool copy = reference_s > kCopyWinsAbove * copy_s;
  c.data = copy ? FrameData::kCopy : FrameData::kReference;
  c.reason = copy
                 ? absl::StrFormat(
                       "copy through the page cache: the kernel reads fresh guest pages through "
                       "their mapping at %.2f GB/s here, a copy through the file runs at %.2f GB/s",
                       c.reference_gbps, c.copy_gbps)
                 : absl::StrFormat(
                       "reference guest memory: the kernel reads fresh guest pages through their "
                       "mapping at %.2f GB/s here, a copy through the file would run at %.2f GB/s",
                       c.reference_gbps, c.copy_gbps);
  return c;
}

const SendPathChoice& ChooseSendPath() {
  static const SendPathChoice* const choice = [] {
    absl::StatusOr<SendPathChoice> c = ProbeSendPath();
    if (c.ok()) return new SendPathChoice(*std::move(c));
    auto* fallback = new SendPathChoice();
    fallback->reason =
        absl::StrCat("reference guest memory (the probe failed: ", c.status().message(), ")");
    return fallback;
  }();
  return *choice;
}

}  // namespace ferry::migration
