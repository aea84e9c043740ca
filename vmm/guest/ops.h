// Guest operations: the one source of every workload's op stream. The VMM
// compiles it for software vCPUs and for the replay (vmm/workload.h), and
// the KVM guest image compiles the same file freestanding
// (vmm/guest/guest_main.cc), so one workload with one seed leaves the same
// memory on both backends.
//
// Rules that make that hold: integer arithmetic only (no floating point, no
// libm), no library calls, no allocation; everything a vCPU's stream depends
// on is in OpParams, computed once by the VMM.
//
// Op contract (what makes a faulted access invisible): an op performs its
// loads first and at most one store, last; the store's value depends only on
// what the op loaded and the accumulator. A fault on any access happens
// before the op has any effect, so the op is retried whole.
#ifndef FERRY_VMM_GUEST_OPS_H_
#define FERRY_VMM_GUEST_OPS_H_

#include <stdint.h>

namespace ferry::vmm::guest {

// Workload kinds, numbered as vmm::WorkloadKind and ferry.v1.WorkloadKind.
enum Kind : uint64_t { kIdle = 1, kSequential, kUniform, kZipf, kDirtyRate, kHotset };

inline constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

inline uint64_t Mix64(uint64_t x) {  // splitmix64's finalizer: a bijection
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Everything one vCPU's op stream depends on, besides its region's memory
// and its accumulator. Plain data with a fixed layout: the KVM guest reads
// it from its boot page.
struct OpParams {
  uint64_t kind;             // Kind
  uint64_t seed;             // per vCPU
  uint64_t pages;            // pages in the vCPU's region (>= 1)
  uint64_t words;            // 64-bit words per page
  uint64_t write_threshold;  // of 2^20: ops that write (uniform, zipf, hotset)
  uint64_t log2_pages_q26;   // log2(pages + 1), 26 fractional bits (zipf)
  uint64_t scatter;          // coprime with pages: spreads the zipf and hotset hot sets
  uint64_t hot_pages;        // hotset: pages in the hot set (1 to pages)
  uint64_t hot_threshold;    // hotset: of 2^20, ops that go to the hot set
};
static_assert(sizeof(OpParams) == 72, "OpParams is read by the guest image");

// floor(log2(n) * 2^26) for n >= 1, by repeated squaring.
inline uint64_t Log2Q26(uint64_t n) {
  const uint64_t k = 63 - static_cast<uint64_t>(__builtin_clzll(n));
  // m = n / 2^k in Q62, in [1, 2).
  unsigned __int128 m = k <= 62 ? static_cast<unsigned __int128>(n) << (62 - k)
                                : static_cast<unsigned __int128>(n >> 1);
  uint64_t frac = 0;
  for (int i = 0; i < 26; ++i) {
    m = (m * m) >> 62;
    frac <<= 1;
    if (m >> 63) {  // >= 2
      m >>= 1;
      frac |= 1;
    }
  }
  return (k << 26) | frac;
}

// kRoot[i] = 2^(2^-(i+1)) in Q62.
inline constexpr uint64_t kRoot[24] = {
    0x5a827999fcef3242ull, 0x4c1bf828c6dc54b7ull, 0x45cae0f1f545eb73ull,
    0x42d561b3e6243d8aull, 0x4166c34c5615d0ebull, 0x40b268f9de0183b9ull,
    0x4058f6a7ecccd5b6ull, 0x402c6be96af2fb58ull, 0x4016321b687027a8ull,
    0x400b18178ba33b14ull, 0x40058bce410147e8ull, 0x4002c5d7bff71daeull,
    0x400162e807ee7e5bull, 0x4000b1730df6a524ull, 0x400058b9497b8151ull,
    0x40002c5c955dd701ull, 0x4000162e46d6f26bull, 0x40000b1722757b1bull,
    0x4000058b90fd3e0cull, 0x400002c5c86f3f26ull, 0x40000162e433c79bull,
    0x400000b17218edcfull, 0x40000058b90c3968ull, 0x4000002c5c860d54ull,
};

inline constexpr uint64_t MulQ62(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 62);
}

// 2^(f / 2^24) in Q62 for f < 2^24, one root per set bit.
inline constexpr uint64_t Exp2BitsQ62(uint64_t f) {
  uint64_t r = 1ull << 62;
  for (int i = 0; i < 24; ++i)
    if ((f >> (23 - i)) & 1) r = MulQ62(r, kRoot[i]);
  return r;
}

// The same from three 256-entry tables (computed at compile time): two
// multiplications per draw instead of up to 24.
struct Exp2Tables {
  uint64_t t[3][256];
};
inline constexpr Exp2Tables MakeExp2Tables() {
  Exp2Tables e{};
  for (uint64_t i = 0; i < 256; ++i) {
    e.t[0][i] = Exp2BitsQ62(i << 16);
    e.t[1][i] = Exp2BitsQ62(i << 8);
    e.t[2][i] = Exp2BitsQ62(i);
  }
  return e;
}
inline constexpr Exp2Tables kExp2 = MakeExp2Tables();

inline uint64_t Exp2FractionQ62(uint64_t f) {
  return MulQ62(MulQ62(kExp2.t[0][(f >> 16) & 255], kExp2.t[1][(f >> 8) & 255]),
                kExp2.t[2][f & 255]);
}

// A Zipf(1) rank in [0, pages): rank = floor((pages + 1)^u) - 1 with u from
// the top 31 bits of `x`, so P(rank = k) ~ 1 / (k + 1).
inline uint64_t ZipfRank(uint64_t x, uint64_t pages, uint64_t log2_pages_q26) {
  const uint64_t u31 = x >> 33;
  const uint64_t e = u31 * log2_pages_q26;  // Q57: u (Q31) * log2 (Q26)
  const uint64_t k = e >> 57;
  const uint64_t f24 = (e >> 33) & ((1ull << 24) - 1);
  const uint64_t r = Exp2FractionQ62(f24);  // [1, 2) in Q62
  const uint64_t value = k >= 62 ? ~0ull : r >> (62 - k);
  const uint64_t rank = value == 0 ? 0 : value - 1;
  return rank >= pages ? pages - 1 : rank;
}

// Executes op `index` of the stream `p` on `region` with accumulator `acc`;
// returns the new accumulator. Each load and store happens exactly as
// written, in order (volatile).
inline uint64_t Step(const OpParams& p, volatile uint64_t* region, uint64_t index,
                     uint64_t acc) {
  const uint64_t x = Mix64(p.seed + index * kGolden);
  uint64_t page, word;
  bool write;
  switch (p.kind) {
    case kIdle:
      page = index % p.pages;
      word = 0;
      write = false;
      break;
    case kSequential:
      page = index % p.pages;
      word = (index / p.pages) % p.words;
      write = true;
      break;
    case kUniform:
      page = x % p.pages;
      word = (x >> 40) % p.words;
      write = ((x >> 20) & 0xfffff) < p.write_threshold;
      break;
    case kZipf:
      page = (ZipfRank(x, p.pages, p.log2_pages_q26) * p.scatter) % p.pages;
      word = (x >> 40) % p.words;
      write = ((x >> 20) & 0xfffff) < p.write_threshold;
      break;
    case kHotset: {
      // A second draw decides hot or not and the hot page, so that the
      // write decision and the word keep their bits of x.
      const uint64_t y = Mix64(x ^ kGolden);
      page = (y & 0xfffff) < p.hot_threshold ? ((y >> 20) % p.hot_pages) * p.scatter % p.pages
                                             : x % p.pages;
      word = (x >> 40) % p.words;
      write = ((x >> 20) & 0xfffff) < p.write_threshold;
      break;
    }
    case kDirtyRate:
    default: {  // a pure store: a write fault
      page = x % p.pages;
      word = (x >> 40) % p.words;
      const uint64_t next = Mix64(acc ^ p.seed ^ (index + 1) * kGolden);
      region[page * p.words + word] = next;
      return next;
    }
  }
  volatile uint64_t* w = region + page * p.words + word;
  const uint64_t v = *w;
  if (!write) return Mix64(acc ^ v);
  const uint64_t next = Mix64(v ^ acc ^ p.seed ^ (index + 1) * kGolden);
  *w = next;
  return next;
}

}  // namespace ferry::vmm::guest

#endif  // FERRY_VMM_GUEST_OPS_H_
