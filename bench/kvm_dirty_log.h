// The KVM dirty-log scenario: the two ways KVM tracks a running guest's
// writes, side by side on the same VM shape and workload: the dirty bitmap
// with manual protect (KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG) and the
// per-vCPU dirty rings (harvest + KVM_RESET_DIRTY_RINGS). Per mode: the time
// one Collect() takes, the pages it reports, and the guest's ops/s while
// tracking against the same VM before tracking started. Needs /dev/kvm.
#ifndef FERRY_BENCH_KVM_DIRTY_LOG_H_
#define FERRY_BENCH_KVM_DIRTY_LOG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::bench {

struct KvmDirtyLogOptions {
  uint64_t memory = 256ull << 20;
  int vcpus = 2;
  std::string workload = "uniform";  // any workload kind
  int rounds = 20;                   // Collect() calls, 100 ms apart
  int repeat = 3;
};

struct KvmDirtyLogResult {
  std::string mode;  // bitmap or ring
  double collect_us_median = 0;
  double collect_us_max = 0;
  double pages_per_collect = 0;
  double ops_per_sec_untracked = 0;
  double ops_per_sec_tracked = 0;
};

absl::StatusOr<std::vector<KvmDirtyLogResult>> RunKvmDirtyLog(const KvmDirtyLogOptions& o);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_KVM_DIRTY_LOG_H_
