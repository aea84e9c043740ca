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
#include "migration/api/defaults.h"
#include "migration/api/names.h"
#include "migration/cli/client.h"
#include "migration/cli/commands.h"
#include "migration/cli/demo.h"
#include "migration/cli/help.h"
#include "migration/cli/json_output.h"
#include "migration/cli/settings.h"

namespace ferry::cli {
namespace {

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
  ASSIGN_OR_RETURN(uint64_t dirty_rate, args.Rate("dirty-rate", api::kDefaultDirtyBytesPerSec));
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
  ASSIGN_OR_RETURN(int64_t downtime, args.Int("downtime-target-ms", api::kDefaultDowntimeTargetMs));
  o.migration.set_downtime_target_ms(downtime);
  ASSIGN_OR_RETURN(uint64_t bandwidth, args.Rate("max-bandwidth", 0));
  o.migration.set_max_bandwidth(bandwidth);
  o.json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish(1, "ferry demo [flags]"));
  return RunDemo(o, stdout);
}

// The help of the longest command the words name ("vm create web" is
// "vm create").
absl::Status PrintHelp(std::vector<std::string> words) {
  absl::StatusOr<std::string> text = CommandHelp(words);
  while (!text.ok() && words.size() > 1) {
    words.pop_back();
    text = CommandHelp(words);
  }
  if (!text.ok()) return text.status();
  std::cout << *text;
  return absl::OkStatus();
}

absl::Status Main(int argc, char** argv) {
  ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1,
                                          {"detach", "force", "man", "check", "auto-converge",
                                           "stop", "lazy", "live"}));
  if (args.Bool("version")) {
    std::cout << VersionLine("ferry") << "\n";
    return absl::OkStatus();
  }
  if (args.positional().empty()) {
    std::cout << OverviewHelp();
    return args.Bool("help") ? absl::OkStatus()
                             : absl::InvalidArgumentError("no command given (see ferry help)");
  }
  const std::string& command = args.positional()[0];
  if (command == "help") {
    if (args.Bool("man")) {
      RETURN_IF_ERROR(args.Finish(1, "ferry help --man"));
      std::cout << ManPageText();
      return absl::OkStatus();
    }
    RETURN_IF_ERROR(args.Finish());
    return PrintHelp({args.positional().begin() + 1, args.positional().end()});
  }
  if (args.Bool("help")) return PrintHelp(args.positional());
  // Flags win over the environment, the environment over the config file.
  RETURN_IF_ERROR(ApplySettings(args));
  if (command == "completion") {
    RETURN_IF_ERROR(args.Finish(2, "ferry completion bash"));
    if (args.positional().size() < 2 || args.positional()[1] != "bash")
      return absl::InvalidArgumentError(
          "ferry completion needs a shell: bash (usage: ferry completion bash)");
    std::cout << BashCompletion();
    return absl::OkStatus();
  }
  if (command == "demo") return Demo(args);
  if (command == "vm") return VmCommand(args);
  if (command == "migrate") return MigrateCommand(args);
  if (command == "migration") return MigrationCommand(args);
  if (command == "events") return EventsCommand(args);
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown command '%s' (see ferry help)", command));
}

}  // namespace

// Whether --json was given (also when the arguments failed to parse).
bool JsonAsked(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") break;
    if (a == "--json" || a == "--json=true" || a == "--json=1") return true;
  }
  return false;
}

}  // namespace ferry::cli

int main(int argc, char** argv) {
  ferry::TuneMallocForBulkTransfers();
  // Line by line into pipes and files too: progress must reach a log as
  // it happens, not when the command exits.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  absl::Status s = ferry::cli::Main(argc, argv);
  if (s.ok()) return 0;
  const int code = ferry::cli::ExitCodeFor(s);
  // Under --json the error is JSON too, on stderr, with the same exit code.
  if (ferry::cli::JsonAsked(argc, argv))
    std::fprintf(stderr, "%s\n", ferry::cli::ErrorJson(s, code).ToString().c_str());
  else
    std::fprintf(stderr, "ferry: %s\n", std::string(s.message()).c_str());
  return code;
}
