#include <cstdio>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "base/units.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"
#include "migration/cli/commands.h"
#include "migration/cli/json_output.h"

namespace ferry::cli {
namespace {

std::string MigrationColumn(const ferry::v1::Vm& v) {
  if (v.state() == ferry::v1::VM_STATE_INCOMING)
    return absl::StrFormat("arriving by %s from %s, %d pages missing", v.migration_id(),
                           v.source(), v.pages_missing());
  if (!v.migration_id().empty()) return v.migration_id();
  if (!v.held_by().empty())
    return "held by " + v.held_by() + " (failed after switchover; see vm resume --force)";
  if (!v.arrived_by().empty()) return "arrived by " + v.arrived_by();
  if (v.restore_mode() == "lazy" && v.pages_missing() > 0)
    return absl::StrFormat("restoring from %s, %d pages not read yet", v.restored_from(),
                           v.pages_missing());
  return "";
}

// `path` (a flag's value) as an absolute path: a relative one is taken from
// this process's working directory, since the agent has its own; `.`, `..`
// and trailing slashes resolved lexically (symbolic links are the agent's
// to follow).
absl::StatusOr<std::string> AbsolutePath(const std::string& path, const char* flag) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " needs a directory"));
  std::filesystem::path p(path);
  if (p.is_relative()) {
    std::error_code ec;
    const std::filesystem::path cwd = std::filesystem::current_path(ec);
    if (ec)
      return absl::FailedPreconditionError(absl::StrCat("cannot make ", flag, " ", path,
                                                        " absolute: ", ec.message(),
                                                        " (give an absolute path)"));
    p = cwd / p;
  }
  std::string out = p.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string Mib(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

// The line or two `vm snapshot` prints.
void PrintSnapshot(const std::string& name, const ferry::v1::SnapshotVmResponse& s) {
  const uint64_t page = s.vm().layout().page_size() ? s.vm().layout().page_size() : 4096;
  std::printf(
      "snapshot of %s written to %s: %s of memory, %s of it data (%llu pages; %llu zero "
      "pages not stored), in %.0f ms\n",
      name.c_str(), s.dir().c_str(), Mib(s.memory_bytes()).c_str(),
      Mib(s.data_pages() * page).c_str(), static_cast<unsigned long long>(s.data_pages()),
      static_cast<unsigned long long>(s.zero_pages()), s.write_ms());
  if (s.rounds() > 0)
    std::printf("live: %u passes over memory while the guest ran, %llu pages written\n", s.rounds(),
                static_cast<unsigned long long>(s.pages_written()));
  if (s.vm().state() == ferry::v1::VM_STATE_PAUSED)
    std::printf("guest ops %llu, digest %s; %s stays paused (ferry vm resume %s)\n",
                static_cast<unsigned long long>(s.guest_ops()), s.memory_digest().c_str(),
                name.c_str(), name.c_str());
  else if (s.paused_ms() > 0)
    std::printf("guest ops %llu, digest %s; %s was paused %.0f ms and runs on\n",
                static_cast<unsigned long long>(s.guest_ops()), s.memory_digest().c_str(),
                name.c_str(), s.paused_ms());
  else
    std::printf("guest ops %llu, digest %s; %s is %s\n",
                static_cast<unsigned long long>(s.guest_ops()), s.memory_digest().c_str(),
                name.c_str(), api::Spelling(s.vm().state()).c_str());
}

// What `vm get` and `vm restore` add about a restored VM; nothing for
// another.
void PrintRestore(const ferry::v1::Vm& vm) {
  if (vm.restored_from().empty()) return;
  if (vm.restore_mode() != "lazy") {
    std::printf(
        "restored from %s (eager): every page read and checked in %.0f ms, before it "
        "ran\n",
        vm.restored_from().c_str(), vm.restore_ms());
    return;
  }
  std::printf("restored from %s (lazy, fault mode %s)", vm.restored_from().c_str(),
              vm.restore_fault_mode().c_str());
  if (vm.restore_ms() > 0)
    std::printf(": every page read, %.0f ms after the start\n", vm.restore_ms());
  else if (vm.state() == ferry::v1::VM_STATE_FAILED)
    std::printf(": the fill failed\n");
  else
    std::printf(": running, %llu pages not read yet\n",
                static_cast<unsigned long long>(vm.pages_missing()));
}

// What `vm get` says about the VM's memory map: its regions, its maximum,
// and how often it changed; nothing for a VM whose map is not known here
// (arriving, or lost with its process).
void PrintMemory(const ferry::v1::Vm& vm) {
  if (vm.regions_size() == 0) return;
  std::printf("memory %s of at most %s: %s", FormatSize(vm.layout().memory_bytes()).c_str(),
              FormatSize(vm.max_memory_bytes()).c_str(), RegionsText(vm.regions()).c_str());
  if (vm.memory_changes() > 0)
    std::printf(" (%u change%s)", vm.memory_changes(), vm.memory_changes() == 1 ? "" : "s");
  std::printf("\n");
}

void PrintError(const ferry::v1::Vm& vm) {
  if (!vm.error().empty()) std::printf("failed: %s\n", vm.error().c_str());
}

void PrintVmTable(const std::vector<ferry::v1::Vm>& vms) {
  std::printf("%-20s %-10s %8s %5s %-7s %-11s %14s  %s\n", "NAME", "STATE", "MEMORY", "VCPUS",
              "BACKEND", "WORKLOAD", "GUEST OPS", "MIGRATION");
  for (const auto& v : vms)
    std::printf("%-20s %-10s %7lluM %5u %-7s %-11s %14llu  %s\n", v.name().c_str(),
                api::Spelling(v.state()).c_str(),
                static_cast<unsigned long long>(v.layout().memory_bytes() >> 20),
                v.layout().vcpus(), api::Spelling(v.layout().backend()).c_str(),
                api::Spelling(v.layout().workload().kind()).c_str(),
                static_cast<unsigned long long>(v.guest_ops()), MigrationColumn(v).c_str());
}

absl::StatusOr<std::string> Name(const Args& args, const char* verb) {
  if (args.positional().size() < 3)
    return absl::InvalidArgumentError(
        absl::StrFormat("ferry vm %s needs a VM name (usage: ferry vm %s NAME; ferry help vm %s)",
                        verb, verb, verb));
  if (args.positional().size() > 3)
    return absl::InvalidArgumentError(
        absl::StrFormat("unexpected argument '%s' (usage: ferry vm %s NAME)",
                        args.positional()[3], verb));
  const std::string& name = args.positional()[2];
  RETURN_IF_ERROR(api::ValidateVmName(name));
  return name;
}

}  // namespace

