// ferry events (docs/cli.md, "Events").
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"
#include "migration/cli/commands.h"

namespace ferry::cli {
namespace {

// What an event says beyond its kind.
std::string Details(const ferry::v1::Event& e) {
  std::string d;
  switch (e.kind()) {
    case ferry::v1::EVENT_KIND_PHASE_CHANGED:
      d = absl::StrCat(e.from_phase() ? api::Spelling(e.from_phase()) : "-", " -> ",
                       api::Spelling(e.to_phase()));
      break;
    case ferry::v1::EVENT_KIND_PARAMETER_CHANGED:
      d = absl::StrCat(e.parameter(), " ", e.old_value(), " -> ", e.new_value());
      break;
    case ferry::v1::EVENT_KIND_REQUEST_REFUSED:
      d = absl::StrCat(e.rpc(), ": ", e.code(),
                       e.identity().empty() ? "" : absl::StrCat(" (", e.identity(), ")"), ": ",
                       e.message());
      break;
    case ferry::v1::EVENT_KIND_RECOVERY:
    case ferry::v1::EVENT_KIND_MIGRATION_ENDED:
      d = e.message().empty() ? e.outcome() : absl::StrCat(e.outcome(), ": ", e.message());
      break;
    default:
      d = e.message();
  }
  return d;
}

JsonObject EventJson(const ferry::v1::Event& e) {
  JsonObject o;
  o.Add("sequence", static_cast<uint64_t>(e.sequence()))
      .Add("time_unix_ms", static_cast<int64_t>(e.time_unix_ms()))
      .Add("kind", api::Spelling(e.kind()))
      .Add("vm_name", e.vm_name())
      .Add("migration_id", e.migration_id())
      .Add("side", e.side())
      .Add("message", e.message());
  if (e.kind() == ferry::v1::EVENT_KIND_PHASE_CHANGED)
    o.Add("from_phase", e.from_phase() ? api::Spelling(e.from_phase()) : std::string())
        .Add("to_phase", api::Spelling(e.to_phase()));
  if (e.kind() == ferry::v1::EVENT_KIND_PARAMETER_CHANGED)
    o.Add("parameter", e.parameter())
        .Add("old_value", static_cast<int64_t>(e.old_value()))
        .Add("new_value", static_cast<int64_t>(e.new_value()));
  if (!e.outcome().empty()) o.Add("outcome", e.outcome());
  if (e.kind() == ferry::v1::EVENT_KIND_REQUEST_REFUSED)
    o.Add("rpc", e.rpc()).Add("code", e.code()).Add("identity", e.identity());
  if (e.kind() == ferry::v1::EVENT_KIND_EVENTS_LOST) o.Add("lost", static_cast<uint64_t>(e.lost()));
  return o;
}

// "10:00:01.234 #12 source web mig-1 phase-changed precopy -> switchover"
std::string EventLine(const ferry::v1::Event& e) {
  const std::string t =
      absl::FormatTime("%H:%M:%E3S", absl::FromUnixMillis(e.time_unix_ms()), absl::LocalTimeZone());
  return absl::StrFormat("%s #%d %-11s %-16s %-22s %-18s %s", t, e.sequence(),
                         e.side().empty() ? "-" : e.side(), e.vm_name().empty() ? "-" : e.vm_name(),
                         e.migration_id().empty() ? "-" : e.migration_id(), api::Spelling(e.kind()),
                         Details(e));
}

}  // namespace

absl::Status EventsCommand(Args& args) {
  const std::string address = args.String("agent", api::kDefaultAgentAddress);
  ASSIGN_OR_RETURN(ConnectOptions co, ParseConnectOptions(args));
  const bool json = args.Bool("json");
  ferry::v1::WatchEventsRequest r;
  if (args.Has("vm")) {
    r.set_vm_name(args.String("vm", ""));
    RETURN_IF_ERROR(api::ValidateVmName(r.vm_name()));
  }
  r.set_migration_id(args.String("migration", ""));
  ASSIGN_OR_RETURN(int64_t since, args.Int("since", 0));
  ASSIGN_OR_RETURN(int64_t count, args.Int("count", 0));
  if (since < 0) return absl::InvalidArgumentError("--since must not be negative (1: all kept)");
  if (count < 0) return absl::InvalidArgumentError("--count must not be negative (0: no end)");
  r.set_since_sequence(static_cast<uint64_t>(since));
  RETURN_IF_ERROR(args.Finish(
      1, "ferry events [--vm NAME] [--migration ID] [--since SEQ] [--count N] [--json]"));
  ASSIGN_OR_RETURN(auto stub, Connect(address, co));
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<ferry::v1::Event>> reader = stub->WatchEvents(&ctx, r);
  ferry::v1::Event e;
  int64_t seen = 0;
  while (reader->Read(&e)) {
    if (json)
      std::printf("%s\n", EventJson(e).ToString().c_str());
    else
      std::printf("%s\n", EventLine(e).c_str());
    if (count > 0 && ++seen >= count) {
      ctx.TryCancel();
      return absl::OkStatus();
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return CallError(s, "watch events", address);
  return absl::OkStatus();
}

}  // namespace ferry::cli
