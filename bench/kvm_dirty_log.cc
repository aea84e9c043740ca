#include "bench/kvm_dirty_log.h"

#include <algorithm>
#include <thread>

#include "base/clock.h"
#include "base/status_macros.h"
#include "vmm/vm.h"

namespace ferry::bench {
namespace {

uint64_t TotalOps(const vmm::Vm& vm) { return vm.Stats().total_ops; }

double OpsPerSec(const vmm::Vm& vm, absl::Duration over) {
  const uint64_t a = TotalOps(vm);
  const int64_t t0 = MonotonicNowNanos();
  std::this_thread::sleep_for(absl::ToChronoNanoseconds(over));
  return (TotalOps(vm) - a) / ((MonotonicNowNanos() - t0) / 1e9);
}

absl::StatusOr<KvmDirtyLogResult> RunOnce(const KvmDirtyLogOptions& o, bool ring) {
  vmm::VmConfig c;
  c.backend = vmm::VmBackend::kKvm;
  c.kvm_dirty_ring = ring;
  c.memory_bytes = o.memory;
  c.vcpus = o.vcpus;
  ASSIGN_OR_RETURN(c.workload.kind, vmm::ParseWorkloadKind(o.workload));
  c.workload.ops_per_vcpu = 0;
  ASSIGN_OR_RETURN(auto vm, vmm::Vm::Create(c));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  RETURN_IF_ERROR(vm->Start());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // stage-2 warm
  KvmDirtyLogResult r;
  r.mode = ring ? "ring" : "bitmap";
  r.ops_per_sec_untracked = OpsPerSec(*vm, absl::Milliseconds(500));
  ASSIGN_OR_RETURN(std::unique_ptr<vmm::DirtyLog> log, vm->StartDirtyLog());
  std::vector<uint64_t> pages;
  RETURN_IF_ERROR(log->Collect(&pages));  // the first interval
  std::vector<double> us;
  uint64_t total_pages = 0;
  const uint64_t ops0 = TotalOps(*vm);
  const int64_t t0 = MonotonicNowNanos();
  for (int i = 0; i < o.rounds; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const int64_t s = MonotonicNowNanos();
    RETURN_IF_ERROR(log->Collect(&pages));
    us.push_back((MonotonicNowNanos() - s) / 1e3);
    total_pages += pages.size();
  }
  r.ops_per_sec_tracked = (TotalOps(*vm) - ops0) / ((MonotonicNowNanos() - t0) / 1e9);
  std::sort(us.begin(), us.end());
  r.collect_us_median = us[us.size() / 2];
  r.collect_us_max = us.back();
  r.pages_per_collect = static_cast<double>(total_pages) / o.rounds;
  vm->Stop();
  return r;
}

}  // namespace

absl::StatusOr<std::vector<KvmDirtyLogResult>> RunKvmDirtyLog(const KvmDirtyLogOptions& o) {
  std::vector<KvmDirtyLogResult> out;
  for (bool ring : {false, true}) {
    std::vector<KvmDirtyLogResult> runs;
    for (int i = 0; i < o.repeat; ++i) {
      ASSIGN_OR_RETURN(KvmDirtyLogResult r, RunOnce(o, ring));
      runs.push_back(r);
    }
    std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) {
      return a.collect_us_median < b.collect_us_median;
    });
    out.push_back(runs[runs.size() / 2]);  // the median run by Collect() time
  }
  return out;
}

}  // namespace ferry::bench
