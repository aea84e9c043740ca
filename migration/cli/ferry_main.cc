// ferry: the operator's CLI. See docs/cli.md.
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "base/args.h"
#include "base/status_macros.h"
#include "migration/cli/local_demo.h"

namespace ferry::cli {
namespace {

constexpr char kUsage[] = R"(ferry: move running VMs between hosts

usage: ferry COMMAND [flags]

commands:
  demo    run a VM whose memory starts missing and is faulted in on demand from
          a local page source, verify it against a replay, and print a report
      --memory SIZE          guest memory (default 1G)
      --vcpus N              vCPUs (default 2)
      --workload KIND        idle, sequential, uniform, zipf, dirty-rate (default zipf)
      --ops N                guest operations per vCPU (default 5000000)
      --zero-fraction F      fraction of pages that start as zero pages (default 0.5)
      --dirty-rate RATE      dirty-rate workload: bytes dirtied per second (default 16M)
      --fault-mode MODE      exit or blocking (default exit)
      --json                 print only the report, as one JSON object

exit codes: 0 success, 1 failure, 2 bad usage, 3 verification failed
)";

absl::Status Demo(Args& args) {
  LocalDemoOptions o;
  ASSIGN_OR_RETURN(o.memory_bytes, args.Bytes("memory", o.memory_bytes));
  ASSIGN_OR_RETURN(int64_t vcpus, args.Int("vcpus", 2));
  o.vcpus = static_cast<int>(vcpus);
  ASSIGN_OR_RETURN(o.workload.kind, vmm::ParseWorkloadKind(args.String("workload", "zipf")));
  ASSIGN_OR_RETURN(int64_t ops, args.Int("ops", 5'000'000));
  if (ops <= 0) return absl::InvalidArgumentError("--ops must be above 0");
  o.workload.ops_per_vcpu = static_cast<uint64_t>(ops);
  ASSIGN_OR_RETURN(o.workload.zero_fraction, args.Double("zero-fraction", 0.5));
  ASSIGN_OR_RETURN(o.workload.dirty_bytes_per_sec, args.Bytes("dirty-rate", 16ull << 20));
  ASSIGN_OR_RETURN(o.fault_mode, vmm::ParseFaultMode(args.String("fault-mode", "exit")));
  o.json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  return RunLocalDemo(o, stdout);
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
