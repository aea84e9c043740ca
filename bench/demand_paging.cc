#include "bench/demand_paging.h"

#include <sys/mman.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "migration/fetch/remote_page_source.h"
#include "migration/fetch/page_server.h"
#include "base/status_macros.h"
#include "vmm/digest.h"
#include "vmm/vm.h"

namespace ferry::bench {

JsonObject DemandPagingResult::ToJson(const DemandPagingOptions& options) const {
  JsonObject o;
  o.Add("scenario", "demand-paging")
      .Add("vcpus", vcpus)
      .Add("backend", vmm::VmBackendName(options.backend))
      .Add("fault_mode", vmm::FaultModeName(mode))
      .Add("fault_mode_asked", vmm::FaultModeName(asked))
      .Add("page_source", source)
      .Add("memory_per_vcpu_bytes", options.memory_per_vcpu)
      .Add("pages", pages)
      .Add("faults", faults)
      .Add("seconds", seconds)
      .Add("pages_per_sec", pages_per_sec)
      .Add("fault_p50_us", fault_p50_us)
      .Add("fault_p99_us", fault_p99_us)
      .Add("fault_p999_us", fault_p999_us)
      .Add("fault_max_us", fault_max_us)
      .Add("runs", runs)
      .Add("pages_per_sec_min", pages_per_sec_min)
      .Add("pages_per_sec_max", pages_per_sec_max);
  if (mode == vmm::FaultMode::kBlocking)
    o.Add("blocking_handlers", options.blocking_handlers);
  return o;
}

void WarmHostMemory(uint64_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p != MAP_FAILED) munmap(p, bytes);
}

absl::StatusOr<DemandPagingResult> RunDemandPaging(const DemandPagingOptions& options,
                                                   int vcpus, vmm::FaultMode mode,
                                                   const std::string& source_kind) {
  vmm::VmConfig config;
  config.backend = options.backend;
  config.vcpus = vcpus;
  config.memory_bytes = options.memory_per_vcpu * vcpus;
  config.workload.kind = vmm::WorkloadKind::kSequential;
  config.workload.ops_per_vcpu = options.memory_per_vcpu / config.page_size;
  config.workload.seed = 42;
  config.vcpu_options.record_op_latency = true;

  // The page source: the guest's memory as the source host holds it.
  ASSIGN_OR_RETURN(auto image, vmm::Vm::Create(config));
  RETURN_IF_ERROR(image->LoadInitialMemory());
  std::shared_ptr<vmm::PageSource> source;
  std::unique_ptr<migration::fetch::PageServer> server;
  if (source_kind == "local") {
    source = std::make_shared<vmm::InMemoryPageSource>(&image->memory());
  } else if (source_kind == "remote" || source_kind == "remote-sealed") {
    // remote-sealed: the same, with replies encrypted (AES-256-GCM, what
    // agents that talk TLS use): the cost of encryption, side by side.
    const bool sealed = source_kind == "remote-sealed";
    ASSIGN_OR_RETURN(server, migration::fetch::PageServer::Start("127.0.0.1:0"));
    migration::fetch::Secret secret;
    RETURN_IF_ERROR(migration::fetch::RandomBytes(absl::MakeSpan(secret)));
    auto served = std::make_shared<migration::fetch::ServedMigration>(
        "demand-paging", secret, &image->memory(), nullptr, sealed);
    served->EnableServing();
    server->Register(served);
    migration::fetch::FetcherOptions fo;
    fo.address = absl::StrCat("127.0.0.1:", server->port());
    fo.migration_id = "demand-paging";
    fo.secret = secret;
    fo.encrypt = sealed;
    source = std::make_shared<migration::fetch::RemotePageSource>(fo);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown page source '", source_kind,
                     "': local, remote or remote-sealed"));
  }

  ASSIGN_OR_RETURN(auto vm, vmm::Vm::Create(config));
  RETURN_IF_ERROR(vm->EnableDemandPaging(source, {mode, options.blocking_handlers}));
  const int64_t t0 = MonotonicNowNanos();
  RETURN_IF_ERROR(vm->Start());
  RETURN_IF_ERROR(vm->WaitUntilHalted(absl::Minutes(10)));
  const int64_t t1 = MonotonicNowNanos();

  DemandPagingResult r;
  r.vcpus = vcpus;
  r.mode = vm->fault_mode_choice().mode;
  r.asked = mode;
  r.source = source_kind;
  r.pages = config.workload.ops_per_vcpu * vcpus;
  r.faults = vm->pager()->Stats().faults;
  r.seconds = (t1 - t0) / 1e9;
  r.pages_per_sec = r.pages / r.seconds;
  HistogramSnapshot latency;
  if (options.backend == vmm::VmBackend::kKvm) {
    latency = vm->pager()->Stats().fault_latency;  // KVM vCPUs time no ops
  } else {
    for (const vmm::VcpuStats& v : vm->Stats().vcpus) latency.Merge(v.counters.op_latency);
  }
  r.fault_p50_us = latency.Percentile(50) / 1e3;
  r.fault_p99_us = latency.Percentile(99) / 1e3;
  r.fault_p999_us = latency.Percentile(99.9) / 1e3;
  r.fault_max_us = latency.max / 1e3;
  r.latency = latency;

  // Each vCPU region touched once: every page of it faulted exactly once.
  if (r.faults != r.pages)
    return absl::InternalError(absl::StrFormat(
        "demand-paging: %d faults for %d pages touched once", r.faults, r.pages));
  vm->Stop();
  r.pages_per_sec_min = r.pages_per_sec_max = r.pages_per_sec;
  return r;
}

absl::StatusOr<DemandPagingResult> RunDemandPagingPoint(
    const DemandPagingOptions& options, int vcpus, vmm::FaultMode mode,
    const std::string& source) {
  std::vector<DemandPagingResult> runs;
  for (int i = 0; i < std::max(1, options.repeat); ++i) {
    ASSIGN_OR_RETURN(DemandPagingResult r, RunDemandPaging(options, vcpus, mode, source));
    runs.push_back(r);
  }
  std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) {
    return a.pages_per_sec < b.pages_per_sec;
  });
  DemandPagingResult median = runs[runs.size() / 2];
  median.runs = static_cast<int>(runs.size());
  median.pages_per_sec_min = runs.front().pages_per_sec;
  median.pages_per_sec_max = runs.back().pages_per_sec;
  return median;
}

}  // namespace ferry::bench
