// The reference scenario: what the link itself can do, measured in the same
// run as the scenarios compared with it.
//   tcp_gbps    one plain TCP stream moving `bytes` over loopback
//   rtt_p50_us  a plain 16-byte request / 4 KiB reply ping-pong on blocking
//   rtt_p99_us  sockets over loopback (the shape of a demand fetch)
#ifndef FERRY_BENCH_REFERENCE_H_
#define FERRY_BENCH_REFERENCE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "base/json.h"

namespace ferry::bench {

struct ReferenceResult {
  double tcp_gbps = 0;
  uint64_t tcp_bytes = 0;
  double rtt_p50_us = 0;
  double rtt_p99_us = 0;
  double rtt_p999_us = 0;
  uint64_t rtt_samples = 0;
  JsonObject ToJson() const;
};

absl::StatusOr<ReferenceResult> RunReference(uint64_t tcp_bytes, int rtt_samples);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_REFERENCE_H_
