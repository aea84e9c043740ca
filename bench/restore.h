// The restore scenario: snapshots and restores of one guest, side by side
// in one run (docs/snapshots.md, "Figures"). Per workload: the guest runs,
// is snapshotted paused and live, and is restored eagerly, lazily from a
// warm file (in the page cache) and lazily from a cold one (dropped from the
// page cache first). Each restored guest is watched for `observe`: time to
// its first instruction, time until every page is present (from then on
// it runs at full speed: it cannot fault), and the guest-impact figures
// against the speed it had before the snapshot (migration/guest_impact.h).
// Every restored guest ends with the digest of a replay of its op stream.
//
// References measured in the same run: the page cache's 4 KiB random-read
// latency through io_uring (what a fault from a warm file cannot beat) and
// the file's cold sequential read rate (what a cold restore's fill cannot
// beat). Clones: `clones` lazy restores of one snapshot, started one after
// the other: the time to start each, the time until all are filled, the
// page cache they share (the file, once) and the guest memory each holds.
#ifndef FERRY_BENCH_RESTORE_H_
#define FERRY_BENCH_RESTORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "vmm/vm.h"

namespace ferry::bench {

struct RestoreBenchOptions {
  std::vector<uint64_t> memory_bytes = {1ull << 30};
  int vcpus = 2;
  std::vector<vmm::WorkloadKind> workloads = {vmm::WorkloadKind::kIdle, vmm::WorkloadKind::kZipf,
                                              vmm::WorkloadKind::kHotset};
  vmm::FaultMode fault_mode = vmm::FaultMode::kExit;
  int clones = 8;
  std::string dir;  // snapshots go here (a fresh subdirectory, removed after)
  absl::Duration observe = absl::Seconds(3);
};

struct SnapshotRow {
  std::string workload;
  uint64_t memory_bytes = 0;
  uint64_t data_bytes = 0;  // in the memory file (zero pages are holes)
  double write_ms = 0;      // paused snapshot, synced
  double live_write_ms = 0;
  double live_paused_ms = 0;
  int live_rounds = 0;
};

struct RestoreRow {
  std::string workload;
  uint64_t memory_bytes = 0;
  std::string how;  // "eager", "lazy" (warm file), "lazy-cold"
  uint64_t data_bytes = 0;  // the snapshot's data pages
  // lazy-cold: what the data takes at the cold read rate of the same run
  // (RestoreReference::cold_read_gbps), the physical limit of full_speed_ms.
  double limit_ms = 0;
  double first_instruction_ms = 0;
  double full_speed_ms = 0;  // every page present
  double below_half_ms = 0;
  double mgu_100ms = 1;
  double mgu_1s = 1;
  uint64_t faults = 0;
  double fault_p50_us = 0;
  double fault_p99_us = 0;
  uint64_t background_pages = 0;
  bool digest_match = false;
};

struct RestoreReference {
  double page_cache_read_p50_us = 0;  // io_uring, 4 KiB, random, warm
  double page_cache_read_p99_us = 0;
  double cold_read_gbps = 0;  // the file's data, sequential, after dropping it from the cache
};

struct ClonesRow {
  int clones = 0;
  uint64_t memory_bytes = 0;
  double start_ms_median = 0;  // Start() to first instruction, per clone
  double start_ms_max = 0;
  double all_filled_ms = 0;              // the first Start() to the last clone filled
  uint64_t shared_page_cache_bytes = 0;  // the snapshot file, resident once
  uint64_t guest_bytes_per_clone = 0;    // each clone's own guest memory (median)
  bool digests_match = false;
};

struct RestoreBenchResult {
  std::vector<SnapshotRow> snapshots;
  std::vector<RestoreRow> restores;
  RestoreReference reference;
  ClonesRow clones;
};

absl::StatusOr<RestoreBenchResult> RunRestoreBench(const RestoreBenchOptions& options);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_RESTORE_H_
