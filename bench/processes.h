// The processes scenario: the same VM created and migrated with the VMs
// inside ferryd (one process per agent) and with a ferry-vmm process per VM
// (`ferryd --state-dir`), side by side in the same run, rotating, so all
// see the same machine. Every agent runs in a session of its own, as on
// two hosts; a third row puts the two in-ferryd agents in one session (one
// scheduling group under autogroup), the loopback-only layout earlier
// figures were taken with, to show what that alone is worth: VM creation time, precopy throughput
// and total time (an idle guest: the link, not the guest, sets the pace), and postcopy total time
// and fault latency (a guest writing uniformly at random). Page data goes from VMM to VMM in both
// layouts, so the migration figures should agree within noise; creation pays for starting a
// process.
#ifndef FERRY_BENCH_PROCESSES_H_
#define FERRY_BENCH_PROCESSES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::bench {

struct ProcessesOptions {
  uint64_t memory_bytes = 1ull << 30;
  int repeat = 3;
};

// One layout's medians over the repeats.
struct ProcessesRow {
  std::string layout;  // "in-ferryd/1-session", "in-ferryd" or "vmm-process"
  int runs = 0;
  double create_ms = 0;
  double precopy_gbps = 0;
  double precopy_total_ms = 0;
  double postcopy_total_ms = 0;
  double fault_p50_us = 0;
  double fault_p99_us = 0;
  bool digests_match = true;  // every run's destination matched its replay
};

absl::StatusOr<std::vector<ProcessesRow>> RunProcesses(const ProcessesOptions& options);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_PROCESSES_H_
