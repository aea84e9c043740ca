#include "vmm/digest.h"

#include <thread>
#include <vector>

#include "base/status_macros.h"
#include "vmm/guest_memory.h"

namespace ferry::vmm {
namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Round(uint64_t acc, uint64_t in) {
  return Rotl(acc + in * kP2, 31) * kP1;
}
inline uint64_t Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  return h ^ (h >> 32);
}

void HashRange(const GuestMemory& memory, const std::vector<bool>& present,
               uint64_t zero_hash, uint64_t first, uint64_t last,
               std::vector<uint64_t>* out) {
  const uint32_t ps = memory.page_size();
  for (uint64_t p = first; p < last; ++p)
    (*out)[p] = present[p] ? HashPage(memory.host() + p * ps, ps) : zero_hash;
}

}  // namespace

uint64_t HashPage(const uint8_t* page, uint32_t page_size) {
  const auto* w = reinterpret_cast<const uint64_t*>(page);
  uint64_t a = kP1 + kP2, b = kP2, c = 0, d = 0 - kP1;
  for (uint32_t i = 0; i < page_size / 8; i += 4) {
    a = Round(a, w[i]);
    b = Round(b, w[i + 1]);
    c = Round(c, w[i + 2]);
    d = Round(d, w[i + 3]);
  }
  uint64_t h = Rotl(a, 1) + Rotl(b, 7) + Rotl(c, 12) + Rotl(d, 18) + page_size;
  return Avalanche(h);
}

absl::StatusOr<MemoryDigest> DigestMemory(const GuestMemory& memory) {
  ASSIGN_OR_RETURN(std::vector<bool> present, memory.PresentPages());
  const uint32_t ps = memory.page_size();
  std::vector<uint8_t> zero(ps, 0);
  const uint64_t zero_hash = HashPage(zero.data(), ps);
  const uint64_t n = memory.num_pages();
  MemoryDigest d;
  d.page_hashes.resize(n);
  const uint64_t half = n / 2;
  std::thread other(HashRange, std::cref(memory), std::cref(present), zero_hash,
                    half, n, &d.page_hashes);
  HashRange(memory, present, zero_hash, 0, half, &d.page_hashes);
  other.join();
  uint64_t h = Avalanche(n * kP3);
  for (uint64_t ph : d.page_hashes) h = Round(h, ph);
  d.digest = Avalanche(h);
  return d;
}

std::vector<uint64_t> DifferingPages(const MemoryDigest& a, const MemoryDigest& b) {
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < a.page_hashes.size() && i < b.page_hashes.size(); ++i)
    if (a.page_hashes[i] != b.page_hashes[i]) out.push_back(i);
  return out;
}

}  // namespace ferry::vmm
