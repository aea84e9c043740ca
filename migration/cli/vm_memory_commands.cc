// ferry vm resize and ferry vm memory add|remove: a VM's memory map changed
// while it runs (ChangeVmMemory; docs/cli.md, "Changing a VM's memory").
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "base/units.h"
#include "migration/api/names.h"
#include "migration/cli/commands.h"
#include "migration/cli/json_output.h"

namespace ferry::cli {
namespace {

// The region `vm resize` changes: the VM's main region.
constexpr char kMainRegion[] = "ram";

// "resize ram to 128 MiB", "add dimm0 (64 MiB at 0x40000000)", "remove dimm0".
std::string ChangeText(const ferry::v1::MemoryChange& c) {
  switch (c.kind()) {
    case ferry::v1::MemoryChange::KIND_ADD:
      return absl::StrFormat("add %s (%s at 0x%x)", c.region(), FormatSize(c.size()), c.gpa());
    case ferry::v1::MemoryChange::KIND_REMOVE:
      return absl::StrCat("remove ", c.region());
    default:
      return absl::StrFormat("resize %s to %s", c.region(), FormatSize(c.size()));
  }
}

// NAME, the word at `at` (`vm resize NAME` or `vm memory add NAME`), and
// nothing after it.
absl::StatusOr<std::string> NameAt(const Args& args, size_t at, const std::string& usage) {
  if (args.positional().size() <= at)
    return absl::InvalidArgumentError(absl::StrCat("a VM name is needed (usage: ", usage, ")"));
  if (args.positional().size() > at + 1)
    return absl::InvalidArgumentError(
        absl::StrFormat("unexpected argument '%s' (usage: %s)", args.positional()[at + 1], usage));
  const std::string& name = args.positional()[at];
  RETURN_IF_ERROR(api::ValidateVmName(name));
  return name;
}

// --region R, given.
absl::StatusOr<std::string> Region(Args& args, const std::string& usage) {
  if (!args.Has("region"))
    return absl::InvalidArgumentError(absl::StrCat("--region is needed (usage: ", usage, ")"));
  return args.String("region");
}

// The change the command line asks for, into `r`.
absl::Status ParseChange(Args& args, const std::string& verb, ferry::v1::ChangeVmMemoryRequest& r) {
  ferry::v1::MemoryChange* c = r.add_changes();
  if (verb == "resize") {
    const std::string usage = "ferry vm resize NAME --memory SIZE";
    ASSIGN_OR_RETURN(*r.mutable_name(), NameAt(args, 2, usage));
    if (!args.Has("memory"))
      return absl::InvalidArgumentError(absl::StrCat(
          "--memory is needed: the size of the VM's main region (usage: ", usage, ")"));
    ASSIGN_OR_RETURN(uint64_t memory, args.Bytes("memory", 0));
    c->set_kind(ferry::v1::MemoryChange::KIND_RESIZE);
    c->set_region(kMainRegion);
    c->set_size(memory);
    return absl::OkStatus();
  }
  const std::string what = args.positional().size() > 2 ? args.positional()[2] : "";
  if (what == "add") {
    const std::string usage = "ferry vm memory add NAME --region R --gpa ADDR --size SIZE";
    ASSIGN_OR_RETURN(*r.mutable_name(), NameAt(args, 3, usage));
    ASSIGN_OR_RETURN(*c->mutable_region(), Region(args, usage));
    if (!args.Has("gpa") || !args.Has("size"))
      return absl::InvalidArgumentError(
          absl::StrCat("--gpa and --size are needed: where the region starts in guest-physical "
                       "memory, and how big it is (usage: ",
                       usage, ")"));
    c->set_kind(ferry::v1::MemoryChange::KIND_ADD);
    ASSIGN_OR_RETURN(uint64_t gpa, ParseAddress(args.String("gpa"), "--gpa"));
    c->set_gpa(gpa);
    ASSIGN_OR_RETURN(uint64_t size, args.Bytes("size", 0));
    c->set_size(size);
    return absl::OkStatus();
  }
  if (what == "remove") {
    const std::string usage = "ferry vm memory remove NAME --region R";
    ASSIGN_OR_RETURN(*r.mutable_name(), NameAt(args, 3, usage));
    ASSIGN_OR_RETURN(*c->mutable_region(), Region(args, usage));
    c->set_kind(ferry::v1::MemoryChange::KIND_REMOVE);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      what.empty() ? "usage: ferry vm memory add|remove NAME ... (see ferry help vm memory)"
                   : absl::StrFormat("unknown vm memory command '%s' (add, remove; see ferry "
                                     "help vm memory)",
                                     what));
}

}  // namespace

std::string RegionsText(
    const google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion>& regions) {
  return absl::StrJoin(regions, ", ", [](std::string* out, const ferry::v1::MemoryRegion& r) {
    absl::StrAppendFormat(out, "%s %s at 0x%x", r.name(), FormatSize(r.size()), r.gpa());
  });
}

absl::Status VmMemoryCommand(Args& args, const std::string& address, const ConnectOptions& co,
                             bool json) {
  const std::string verb = args.positional()[1];
  ferry::v1::ChangeVmMemoryRequest r;
  RETURN_IF_ERROR(ParseChange(args, verb, r));
  RETURN_IF_ERROR(args.Finish());
  ASSIGN_OR_RETURN(auto stub, Connect(address, co));
  grpc::ClientContext ctx;
  ferry::v1::ChangeVmMemoryResponse out;
  grpc::Status s = stub->ChangeVmMemory(&ctx, r, &out);
  const std::string change = ChangeText(r.changes(0));
  if (!s.ok()) return CallError(s, absl::StrCat(change, " of VM ", r.name()), address);
  if (json) {
    std::printf("%s\n", MemoryChangeJson(r.name(), out).ToString().c_str());
    return absl::OkStatus();
  }
  std::printf("%s: %s: done; its vCPUs were held off %.3f ms\n", r.name().c_str(), change.c_str(),
              out.held_off_us() / 1e3);
  std::printf("regions: %s (%s in all)\n", RegionsText(out.regions()).c_str(),
              FormatSize(out.memory_bytes()).c_str());
  // KVM only: what the memslots went through (software vCPUs have none).
  if (out.slots_kept() + out.slots_resized() + out.slots_recreated() + out.slots_created() +
          out.slots_deleted() >
      0)
    std::printf(
        "memslots: %u kept, %u resized in place, %u recreated, %u created, %u deleted; stage-2 "
        "mappings of %s dropped (the guest faults them back in)\n",
        out.slots_kept(), out.slots_resized(), out.slots_recreated(), out.slots_created(),
        out.slots_deleted(), FormatSize(out.stage2_bytes_dropped()).c_str());
  return absl::OkStatus();
}

}  // namespace ferry::cli
