// ferry: the operator's CLI. See docs/cli.md.
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "base/args.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "migration/cli/client.h"
#include "migration/cli/commands.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"
#include "migration/cli/demo.h"

namespace ferry::cli {
namespace {

// The help text; every default in it is the one the code uses.
std::string Usage() {
  return absl::StrReplaceAll(R"(ferry: move running VMs between hosts

usage: ferry COMMAND [flags]

VMs (on the agent --agent HOST:PORT, default {agent}):
  vm create NAME [--memory {memory}] [--vcpus {vcpus}] [--workload {workload}] [--ops N]
                 [--seed N] [--zero-fraction F] [--dirty-rate {dirty}] [--write-fraction {wf}]
                 [--backend kvm|soft|auto] (default {backend}: KVM where /dev/kvm opens)
          workloads: {workloads}
  vm list | vm get NAME | vm stats NAME | vm verify NAME [--timeout-ms N] | vm delete NAME

migrations:
  migrate NAME --from HOST:PORT --to HOST:PORT [--mode {mode}]
               [--downtime-target-ms {downtime}] [--max-bandwidth RATE] [--fault-mode {fault}]
               [--max-rounds {rounds}] [--streams N] [--request-id ID]
          waits for the end: live progress on a terminal, plain progress lines
          otherwise, then the report; with --json only the report
  migration list | migration get ID | migration watch ID | migration cancel ID
          (on the source agent, --agent)

  demo    two ferryd agents on loopback, a VM, a live migration, verification
          and a report (what ./dev demo runs)
          [--memory {memory}] [--vcpus {vcpus}] [--workload {workload}] [--zero-fraction {zf}]
          [--dirty-rate {dirty}] [--mode {mode}] [--fault-mode {fault}] [--downtime-target-ms {downtime}]
          [--max-bandwidth RATE] [--backend kvm|soft|auto]

every read command takes --json; every command takes --help.
TLS: --tls-ca FILE [--tls-cert FILE --tls-key FILE] (mutual TLS)
--connect-timeout-ms N: how long to try to reach an agent (default 10000)

exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 verification
failed, 4 not found, 5 agent unreachable or shutting down, 6 conflict (wrong
state, already exists, a limit reached)
)",
      {{"{agent}", api::kDefaultAgentAddress},
       {"{memory}", absl::StrCat(api::kDefaultMemoryBytes >> 20, "M")},
       {"{vcpus}", absl::StrCat(api::kDefaultVcpus)},
       {"{workload}", api::kDefaultWorkload},
       {"{workloads}", api::WorkloadKindChoices()},
       {"{dirty}", absl::StrCat(api::kDefaultDirtyBytesPerSec >> 20, "M")},
       {"{wf}", absl::StrCat(api::kDefaultWriteFraction)},
       {"{zf}", absl::StrCat(api::kDemoZeroFraction)},
       {"{mode}", api::kDefaultMode},
       {"{fault}", api::kDefaultFaultMode},
       {"{downtime}", absl::StrCat(api::kDefaultDowntimeTargetMs)},
       {"{rounds}", absl::StrCat(api::kDefaultMaxRounds)},
       {"{backend}", api::kDefaultBackend}});
}

absl::Status Demo(Args& args) {
  DemoOptions o;
  ASSIGN_OR_RETURN(uint64_t memory, args.Bytes("memory", api::kDefaultMemoryBytes));
  o.vm.set_memory_bytes(memory);
  ASSIGN_OR_RETURN(int64_t vcpus, args.Int("vcpus", api::kDefaultVcpus));
  if (vcpus < 0 || vcpus > UINT32_MAX)
    return absl::InvalidArgumentError("--vcpus is not a number of vCPUs");
  o.vm.set_vcpus(static_cast<uint32_t>(vcpus));
  ferry::v1::WorkloadSpec* w = o.vm.mutable_workload();
  ASSIGN_OR_RETURN(ferry::v1::WorkloadKind kind,
                   api::ParseWorkloadKind(args.String("workload", api::kDefaultWorkload)));
  w->set_kind(kind);
  w->set_ops_per_vcpu(0);  // runs until paused for verification
  w->set_seed(1);
  ASSIGN_OR_RETURN(double zero_fraction, args.Double("zero-fraction", api::kDemoZeroFraction));
  w->set_zero_fraction(zero_fraction);
  ASSIGN_OR_RETURN(uint64_t dirty_rate, args.Bytes("dirty-rate", api::kDefaultDirtyBytesPerSec));
  w->set_dirty_bytes_per_sec(dirty_rate);
  w->set_write_fraction(api::kDefaultWriteFraction);
  ASSIGN_OR_RETURN(ferry::v1::VmBackend backend,
                   api::ParseVmBackend(args.String("backend", api::kDefaultBackend)));
  o.vm.set_backend(backend);
  ASSIGN_OR_RETURN(ferry::v1::MigrationMode mode,
                   api::ParseMigrationMode(args.String("mode", api::kDefaultMode)));
  o.migration.set_mode(mode);
  ASSIGN_OR_RETURN(ferry::v1::FaultMode fault_mode,
                   api::ParseFaultMode(args.String("fault-mode", api::kDefaultFaultMode)));
  o.migration.set_fault_mode(fault_mode);
  RETURN_IF_ERROR(args.Alias("downtime-ms", "downtime-target-ms"));
  ASSIGN_OR_RETURN(int64_t downtime,
                   args.Int("downtime-target-ms", api::kDefaultDowntimeTargetMs));
  o.migration.set_downtime_target_ms(downtime);
  ASSIGN_OR_RETURN(uint64_t bandwidth, args.Bytes("max-bandwidth", 0));
  o.migration.set_max_bandwidth(bandwidth);
  o.json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  return RunDemo(o, stdout);
}

absl::Status Main(int argc, char** argv) {
  ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1));
  if (args.positional().empty()) {
    std::cout << Usage();
    return args.Bool("help") ? absl::OkStatus()
                             : absl::InvalidArgumentError("no command given");
  }
  const std::string& command = args.positional()[0];
  if (args.Bool("help")) {
    std::cout << Usage();
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
