// ferry-bench: Ferry's benchmark harness. See docs/benchmarks.md.
//
//   ferry-bench demand-paging [--vcpus 1,2,4,8,16] [--fault-modes exit,blocking]
//                             [--memory-per-vcpu 64M] [--blocking-handlers 1]
//                             [--repeat 3] [--json]
//   ferry-bench digest [--memory 1G] [--repeat 3]
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/args.h"
#include "base/status_macros.h"
#include "base/clock.h"
#include "base/json.h"
#include "bench/demand_paging.h"
#include "vmm/vm.h"

namespace ferry::bench {
namespace {

constexpr char kUsage[] = R"(ferry-bench: Ferry's benchmark harness

usage: ferry-bench SCENARIO [flags]

scenarios:
  demand-paging   vCPUs fault in all of their memory from a local page source,
                  per fault mode (the analog of the kernel's demand_paging_test)
      --vcpus LIST             vCPU counts (default 1,2,4,8,16)
      --fault-modes LIST       exit,blocking (default both)
      --memory-per-vcpu SIZE   memory each vCPU touches (default 64M)
      --blocking-handlers N    userfaultfd handler threads in blocking mode (default 1)
      --repeat N               runs per point; the median is reported (default 3)
      --json                   one JSON object per line instead of a table
  digest          time the whole-memory digest of a populated guest
      --memory SIZE            guest memory (default 1G)
      --repeat N               runs; the median is reported (default 3)
)";

// The digest of `--memory` of populated guest memory (random pages, a
// quarter zero pages left as holes), timed: docs/benchmarks.md.
absl::Status Digest(Args& args) {
  ASSIGN_OR_RETURN(uint64_t memory, args.Bytes("memory", 1ull << 30));
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", 3));
  RETURN_IF_ERROR(args.Finish());
  vmm::VmConfig config;
  config.memory_bytes = memory;
  config.vcpus = 1;
  config.workload.zero_fraction = 0.25;
  ASSIGN_OR_RETURN(auto vm, vmm::Vm::Create(config));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  std::vector<double> seconds;
  uint64_t digest = 0;
  for (int64_t i = 0; i < std::max<int64_t>(1, repeat); ++i) {
    int64_t t0 = MonotonicNowNanos();
    ASSIGN_OR_RETURN(vmm::MemoryDigest d, vm->Digest());
    seconds.push_back((MonotonicNowNanos() - t0) / 1e9);
    digest = d.digest;
  }
  std::sort(seconds.begin(), seconds.end());
  double median = seconds[seconds.size() / 2];
  JsonObject o;
  o.Add("scenario", "digest")
      .Add("memory_bytes", memory)
      .Add("seconds", median)
      .Add("gbytes_per_sec", memory / median / 1e9)
      .Add("runs", static_cast<int64_t>(seconds.size()))
      .Add("digest", absl::StrFormat("%016x", digest));
  std::printf("%s\n", o.ToString().c_str());
  return absl::OkStatus();
}

absl::Status DemandPaging(Args& args) {
  DemandPagingOptions options;
  ASSIGN_OR_RETURN(options.vcpus, args.IntList("vcpus", options.vcpus));
  ASSIGN_OR_RETURN(options.memory_per_vcpu,
                   args.Bytes("memory-per-vcpu", options.memory_per_vcpu));
  ASSIGN_OR_RETURN(int64_t handlers, args.Int("blocking-handlers", 1));
  options.blocking_handlers = static_cast<int>(handlers);
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", options.repeat));
  options.repeat = static_cast<int>(repeat);
  options.modes.clear();
  for (const std::string& m : args.List("fault-modes", {"exit", "blocking"})) {
    ASSIGN_OR_RETURN(vmm::FaultMode mode, vmm::ParseFaultMode(m));
    options.modes.push_back(mode);
  }
  const bool json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  if (options.memory_per_vcpu < 4096 || options.memory_per_vcpu % 4096 != 0)
    return absl::InvalidArgumentError("--memory-per-vcpu must be a multiple of 4K");

  int64_t max_vcpus = 0;
  for (int64_t v : options.vcpus) max_vcpus = std::max(max_vcpus, v);
  // The page-source image and the VM: twice the largest run's memory.
  WarmHostMemory(2 * options.memory_per_vcpu * max_vcpus);
  if (!json)
    std::printf("%-6s %-9s %9s %13s %9s %9s %9s\n", "vcpus", "mode", "pages",
                "pages/s", "p50 us", "p99 us", "p999 us");
  for (int64_t vcpus : options.vcpus) {
    for (vmm::FaultMode mode : options.modes) {
      ASSIGN_OR_RETURN(DemandPagingResult r,
                       RunDemandPagingPoint(options, static_cast<int>(vcpus), mode));
      if (json) {
        std::printf("%s\n", r.ToJson(options).ToString().c_str());
      } else {
        std::printf("%-6d %-9s %9llu %13.0f %9.1f %9.1f %9.1f\n", r.vcpus,
                    vmm::FaultModeName(mode), static_cast<unsigned long long>(r.pages),
                    r.pages_per_sec, r.fault_p50_us, r.fault_p99_us, r.fault_p999_us);
      }
      std::fflush(stdout);
    }
  }
  return absl::OkStatus();
}

absl::Status Main(int argc, char** argv) {
  ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1));
  if (args.positional().empty() || args.Bool("help")) {
    std::cout << kUsage;
    return args.positional().empty() && !args.Bool("help")
               ? absl::InvalidArgumentError("no scenario given")
               : absl::OkStatus();
  }
  const std::string& scenario = args.positional()[0];
  if (scenario == "demand-paging") return DemandPaging(args);
  if (scenario == "digest") return Digest(args);
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown scenario '%s' (see --help)", scenario));
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  absl::Status s = ferry::bench::Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "ferry-bench: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
