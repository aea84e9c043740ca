// The suite: every scenario's matrix, repeated, with results as JSON lines
// and CSV and the plots, in one directory (ferry-bench suite --out DIR).
//   reference      plain TCP and a 16 B / 4 KiB ping-pong on loopback, and
//                  the guest's ops/s without migration (the baseline)
//   demand-paging  vCPUs x fault mode x page source (local, remote)
//   migrate        memory x workload x dirty rate x mode x fault mode x cap,
//                  between two ferryd processes
//   switchover     postcopy downtime by vCPU count
// --quick finishes in under two minutes on 2 cores; --tiny in seconds (the
// harness's own test in CI); --full is what
// docs/benchmarks.md shows. Each point is repeated; the CSV has the median
// and the spread (min, p25, p75, max); the plots use each point's median run.
// DIR/run.txt records the command, the start date, the wall time and the
// machine, and every plot carries the same in its corner.
#ifndef FERRY_BENCH_SUITE_H_
#define FERRY_BENCH_SUITE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ferry::bench {

struct SuiteOptions {
  enum class Size { kTiny, kQuick, kFull };
  Size size = Size::kQuick;  // kTiny: seconds, for the harness's own test
  std::string out = "bench-results";
  // The command line as run, for DIR/run.txt and the plots' captions.
  std::string command = "ferry-bench suite";
  // Override the plan's migrate matrix dimensions when not empty.
  std::vector<uint64_t> memories, dirty_rates, caps;
};

absl::Status RunSuite(const SuiteOptions& options);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_SUITE_H_
