// The memory-change scenario: what a memory map transaction costs a running
// guest (docs/benchmarks.md, "memory-change"). A VM runs a uniform workload
// over its memory plus a region "top" high above it; then, alternating, a
// region is added above everything and removed again (every existing slot
// is kept), "ram" is grown and shrunk (which moves "top" in RAM offset
// space: on KVM its slot is recreated), "top" is grown and shrunk (nothing
// moves: on KVM its slot is resized in place where the kernel can, Ferry's
// KVM patch), and a region is added between the two (which moves "top" as
// well). Each change is timed from the request to the vCPUs running again
// (held off) and in its remapping part (apply); on KVM the slots kept,
// resized and recreated, the stage-2 coverage dropped, and the stage-2
// faults the guest took (KVM's debugfs pf_fixed) from the change until
// every vCPU ran one op per page of its share of memory are counted. Reference in the same run: a
// plain Pause() and Resume() of the same VM, the floor of any change that holds vCPUs off. The
// guest's ops per second with and without changes say what it felt. The run ends with the digest
// against the epoch replay.
#ifndef FERRY_BENCH_MEMORY_CHANGE_H_
#define FERRY_BENCH_MEMORY_CHANGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/vm.h"

namespace ferry::bench {

struct MemoryChangeOptions {
  vmm::VmBackend backend = vmm::VmBackend::kSoft;
  uint64_t memory_bytes = 256ull << 20;
  int vcpus = 2;
  int repeats = 50;  // of each change and of the reference
  // KVM: resize slots in place where the kernel can (VmConfig).
  bool resize_in_place = true;
};

struct MemoryChangeRow {
  std::string change;  // "pause+resume" for the reference
  int n = 0;
  double held_off_p50_ms = 0;
  double held_off_p99_ms = 0;
  double apply_p50_ms = 0;
  double slots_kept = 0;  // per change, KVM only
  double slots_recreated = 0;
  double slots_resized = 0;
  double stage2_mb_dropped = 0;
  // Stage-2 faults from the change until the guest ran as many ops as the
  // VM has pages (KVM with debugfs; -1: not counted).
  double stage2_faults_after = -1;
};

struct MemoryChangeResult {
  std::string backend;
  std::vector<MemoryChangeRow> rows;
  double ops_per_sec_quiet = 0;     // the guest, no changes
  double ops_per_sec_changing = 0;  // the guest while the changes ran
  bool digest_match = false;
};

absl::StatusOr<MemoryChangeResult> RunMemoryChangeBench(const MemoryChangeOptions& options);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_MEMORY_CHANGE_H_
