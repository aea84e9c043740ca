#include "migration/cli/local_demo.h"

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/status_macros.h"
#include "vmm/page_source.h"
#include "vmm/vm.h"

namespace ferry::cli {
namespace {

constexpr uint64_t kPrefaultBatch = 64;  // pages per install call

// Installs every page that is still missing, in RAM order, in batches, until
// done or `stop`. Pages a vCPU faulted in first are skipped (or, if the race
// is lost, counted as already present by the install).
absl::Status Prefault(vmm::Vm& vm, vmm::PageSource& source, std::atomic<bool>& stop,
                      std::atomic<uint64_t>& pushed) {
  vmm::DemandPager& pager = *vm.pager();
  const vmm::GuestMemory& mem = vm.memory();
  const uint32_t ps = mem.page_size();
  std::vector<uint8_t> batch(kPrefaultBatch * ps);
  uint64_t page = 0;
  while (page < mem.num_pages() && !stop.load()) {
    if (pager.IsPresent(page)) {
      ++page;
      continue;
    }
    // A run of missing pages of one kind (data or zero), within one slot.
    const uint64_t gpa = mem.map().OffsetToGpa(page * ps);
    uint64_t n = 0;
    bool zero_run = false;
    while (n < kPrefaultBatch && page + n < mem.num_pages() &&
           !pager.IsPresent(page + n) &&
           mem.map().OffsetToGpa((page + n) * ps) == gpa + n * ps) {
      ASSIGN_OR_RETURN(vmm::FetchedPage f,
                       source.Fetch(gpa + n * ps, absl::MakeSpan(&batch[n * ps], ps)));
      bool zero = f.content == vmm::PageContent::kZero;
      if (!zero && f.data != &batch[n * ps]) std::memcpy(&batch[n * ps], f.data, ps);
      if (n == 0) zero_run = zero;
      if (zero != zero_run) break;
      ++n;
    }
    if (zero_run) {
      RETURN_IF_ERROR(pager.InstallZeroPages(gpa, n));
    } else {
      RETURN_IF_ERROR(pager.InstallPages(gpa, batch.data(), n));
    }
    pushed.fetch_add(n);
    page += n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunLocalDemo(const LocalDemoOptions& options, FILE* out) {
  vmm::VmConfig config;
  config.memory_bytes = options.memory_bytes;
  config.vcpus = options.vcpus;
  config.workload = options.workload;
  if (config.workload.ops_per_vcpu == 0)
    return absl::InvalidArgumentError(
        "the demo needs a finite workload (--ops above 0) to verify it");

  auto say = [&](const std::string& line) {
    if (!options.json) std::fprintf(out, "%s\n", line.c_str()), std::fflush(out);
  };
  say(absl::StrFormat(
      "ferry demo (local): %d MiB guest, %d vCPUs, workload %s (%d ops/vCPU), fault "
      "mode %s; every page starts missing and comes from a local page source",
      config.memory_bytes >> 20, config.vcpus, vmm::WorkloadKindName(config.workload.kind),
      config.workload.ops_per_vcpu, vmm::FaultModeName(options.fault_mode)));

  // The page source: the memory the guest would have, held elsewhere.
  ASSIGN_OR_RETURN(auto image, vmm::Vm::Create(config));
  RETURN_IF_ERROR(image->LoadInitialMemory());
  auto source = std::make_shared<vmm::InMemoryPageSource>(&image->memory());

  ASSIGN_OR_RETURN(auto vm, vmm::Vm::Create(config));
  RETURN_IF_ERROR(vm->EnableDemandPaging(source, {options.fault_mode, 1}));
  const int64_t t0 = MonotonicNowNanos();
  RETURN_IF_ERROR(vm->Start());

  std::atomic<bool> stop_prefault{false};
  std::atomic<uint64_t> pushed{0};
  absl::Status prefault_status;
  std::thread prefault([&] { prefault_status = Prefault(*vm, *source, stop_prefault, pushed); });

  // Progress every 250 ms until the workload halts.
  uint64_t last_ops = 0, last_faults = 0;
  int64_t last_t = t0;
  absl::Status halted;
  std::vector<double> ops_per_sec;
  while (true) {
    halted = vm->WaitUntilHalted(absl::Milliseconds(250));
    const int64_t now = MonotonicNowNanos();
    const uint64_t ops = vm->Stats().total_ops;
    const vmm::DemandPagerStats ps = vm->pager()->Stats();
    const double dt = (now - last_t) / 1e9;
    ops_per_sec.push_back((ops - last_ops) / dt);
    say(absl::StrFormat(
        "  %6.2fs  guest %8.2f Mops/s  faults %8d (%7.0f/s)  pre-faulted %8d  missing %5.1f%%",
        (now - t0) / 1e9, (ops - last_ops) / dt / 1e6, ps.faults,
        (ps.faults - last_faults) / dt, pushed.load(),
        100.0 * ps.missing_pages / vm->memory().num_pages()));
    last_ops = ops;
    last_faults = ps.faults;
    last_t = now;
    if (halted.code() != absl::StatusCode::kDeadlineExceeded) break;
  }
  const int64_t t_halt = MonotonicNowNanos();
  prefault.join();
  RETURN_IF_ERROR(halted);
  RETURN_IF_ERROR(prefault_status);
  RETURN_IF_ERROR(vm->pager()->Finish());
  const int64_t t_done = MonotonicNowNanos();

  ASSIGN_OR_RETURN(vmm::MemoryDigest got, vm->Digest());
  ASSIGN_OR_RETURN(vmm::MemoryDigest want, vmm::ReferenceDigest(config));
  const bool match = got.digest == want.digest;
  const vmm::DemandPagerStats ps = vm->pager()->Stats();

  JsonObject report;
  report.Add("mode", "local-demand-paging")
      .Add("fault_mode", vmm::FaultModeName(options.fault_mode))
      .Add("memory_bytes", config.memory_bytes)
      .Add("vcpus", config.vcpus)
      .Add("workload", vmm::WorkloadKindName(config.workload.kind))
      .Add("ops_per_vcpu", config.workload.ops_per_vcpu)
      .Add("total_ms", (t_done - t0) / 1e6)
      .Add("workload_ms", (t_halt - t0) / 1e6)
      .Add("faults", ps.faults)
      .Add("fault_p50_us", ps.fault_latency.Percentile(50) / 1e3)
      .Add("fault_p99_us", ps.fault_latency.Percentile(99) / 1e3)
      .Add("fault_max_us", ps.fault_latency.max / 1e3)
      .Add("pages_prefaulted", pushed.load())
      .Add("zero_pages", ps.zero_pages)
      .Add("pages_already_present", ps.already_present)
      .Add("guest_ops_per_sec", ops_per_sec)
      .Add("digest", absl::StrFormat("%016x", got.digest))
      .Add("digest_match", match);
  if (options.json) {
    std::fprintf(out, "%s\n", report.ToString().c_str());
  } else {
    say("report:");
    say(absl::StrFormat("  total            %.1f ms (workload %.1f ms)", (t_done - t0) / 1e6,
                        (t_halt - t0) / 1e6));
    say(absl::StrFormat("  faults           %d  (p50 %.1f us, p99 %.1f us, max %.1f us)",
                        ps.faults, ps.fault_latency.Percentile(50) / 1e3,
                        ps.fault_latency.Percentile(99) / 1e3, ps.fault_latency.max / 1e3));
    say(absl::StrFormat("  pre-faulted      %d pages (%d zero pages in all)", pushed.load(),
                        ps.zero_pages));
    say(absl::StrFormat("  digest           %016x, reference %016x: %s", got.digest,
                        want.digest, match ? "MATCH" : "MISMATCH"));
  }
  if (!match)
    return absl::DataLossError(absl::StrFormat(
        "memory digest mismatch: %d pages differ from the reference run",
        vmm::DifferingPages(got, want).size()));
  return absl::OkStatus();
}

}  // namespace ferry::cli
