#include "bench/memory_change.h"

#include <algorithm>
#include <fstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/status_macros.h"
#include "bench/stats.h"

namespace ferry::bench {
namespace {

using vmm::MemoryChange;
using vmm::MemoryTransaction;

constexpr uint64_t kGiB = 1ull << 30;

std::vector<uint64_t> OpsOf(const vmm::Vm& vm) {
  std::vector<uint64_t> ops;
  for (const vmm::VcpuStats& s : vm.Stats().vcpus) ops.push_back(s.counters.ops);
  return ops;
}

double OpsPerSecond(const vmm::Vm& vm, absl::Duration window) {
  const uint64_t before = vm.Stats().total_ops;
  const int64_t t0 = MonotonicNowNanos();
  std::this_thread::sleep_for(absl::ToChronoNanoseconds(window));
  return (vm.Stats().total_ops - before) * 1e9 / (MonotonicNowNanos() - t0);
}

// KVM's count of stage-2 faults it fixed, all VMs (debugfs); -1 without it.
int64_t StageTwoFaults() {
  std::ifstream f("/sys/kernel/debug/kvm/pf_fixed");
  int64_t n;
  return f >> n ? n : -1;
}

struct Samples {
  std::vector<double> held_ms, apply_ms, kept, recreated, resized, dropped_mb, faults;
  MemoryChangeRow Row(const std::string& change) const {
    MemoryChangeRow r;
    r.change = change;
    r.n = static_cast<int>(held_ms.size());
    r.held_off_p50_ms = Quantile(held_ms, 0.5);
    r.held_off_p99_ms = Quantile(held_ms, 0.99);
    r.apply_p50_ms = Quantile(apply_ms, 0.5);
    auto mean = [](const std::vector<double>& v) {
      double s = 0;
      for (double x : v) s += x;
      return v.empty() ? 0 : s / v.size();
    };
    r.slots_kept = mean(kept);
    r.slots_recreated = mean(recreated);
    r.slots_resized = mean(resized);
    if (!faults.empty()) r.stage2_faults_after = mean(faults);
    r.stage2_mb_dropped = mean(dropped_mb);
    return r;
  }
};

absl::Status Apply(vmm::Vm& vm, const MemoryTransaction& t, Samples* s) {
  const int64_t faults_before = vm.backend() == vmm::VmBackend::kKvm ? StageTwoFaults() : -1;
  ASSIGN_OR_RETURN(vmm::MemoryChangeResult r, vm.ChangeMemory(t));
  s->held_ms.push_back(r.held_off_ns / 1e6);
  s->apply_ms.push_back(r.apply_ns / 1e6);
  s->kept.push_back(r.slots_kept);
  s->recreated.push_back(r.slots_recreated);
  s->resized.push_back(r.slots_resized);
  s->dropped_mb.push_back(r.stage2_bytes_dropped / 1e6);
  if (faults_before < 0) {
    // Let the guest run a little between changes.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return absl::OkStatus();
  }
  // KVM: the stage-2 faults the guest takes until every vCPU ran one op
  // per page of its share of memory (a uniform guest has then touched most
  // of its pages; vCPUs need not run at one speed), bounded in time.
  const std::vector<uint64_t> ops0 = OpsOf(vm);
  const uint64_t want = vm.memory().num_pages() / std::max<size_t>(1, ops0.size());
  auto ran = [&] {
    const std::vector<uint64_t> now = OpsOf(vm);
    for (size_t v = 0; v < now.size(); ++v)
      if (now[v] < ops0[v] + want) return false;
    return true;
  };
  const int64_t deadline = MonotonicNowNanos() + 30'000'000'000;
  while (!ran() && MonotonicNowNanos() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int64_t faults_after = StageTwoFaults();
  if (faults_after >= faults_before) s->faults.push_back(faults_after - faults_before);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MemoryChangeResult> RunMemoryChangeBench(const MemoryChangeOptions& o) {
  vmm::VmConfig c;
  c.backend = o.backend;
  c.memory_bytes = o.memory_bytes;
  c.max_memory_bytes = 4 * o.memory_bytes;
  c.vcpus = o.vcpus;
  c.workload.kind = vmm::WorkloadKind::kUniform;
  c.workload.ops_per_vcpu = 0;
  c.workload.seed = 5;
  c.kvm_resize_in_place = o.resize_in_place;
  ASSIGN_OR_RETURN(std::unique_ptr<vmm::Vm> vm, vmm::Vm::Create(c));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  RETURN_IF_ERROR(vm->Start());
  const uint64_t region = o.memory_bytes / 4;
  RETURN_IF_ERROR(vm->ChangeMemory({{MemoryChange::Add("top", 64 * kGiB, region)}}).status());
  // Warm up: every page of the new map touched once or more.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  MemoryChangeResult result;
  result.backend = vmm::VmBackendName(o.backend);
  result.ops_per_sec_quiet = OpsPerSecond(*vm, absl::Seconds(1));

  Samples reference;
  for (int i = 0; i < o.repeats; ++i) {
    const int64_t t0 = MonotonicNowNanos();
    RETURN_IF_ERROR(vm->Pause());
    RETURN_IF_ERROR(vm->Resume());
    reference.held_ms.push_back((MonotonicNowNanos() - t0) / 1e6);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.rows.push_back(reference.Row("pause+resume"));

  struct Pair {
    const char* forward_name;
    const char* back_name;
    MemoryTransaction forward, back;
  };
  const std::vector<Pair> pairs = {
      {"add above all",
       "remove above all",
       {{MemoryChange::Add("high", 128 * kGiB, region)}},
       {{MemoryChange::Remove("high")}}},
      {"grow ram",
       "shrink ram",
       {{MemoryChange::Resize("ram", o.memory_bytes + region)}},
       {{MemoryChange::Resize("ram", o.memory_bytes)}}},
      {"grow top",
       "shrink top",
       {{MemoryChange::Resize("top", 2 * region)}},
       {{MemoryChange::Resize("top", region)}}},
      {"add below top",
       "remove below top",
       {{MemoryChange::Add("mid", 32 * kGiB, region)}},
       {{MemoryChange::Remove("mid")}}},
  };
  const int64_t t0 = MonotonicNowNanos();
  const uint64_t ops0 = vm->Stats().total_ops;
  for (const Pair& p : pairs) {
    Samples forward, back;
    for (int i = 0; i < o.repeats; ++i) {
      RETURN_IF_ERROR(Apply(*vm, p.forward, &forward));
      RETURN_IF_ERROR(Apply(*vm, p.back, &back));
    }
    result.rows.push_back(forward.Row(p.forward_name));
    result.rows.push_back(back.Row(p.back_name));
  }
  result.ops_per_sec_changing = (vm->Stats().total_ops - ops0) * 1e9 / (MonotonicNowNanos() - t0);
  RETURN_IF_ERROR(vm->Health());
  RETURN_IF_ERROR(vm->Pause());
  ASSIGN_OR_RETURN(vmm::MemoryDigest got, vm->Digest());
  ASSIGN_OR_RETURN(vmm::MemoryDigest want,
                   vmm::ReferenceDigest(c, OpsOf(*vm), vm->MemoryHistory()));
  result.digest_match = got.digest == want.digest;
  vm->Stop();
  return result;
}

}  // namespace ferry::bench
