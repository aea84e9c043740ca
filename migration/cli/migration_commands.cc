// ferry migration list|get|watch|cancel|recover (docs/cli.md, "Migrations").
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "base/units.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"
#include "migration/cli/commands.h"
#include "migration/cli/json_output.h"
#include "migration/report.h"

namespace ferry::cli {
namespace {

// "2024-05-01 10:00:00 +0200", in the local time zone; "-" for 0.
std::string WallClock(int64_t unix_ms, const char* format = "%Y-%m-%d %H:%M:%S %z") {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime(format, absl::FromUnixMillis(unix_ms), absl::LocalTimeZone());
}

std::string Peer(const ferry::v1::MigrationResource& m) {
  // Outgoing: "to DESTINATION"; incoming (this agent receives it): "from
  // SOURCE".
  return m.direction() == "incoming" ? "from " + m.source() : "to " + m.destination();
}

// The percent column: how far it got; none for one that got nowhere.
std::string PercentColumn(const ferry::v1::MigrationResource& m) {
  if (Terminal(m.phase()) && GotNowhere(m)) return "     -";
  return absl::StrFormat("%5.1f%%", m.progress().percent());
}

void PrintMigrationTable(const std::vector<ferry::v1::MigrationResource>& ms) {
  std::printf("%-22s %-16s %-26s %-9s %-15s %-8s %s\n", "ID", "VM", "PEER", "MODE", "PHASE",
              "STARTED", "PROGRESS");
  for (const auto& m : ms)
    std::printf("%-22s %-16s %-26s %-9s %-15s %-8s %s%s\n", m.id().c_str(), m.vm_name().c_str(),
                Peer(m).c_str(),
                m.direction() == "incoming" ? "-" : api::Spelling(m.mode()).c_str(),
                PhaseName(m.phase()).c_str(), WallClock(m.start_time_unix_ms(), "%H:%M:%S").c_str(),
                PercentColumn(m).c_str(), m.error().empty() ? "" : ("  " + m.error()).c_str());
}

// migration get: what it is, when it ran (wall clock), where it is, and
// once it ended its report.
void PrintMigration(const ferry::v1::MigrationResource& m) {
  std::printf("migration %s: %s %s (%s, fault mode %s): %s\n", m.id().c_str(),
              m.vm_name().c_str(), Peer(m).c_str(),
              m.mode() ? api::Spelling(m.mode()).c_str() : "-",
              m.fault_mode() ? api::Spelling(m.fault_mode()).c_str() : "-",
              PhaseName(m.phase()).c_str());
  if (m.start_time_unix_ms() > 0) {
    std::printf("  started %s", WallClock(m.start_time_unix_ms()).c_str());
    if (m.end_time_unix_ms() > 0)
      std::printf(", ended %s (%.1f s)", WallClock(m.end_time_unix_ms()).c_str(),
                  (m.end_time_unix_ms() - m.start_time_unix_ms()) / 1e3);
    std::printf("\n");
  }
  if (!m.error().empty()) std::printf("  error: %s\n", m.error().c_str());
  if (!Terminal(m.phase())) {
    std::printf("  %s\n", ProgressLine(m).c_str());
  } else if (m.has_report() && !GotNowhere(m) && m.direction() != "incoming") {
    std::string report = migration::ReportText(migration::ReportOf(m));
    report.erase(0, report.find('\n') + 1);  // its first line says what the line above did
    std::printf("%s", report.c_str());
  }
  // This agent's side, on its wall clock (an incoming migration's report
  // holds only these).
  std::printf("%s", migration::PhaseTimingsText(m.report().phase_timings()).c_str());
  for (const ferry::v1::ParameterChange& c : m.report().parameter_changes())
    std::printf("  at %.0f ms: %s %lld -> %lld\n", c.time_ms(), c.parameter().c_str(),
                static_cast<long long>(c.old_value()), static_cast<long long>(c.new_value()));
}

absl::StatusOr<ferry::v1::MigrationPhase> ParsePhase(const std::string& name) {
  std::vector<std::string> names;
  for (int p = 1; ferry::v1::MigrationPhase_IsValid(p); ++p) {
    const auto phase = static_cast<ferry::v1::MigrationPhase>(p);
    if (api::Spelling(phase) == name) return phase;
    names.push_back(api::Spelling(phase));
  }
  return absl::InvalidArgumentError(absl::StrCat("--phase: unknown phase '", name, "': choose ",
                                                 absl::StrJoin(names, ", ")));
}

// Ctrl-C on `migration watch`: only the watching stops. The message is
// composed before, so that the handler only writes it (async-signal-safe).
char watch_interrupt_message[512];

void OnWatchInterrupt(int) {
  (void)!write(STDERR_FILENO, watch_interrupt_message, strlen(watch_interrupt_message));
  _exit(130);
}

void StopWatchingOnInterrupt(const std::string& id, const std::string& address) {
  absl::SNPrintF(watch_interrupt_message, sizeof(watch_interrupt_message),
                 "\nferry: stopped watching migration %s; the migration goes on on the agents "
                 "(`ferry migration cancel %s --agent %s` cancels it before switchover); "
                 "follow it again with `ferry migration watch %s --agent %s`\n",
                 id, id, address, id, address);
  struct sigaction sa {};
  sa.sa_handler = OnWatchInterrupt;
  sigaction(SIGINT, &sa, nullptr);
}

absl::Status List(Args& args, const std::string& address, const ConnectOptions& co,
                  bool json) {
  const std::string vm = args.String("vm", "");
  const std::string phase_name = args.String("phase", "");
  ASSIGN_OR_RETURN(int64_t limit, args.Int("limit", 0));
  if (limit < 0) return absl::InvalidArgumentError("--limit must not be negative (0: all)");
  std::optional<ferry::v1::MigrationPhase> phase;
  if (args.Has("phase")) {
    ASSIGN_OR_RETURN(phase, ParsePhase(phase_name));
  }
  if (args.Has("vm")) RETURN_IF_ERROR(api::ValidateVmName(vm));
  RETURN_IF_ERROR(args.Finish(2, "ferry migration list [--vm NAME] [--phase PHASE] [--limit N]"));
  ASSIGN_OR_RETURN(auto stub, Connect(address, co));
  grpc::ClientContext ctx;
  ferry::v1::ListMigrationsResponse out;
  grpc::Status s = stub->ListMigrations(&ctx, {}, &out);
  if (!s.ok()) return CallError(s, "list migrations", address);
  // Filtered here: the API lists all. Oldest first; --limit keeps the
  // newest N.
  std::vector<ferry::v1::MigrationResource> ms;
  for (const auto& m : out.migrations())
    if ((vm.empty() || m.vm_name() == vm) && (!phase || m.phase() == *phase)) ms.push_back(m);
  std::stable_sort(ms.begin(), ms.end(), [](const auto& x, const auto& y) {
    return x.start_time_unix_ms() < y.start_time_unix_ms();
  });
  if (limit > 0 && ms.size() > static_cast<size_t>(limit))
    ms.erase(ms.begin(), ms.end() - limit);
  if (json) {
    std::vector<JsonObject> all;
    for (const auto& m : ms) all.push_back(MigrationJson(m));
    JsonObject o;
    o.Add("migrations", all);
    std::printf("%s\n", o.ToString().c_str());
  } else {
    PrintMigrationTable(ms);
  }
  return absl::OkStatus();
}

// migration set ID [--max-bandwidth R] [--downtime-target-ms N] [--streams N].
absl::Status Set(Args& args, const std::string& address, const ConnectOptions& co, bool json) {
  if (args.positional().size() < 3)
    return absl::InvalidArgumentError(
        "ferry migration set needs a migration ID (usage: ferry migration set ID "
        "[--max-bandwidth R] [--downtime-target-ms N] [--streams N] --agent SOURCE)");
  ferry::v1::SetMigrationParametersRequest r;
  r.set_id(args.positional()[2]);
  if (args.Has("max-bandwidth")) {
    ASSIGN_OR_RETURN(uint64_t rate, args.Rate("max-bandwidth", 0));
    r.set_max_bandwidth(rate);
  }
  if (args.Has("downtime-target-ms")) {
    ASSIGN_OR_RETURN(int64_t ms, args.Int("downtime-target-ms", 0));
    if (ms <= 0) return absl::InvalidArgumentError("--downtime-target-ms must be at least 1");
    r.set_downtime_target_ms(ms);
  }
  if (args.Has("streams")) {
    ASSIGN_OR_RETURN(int64_t n, args.Int("streams", 0));
    if (n < 1 || n > 8) return absl::InvalidArgumentError("--streams must be 1 to 8");
    r.set_streams(static_cast<uint32_t>(n));
  }
  RETURN_IF_ERROR(args.Finish(3,
                              "ferry migration set ID [--max-bandwidth R] [--downtime-target-ms N] "
                              "[--streams N] --agent SOURCE"));
  if (!r.has_max_bandwidth() && !r.has_downtime_target_ms() && !r.has_streams())
    return absl::InvalidArgumentError(
        "ferry migration set: nothing to change: give --max-bandwidth, --downtime-target-ms "
        "and/or --streams");
  ASSIGN_OR_RETURN(auto stub, Connect(address, co));
  grpc::ClientContext ctx;
  ferry::v1::MigrationResource out;
  grpc::Status s = stub->SetMigrationParameters(&ctx, r, &out);
  if (!s.ok()) return CallError(s, "set parameters of migration " + r.id(), address);
  if (json) {
    std::printf("%s\n", MigrationJson(out).ToString().c_str());
  } else {
    const auto& p = out.progress();
    const std::string rate = p.max_bandwidth() ? absl::StrFormat("%d B/s (%s)", p.max_bandwidth(),
                                                                 FormatRate(p.max_bandwidth()))
                                               : "none";
    std::printf("migration %s: max bandwidth %s, downtime target %lld ms, streams %d%s\n",
                out.id().c_str(), rate.c_str(), static_cast<long long>(p.downtime_target_ms()),
                p.streams(),
                r.has_streams() && static_cast<int>(r.streams()) != static_cast<int>(p.streams())
                    ? absl::StrFormat(" (%d from the next precopy round)", r.streams())
                          .c_str()
                    : "");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MigrationCommand(Args& args) {
  const std::string address = args.String("agent", api::kDefaultAgentAddress);
  ASSIGN_OR_RETURN(ConnectOptions co, ParseConnectOptions(args));
  const bool json = args.Bool("json");
  if (args.positional().size() < 2)
    return absl::InvalidArgumentError(
        "usage: ferry migration list|get|watch|cancel|recover|set|postcopy [ID] (see ferry help "
        "migration)");
  const std::string verb = args.positional()[1];
  if (verb == "list") return List(args, address, co, json);
  if (verb == "set") return Set(args, address, co, json);
  if (verb != "get" && verb != "watch" && verb != "cancel" && verb != "recover" &&
      verb != "postcopy")
    return absl::InvalidArgumentError(absl::StrFormat(
        "unknown migration command '%s' (list, get, watch, cancel, recover, set, postcopy; "
        "see ferry help migration)",
        verb));
  if (args.positional().size() < 3)
    return absl::InvalidArgumentError(
        absl::StrFormat("ferry migration %s needs a migration ID (usage: ferry migration %s ID "
                        "--agent SOURCE)",
                        verb, verb));
  const std::string id = args.positional()[2];
  const std::string to = verb == "recover" ? args.String("to", "") : "";
  RETURN_IF_ERROR(args.Finish(3, absl::StrFormat("ferry migration %s ID --agent SOURCE", verb)));
  ASSIGN_OR_RETURN(auto stub, Connect(address, co));
  if (verb == "watch") {
    StopWatchingOnInterrupt(id, address);
    ASSIGN_OR_RETURN(auto done, Follow(*stub, address, id, json, stdout));
    return OutcomeStatus(done);
  }
  grpc::ClientContext ctx;
  ferry::v1::MigrationResource out;
  grpc::Status s;
  if (verb == "get") {
    ferry::v1::GetMigrationRequest r;
    r.set_id(id);
    s = stub->GetMigration(&ctx, r, &out);
  } else if (verb == "postcopy") {
    ferry::v1::StartPostcopyRequest r;
    r.set_id(id);
    s = stub->StartPostcopy(&ctx, r, &out);
  } else if (verb == "cancel") {
    ferry::v1::CancelMigrationRequest r;
    r.set_id(id);
    s = stub->CancelMigration(&ctx, r, &out);
  } else {
    ferry::v1::RecoverMigrationRequest r;
    r.set_id(id);
    r.set_destination(to);
    s = stub->RecoverMigration(&ctx, r, &out);
  }
  if (!s.ok()) return CallError(s, verb + " migration " + id, address);
  if (json) std::printf("%s\n", MigrationJson(out).ToString().c_str());
  else if (verb == "get") PrintMigration(out);
  else PrintMigrationTable({out});
  return absl::OkStatus();
}

}  // namespace ferry::cli
