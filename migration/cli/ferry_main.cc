// ferry: the operator's CLI. See docs/cli.md.
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "base/args.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "migration/cli/demo.h"

namespace ferry::cli {
namespace {

constexpr char kUsage[] = R"(ferry: move running VMs between hosts

usage: ferry COMMAND [flags]

commands:
  demo    migrate a running VM between two agents on loopback with live
          progress, verify the destination's memory against a replay of the
          guest, and print a report
      --memory SIZE          guest memory (default 1G)
      --vcpus N              vCPUs (default 2)
      --workload KIND        idle, sequential, uniform, zipf, dirty-rate (default zipf)
      --zero-fraction F      fraction of pages that start as zero pages (default 0.5)
      --dirty-rate RATE      dirty-rate workload: bytes dirtied per second (default 16M)
      --mode MODE            precopy, postcopy or hybrid (default hybrid)
      --fault-mode MODE      exit or blocking (default exit)
      --downtime-ms N        downtime target (default 50)
      --max-bandwidth RATE   bandwidth cap, bytes/s (default none)
      --json                 print only the report, as one JSON object

exit codes: 0 success, 1 failure, 2 bad usage, 3 verification failed
)";

absl::Status Demo(Args& args) {
  DemoOptions o;
  ASSIGN_OR_RETURN(o.vm.memory_bytes, args.Bytes("memory", 1ull << 30));
  ASSIGN_OR_RETURN(int64_t vcpus, args.Int("vcpus", 2));
  o.vm.vcpus = static_cast<int>(vcpus);
  ASSIGN_OR_RETURN(o.vm.workload.kind, vmm::ParseWorkloadKind(args.String("workload", "zipf")));
  o.vm.workload.ops_per_vcpu = 0;  // runs until paused for verification
  ASSIGN_OR_RETURN(o.vm.workload.zero_fraction, args.Double("zero-fraction", 0.5));
  ASSIGN_OR_RETURN(o.vm.workload.dirty_bytes_per_sec, args.Bytes("dirty-rate", 16ull << 20));
  ASSIGN_OR_RETURN(o.migration.mode,
                   migration::ParseMigrationMode(args.String("mode", "hybrid")));
  ASSIGN_OR_RETURN(o.migration.fault_mode,
                   vmm::ParseFaultMode(args.String("fault-mode", "exit")));
  ASSIGN_OR_RETURN(o.migration.downtime_target_ms, args.Int("downtime-ms", 50));
  ASSIGN_OR_RETURN(o.migration.max_bandwidth, args.Bytes("max-bandwidth", 0));
  o.json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  RETURN_IF_ERROR(vmm::ValidateVmConfig(o.vm));
  RETURN_IF_ERROR(migration::ValidateMigrationOptions(o.migration));
  return RunDemo(o, stdout);
}

absl::Status Main(int argc, char** argv) {
  ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1));
  if (args.positional().empty()) {
    std::cout << kUsage;
    return args.Bool("help") ? absl::OkStatus()
                             : absl::InvalidArgumentError("no command given");
  }
  const std::string& command = args.positional()[0];
  if (args.Bool("help")) {
    std::cout << kUsage;
    return absl::OkStatus();
  }
  if (command == "demo") return Demo(args);
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown command '%s' (see ferry --help)", command));
}

}  // namespace
}  // namespace ferry::cli

int main(int argc, char** argv) {
  ferry::TuneMallocForBulkTransfers();
  absl::Status s = ferry::cli::Main(argc, argv);
  if (s.ok()) return 0;
  std::fprintf(stderr, "ferry: %s\n", std::string(s.message()).c_str());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      return 2;
    case absl::StatusCode::kDataLoss:
      return 3;
    default:
      return 1;
  }
}
