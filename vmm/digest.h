// Memory digests: a 64-bit hash per page and one whole-memory digest, used to
// prove that no data was lost (the destination's memory after K guest ops
// equals a replay's). Not cryptographic: it detects accidents, not attacks.
//
// The page hash is four independent multiply-rotate lanes (xxHash64's round
// function) folded at the end; the whole digest hashes the page hashes in RAM
// order with the page count. About 10 GB/s per core; DigestMemory splits the
// work over two threads.
#ifndef FERRY_VMM_DIGEST_H_
#define FERRY_VMM_DIGEST_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::vmm {

class GuestMemory;

uint64_t HashPage(const uint8_t* page, uint32_t page_size);

struct MemoryDigest {
  uint64_t digest = 0;
  std::vector<uint64_t> page_hashes;  // RAM page order
};

// Digests all of `memory`. Pages that the memory file does not hold (holes)
// hash as zero pages without being touched, so this never faults. The caller
// must know that holes really are zero: on a destination, only after every
// page has been installed (see DemandPager::missing_pages()).
absl::StatusOr<MemoryDigest> DigestMemory(const GuestMemory& memory);

// Indices of pages whose hashes differ (both digests of the same layout).
std::vector<uint64_t> DifferingPages(const MemoryDigest& a, const MemoryDigest& b);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_DIGEST_H_
