// ferry: the operator's CLI. See docs/cli.md.
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "base/args.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "migration/cli/client.h"
#include "migration/cli/commands.h"
#include "migration/cli/demo.h"

namespace ferry::cli {
namespace {

constexpr char kUsage[] = R"(ferry: move running VMs between hosts

usage: ferry COMMAND [flags]

VMs (on the agent --agent HOST:PORT, default 127.0.0.1:7070):
  vm create NAME [--memory 1G] [--vcpus 2] [--workload zipf] [--ops N]
                 [--seed N] [--zero-fraction F] [--dirty-rate RATE] [--write-fraction F]
  vm list | vm get NAME | vm stats NAME | vm verify NAME [--timeout-ms N] | vm delete NAME

migrations:
  migrate NAME --from HOST:PORT --to HOST:PORT [--mode hybrid|precopy|postcopy]
               [--downtime-ms 50] [--max-bandwidth RATE] [--fault-mode exit|blocking]
               [--max-rounds 30] [--request-id ID]
          waits for the end: live progress on a terminal, plain progress lines
          otherwise, then the report; with --json only the report
  migration list | migration get ID | migration watch ID | migration cancel ID
          (on the source agent, --agent)

  demo    two ferryd agents on loopback, a VM, a live migration, verification
          and a report (what ./dev demo runs)
          [--memory 1G] [--vcpus 2] [--workload zipf] [--zero-fraction 0.5]
          [--dirty-rate 16M] [--mode hybrid] [--fault-mode exit] [--downtime-ms 50]
          [--max-bandwidth RATE]

every read command takes --json; every command takes --help.
TLS: --tls-ca FILE [--tls-cert FILE --tls-key FILE] (mutual TLS)
--connect-timeout-ms N: how long to try to reach an agent (default 10000)

exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 verification
failed, 4 not found, 5 agent unreachable or shutting down, 6 conflict (wrong
state, already exists, a limit reached)
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
  if (command == "vm") return VmCommand(args);
  if (command == "migrate") return MigrateCommand(args);
  if (command == "migration") return MigrationCommand(args);
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
  return ferry::cli::ExitCodeFor(s);
}