absl::Status VmCommand(Args& args) {
  const std::string address = args.String("agent", api::kDefaultAgentAddress);
  ASSIGN_OR_RETURN(ConnectOptions co, ParseConnectOptions(args));
  const bool json = args.Bool("json");
  if (args.positional().size() < 2)
    return absl::InvalidArgumentError(
        "usage: ferry vm create|list|get|stats|verify|resume|snapshot|restore|resize|memory|"
        "delete ... (see ferry help vm)");
  const std::string verb = args.positional()[1];
  if (verb == "resize" || verb == "memory") return VmMemoryCommand(args, address, co, json);
  grpc::ClientContext ctx;

  if (verb == "create") {
    ASSIGN_OR_RETURN(std::string name, Name(args, "create"));
    ferry::v1::CreateVmRequest r;
    r.set_name(name);
    // The agent validates the shape (vmm::ValidateVmConfig); here only what
    // does not fit the request's fields is refused.
    ASSIGN_OR_RETURN(uint64_t memory, args.Bytes("memory", api::kDefaultMemoryBytes));
    r.set_memory_bytes(memory);
    // 0: the agent's default (four times --memory, within its limit).
    ASSIGN_OR_RETURN(uint64_t max_memory, args.Bytes("max-memory", 0));
    r.set_max_memory_bytes(max_memory);
    ASSIGN_OR_RETURN(int64_t vcpus, args.Int("vcpus", api::kDefaultVcpus));
    if (vcpus < 0 || vcpus > UINT32_MAX)
      return absl::InvalidArgumentError("--vcpus is not a number of vCPUs");
    r.set_vcpus(static_cast<uint32_t>(vcpus));
    ferry::v1::WorkloadSpec* w = r.mutable_workload();
    ASSIGN_OR_RETURN(ferry::v1::WorkloadKind kind,
                     api::ParseWorkloadKind(args.String("workload", api::kDefaultWorkload)));
    w->set_kind(kind);
    ASSIGN_OR_RETURN(int64_t ops, args.Int("ops", 0));
    if (ops < 0) return absl::InvalidArgumentError("--ops must not be negative");
    w->set_ops_per_vcpu(static_cast<uint64_t>(ops));
    ASSIGN_OR_RETURN(int64_t seed, args.Int("seed", 1));
    w->set_seed(static_cast<uint64_t>(seed));
    ASSIGN_OR_RETURN(double zero_fraction, args.Double("zero-fraction", 0.0));
    w->set_zero_fraction(zero_fraction);
    ASSIGN_OR_RETURN(uint64_t dirty_rate,
                     args.Rate("dirty-rate", api::kDefaultDirtyBytesPerSec));
    w->set_dirty_bytes_per_sec(dirty_rate);
    ASSIGN_OR_RETURN(double write_fraction,
                     args.Double("write-fraction", api::kDefaultWriteFraction));
    w->set_write_fraction(write_fraction);
    ASSIGN_OR_RETURN(double hot_fraction, args.Double("hot-fraction", api::kDefaultHotFraction));
    ASSIGN_OR_RETURN(double hot_access, args.Double("hot-access", api::kDefaultHotAccessFraction));
    // In the API 0 means "the default"; here it is a mistake, and said so.
    if (!(hot_fraction > 0 && hot_fraction <= 1))
      return absl::InvalidArgumentError("--hot-fraction must be above 0 and at most 1");
    if (!(hot_access > 0 && hot_access <= 1))
      return absl::InvalidArgumentError("--hot-access must be above 0 and at most 1");
    w->set_hot_fraction(hot_fraction);
    w->set_hot_access_fraction(hot_access);
    ASSIGN_OR_RETURN(ferry::v1::VmBackend backend,
                     api::ParseVmBackend(args.String("backend", api::kDefaultBackend)));
    r.set_backend(backend);
    RETURN_IF_ERROR(args.Finish());
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    ferry::v1::Vm vm;
    grpc::Status s = stub->CreateVm(&ctx, r, &vm);
    if (!s.ok()) return CallError(s, "create VM " + name, address);
    if (json) std::printf("%s\n", VmJson(vm).ToString().c_str());
    else PrintVmTable({vm});
    return absl::OkStatus();
  }
  if (verb == "list") {
    RETURN_IF_ERROR(args.Finish(2, "ferry vm list"));
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    ferry::v1::ListVmsResponse out;
    grpc::Status s = stub->ListVms(&ctx, {}, &out);
    if (!s.ok()) return CallError(s, "list VMs", address);
    if (json) {
      std::vector<JsonObject> vms;
      for (const auto& v : out.vms()) vms.push_back(VmJson(v));
      JsonObject o;
      o.Add("vms", vms);
      std::printf("%s\n", o.ToString().c_str());
    } else {
      PrintVmTable({out.vms().begin(), out.vms().end()});
    }
    return absl::OkStatus();
  }
  if (verb == "resume") {
    ASSIGN_OR_RETURN(std::string name, Name(args, verb.c_str()));
    ferry::v1::ResumeVmRequest r;
    r.set_name(name);
    r.set_force(args.Bool("force"));
    RETURN_IF_ERROR(args.Finish());
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    ferry::v1::Vm vm;
    grpc::Status s = stub->ResumeVm(&ctx, r, &vm);
    if (!s.ok()) return CallError(s, "resume VM " + name, address);
    if (json) std::printf("%s\n", VmJson(vm).ToString().c_str());
    else PrintVmTable({vm});
    return absl::OkStatus();
  }
  if (verb == "snapshot") {
    ASSIGN_OR_RETURN(std::string name, Name(args, "snapshot"));
    if (!args.Has("to"))
      return absl::InvalidArgumentError(
          "ferry vm snapshot needs --to DIR, the directory to create on the agent's host "
          "(usage: ferry vm snapshot NAME --to DIR [--live] [--stop])");
    ferry::v1::SnapshotVmRequest r;
    r.set_name(name);
    ASSIGN_OR_RETURN(*r.mutable_dir(), AbsolutePath(args.String("to"), "--to"));
    r.set_leave_stopped(args.Bool("stop"));
    r.set_live(args.Bool("live"));
    RETURN_IF_ERROR(args.Finish());
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    ferry::v1::SnapshotVmResponse out;
    grpc::Status s = stub->SnapshotVm(&ctx, r, &out);
    if (!s.ok()) return CallError(s, "snapshot VM " + name, address);
    if (json)
      std::printf("%s\n", SnapshotJson(out).ToString().c_str());
    else
      PrintSnapshot(name, out);
    return absl::OkStatus();
  }
  if (verb == "restore") {
    ASSIGN_OR_RETURN(std::string name, Name(args, "restore"));
    if (!args.Has("from"))
      return absl::InvalidArgumentError(
          "ferry vm restore needs --from DIR, a snapshot directory on the agent's host "
          "(usage: ferry vm restore NAME --from DIR [--lazy [--fault-mode exit|blocking]])");
    ferry::v1::RestoreVmRequest r;
    r.set_name(name);
    ASSIGN_OR_RETURN(*r.mutable_dir(), AbsolutePath(args.String("from"), "--from"));
    r.set_lazy(args.Bool("lazy"));
    if (args.Has("fault-mode")) {
      if (!r.lazy())
        return absl::InvalidArgumentError(
            "--fault-mode is for --lazy: an eager restore reads every page before the VM runs");
      ASSIGN_OR_RETURN(ferry::v1::FaultMode mode, api::ParseFaultMode(args.String("fault-mode")));
      r.set_fault_mode(mode);
    }
    RETURN_IF_ERROR(args.Finish());
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    ferry::v1::Vm vm;
    grpc::Status s = stub->RestoreVm(&ctx, r, &vm);
    if (!s.ok()) return CallError(s, "restore VM " + name, address);
    if (json) {
      std::printf("%s\n", VmJson(vm).ToString().c_str());
      return absl::OkStatus();
    }
    PrintVmTable({vm});
    PrintRestore(vm);
    return absl::OkStatus();
  }
  if (verb == "get" || verb == "delete") {
    ASSIGN_OR_RETURN(std::string name, Name(args, verb.c_str()));
    RETURN_IF_ERROR(args.Finish());
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    if (verb == "delete") {
      ferry::v1::DeleteVmRequest r;
      r.set_name(name);
      ferry::v1::DeleteVmResponse out;
      grpc::Status s = stub->DeleteVm(&ctx, r, &out);
      if (!s.ok()) return CallError(s, "delete VM " + name, address);
      if (!json) std::printf("deleted %s\n", name.c_str());
      else std::printf("%s\n", JsonObject().Add("deleted", name).ToString().c_str());
      return absl::OkStatus();
    }
    ferry::v1::GetVmRequest r;
    r.set_name(name);
    ferry::v1::Vm vm;
    grpc::Status s = stub->GetVm(&ctx, r, &vm);
    if (!s.ok()) return CallError(s, "get VM " + name, address);
    if (json) {
      std::printf("%s\n", VmJson(vm).ToString().c_str());
      return absl::OkStatus();
    }
    PrintVmTable({vm});
    std::printf("backend %s (%s)%s%s\n", api::Spelling(vm.layout().backend()).c_str(),
                vm.backend_reason().c_str(), vm.backend_capabilities().empty() ? "" : ": ",
                vm.backend_capabilities().c_str());
    PrintMemory(vm);
    PrintRestore(vm);
    PrintError(vm);
    return absl::OkStatus();
  }
  if (verb == "stats") {
    ASSIGN_OR_RETURN(std::string name, Name(args, "stats"));
    RETURN_IF_ERROR(args.Finish());
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    ferry::v1::VmStatsRequest r;
    r.set_name(name);
    ferry::v1::VmStatsResponse out;
    grpc::Status s = stub->VmStats(&ctx, r, &out);
    if (!s.ok()) return CallError(s, "stats of VM " + name, address);
    if (json) {
      std::printf("%s\n", VmStatsJson(out).ToString().c_str());
      return absl::OkStatus();
    }
    PrintVmTable({out.vm()});
    std::printf("guest ops/s %.0f (since the previous stats call, or the VM's start)",
                out.guest_ops_per_sec());
    if (out.faults() || out.pages_missing())
      std::printf("; faults %llu, pages missing %llu",
                  static_cast<unsigned long long>(out.faults()),
                  static_cast<unsigned long long>(out.pages_missing()));
    std::printf("\n%-6s %-9s %14s %12s\n", "VCPU", "STATE", "OPS", "FAULT EXITS");
    for (const auto& v : out.vcpus())
      std::printf("%-6u %-9s %14llu %12llu\n", v.index(), v.state().c_str(),
                  static_cast<unsigned long long>(v.ops()),
                  static_cast<unsigned long long>(v.fault_exits()));
    return absl::OkStatus();
  }
  if (verb == "verify") {
    ASSIGN_OR_RETURN(std::string name, Name(args, "verify"));
    ASSIGN_OR_RETURN(int64_t timeout, args.Int("timeout-ms", 60000));
    RETURN_IF_ERROR(args.Finish());
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    ferry::v1::VerifyVmRequest r;
    r.set_name(name);
    r.set_timeout_ms(timeout);
    ferry::v1::VerifyVmResponse out;
    grpc::Status s = stub->VerifyVm(&ctx, r, &out);
    if (!s.ok()) return CallError(s, "verify VM " + name, address);
    if (json) std::printf("%s\n", VerifyJson(name, out).ToString().c_str());
    else
      std::printf("%s: digest %s, reference %s: %s\n", name.c_str(), out.digest().c_str(),
                  out.reference_digest().c_str(),
                  out.match() ? "MATCH"
                              : absl::StrFormat("MISMATCH (%d pages differ)",
                                                out.differing_pages())
                                    .c_str());
    if (!out.match())
      return absl::DataLossError("the VM's memory differs from a replay of its workload");
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown vm command '%s' (create, list, get, stats, verify, resume, "
                      "snapshot, restore, resize, memory, delete; see ferry help vm)",
                      verb));
}

}  // namespace ferry::cli
