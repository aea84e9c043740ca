// The local demo: the destination half of a postcopy migration, on one host,
// with no network. A VM's memory starts entirely missing; its vCPUs run a
// guest workload and every page they touch is faulted in from a local
// in-memory page source (the "source host's" memory image), while a
// background thread pre-faults the rest. At the end the memory digest is
// compared with a replay of the workload that never faulted.
//
// `ferry demo` runs this until the two-agent migration demo replaces it.
#ifndef FERRY_MIGRATION_CLI_LOCAL_DEMO_H_
#define FERRY_MIGRATION_CLI_LOCAL_DEMO_H_

#include <cstdint>
#include <cstdio>

#include "absl/status/status.h"
#include "vmm/demand_pager.h"
#include "vmm/workload.h"

namespace ferry::cli {

struct LocalDemoOptions {
  uint64_t memory_bytes = 1ull << 30;
  int vcpus = 2;
  vmm::WorkloadSpec workload;
  vmm::FaultMode fault_mode = vmm::FaultMode::kExit;
  bool json = false;
};

// Runs the demo, printing progress lines and the report to `out`. Returns
// DataLoss if the digest does not match the reference.
absl::Status RunLocalDemo(const LocalDemoOptions& options, FILE* out);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_LOCAL_DEMO_H_
