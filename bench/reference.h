// The reference scenario: what the link itself can do, measured in the same
// run as the scenarios compared with it.
//   tcp_gbps             one plain TCP stream moving `bytes` over loopback
//   tcp_into_memory_gbps the same, the receiver writing into a fresh memfd
//                        (what a destination must do with every page)
//   rtt_p50_us/p99_us    a plain 16-byte request / 4 KiB reply ping-pong on
//                        blocking sockets with TCP_NODELAY, no poll (the shape
//                        of a demand fetch), on a quiet machine (idle cores
//                        may halt between messages)
//   rtt_busy_p50_us/p99  the same while every core runs a SCHED_IDLE spinner:
//                        no core halts, as during a migration; the reference
//                        for postcopy fault latency
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
  double rtt_busy_p50_us = 0;
  double rtt_busy_p99_us = 0;
  double rtt_busy_p999_us = 0;
  uint64_t rtt_samples = 0;
  double tcp_into_memory_gbps = 0;
  uint64_t cores = 0;
  JsonObject ToJson() const;
};

absl::StatusOr<ReferenceResult> RunReference(uint64_t tcp_bytes, int rtt_samples);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_REFERENCE_H_
