// The demand-paging scenario: Ferry's analog of the kernel's
// demand_paging_test. Each vCPU touches every page of its own region once
// (the sequential workload with one op per page: a read-modify-write); every
// page starts missing and comes from a page source: "local" (an in-memory
// image, zero-copy) or "remote" (the same image behind a real page server,
// over the fetch channel on loopback: io_uring, TCP, one lane per vCPU).
// Measures
// pages per second across all vCPUs and the latency of each touching access
// (from its first attempt to completion, so including the whole fault), per
// fault mode. With the KVM backend (`backend`, real KVM vCPUs running the
// guest image) the latency is the pager's: from the exit (exit mode) or the
// userfaultfd event (blocking mode) to the install; a fault mode the kernel
// cannot run is reported as the mode that ran (`asked` keeps the request).
#ifndef FERRY_BENCH_DEMAND_PAGING_H_
#define FERRY_BENCH_DEMAND_PAGING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/histogram.h"
#include "base/json.h"
#include "vmm/demand_pager.h"
#include "vmm/vm.h"

namespace ferry::bench {

struct DemandPagingOptions {
  std::vector<int64_t> vcpus = {1, 2, 4, 8, 16};
  std::vector<vmm::FaultMode> modes = {vmm::FaultMode::kExit,
                                       vmm::FaultMode::kBlocking};
  uint64_t memory_per_vcpu = 64ull << 20;
  int blocking_handlers = 1;
  int repeat = 3;  // runs per point; the median run is reported
  std::vector<std::string> sources = {"local"};
  vmm::VmBackend backend = vmm::VmBackend::kSoft;
};

struct DemandPagingResult {
  int vcpus = 0;
  vmm::FaultMode mode = vmm::FaultMode::kExit;   // what ran
  vmm::FaultMode asked = vmm::FaultMode::kExit;  // what was asked
  std::string source = "local";
  HistogramSnapshot latency;  // ns, every touching access
  uint64_t pages = 0;
  uint64_t faults = 0;
  double seconds = 0;
  double pages_per_sec = 0;
  double fault_p50_us = 0;
  double fault_p99_us = 0;
  double fault_p999_us = 0;
  double fault_max_us = 0;
  // Over the repetitions of this point.
  int runs = 1;
  double pages_per_sec_min = 0;
  double pages_per_sec_max = 0;
  JsonObject ToJson(const DemandPagingOptions& options) const;
};

// Touches and frees `bytes` of anonymous memory once. On a nested VM the
// host backs guest RAM lazily, and the first touch of never-used guest memory
// costs several times a normal page fault; the benchmark warms up once so
// that it measures Ferry, not the host's first-touch cost.
void WarmHostMemory(uint64_t bytes);

// One run: `vcpus` vCPUs in `mode`. Fails if a page is not faulted in
// exactly once.
absl::StatusOr<DemandPagingResult> RunDemandPaging(const DemandPagingOptions& options,
                                                   int vcpus, vmm::FaultMode mode,
                                                   const std::string& source = "local");

// options.repeat runs of one point: the run with the median pages/s, with
// the min and max of all runs.
absl::StatusOr<DemandPagingResult> RunDemandPagingPoint(
    const DemandPagingOptions& options, int vcpus, vmm::FaultMode mode,
    const std::string& source = "local");

}  // namespace ferry::bench

#endif  // FERRY_BENCH_DEMAND_PAGING_H_
