#include <sys/ioctl.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/strings/str_format.h"
#include "base/grpc_status.h"
#include "base/status_macros.h"
#include "migration/api/report_proto.h"
#include "migration/cli/commands.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"

namespace ferry::cli {

std::string PhaseName(ferry::v1::MigrationPhase p) { return api::Spelling(p); }

namespace {

constexpr absl::Duration kWatchReconnectFor = absl::Seconds(60);

// The terminal's width in columns (80 when it does not say).
size_t TerminalWidth(FILE* out) {
  winsize ws{};
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

bool Terminal(ferry::v1::MigrationPhase p) {
  return p == ferry::v1::MIGRATION_PHASE_COMPLETED || p == ferry::v1::MIGRATION_PHASE_FAILED ||
         p == ferry::v1::MIGRATION_PHASE_CANCELLED;
}

void PrintMigrationTable(const std::vector<ferry::v1::MigrationResource>& ms) {
  std::printf("%-22s %-16s %-26s %-9s %-10s %s\n", "ID", "VM", "PEER", "MODE", "PHASE",
              "PROGRESS");
  for (const auto& m : ms) {
    // Outgoing: "to DESTINATION"; incoming (this agent receives it): "from
    // SOURCE".
    const std::string peer = m.direction() == "incoming" ? "from " + m.source()
                                                         : "to " + m.destination();
    std::printf("%-22s %-16s %-26s %-9s %-10s %5.1f%%%s\n", m.id().c_str(), m.vm_name().c_str(),
                peer.c_str(),
                m.direction() == "incoming" ? "-" : api::Spelling(m.mode()).c_str(),
                PhaseName(m.phase()).c_str(), m.progress().percent(),
                m.error().empty() ? "" : ("  " + m.error()).c_str());
  }
}

}  // namespace

JsonObject MigrationJson(const ferry::v1::MigrationResource& m) {
  const auto& p = m.progress();
  JsonObject progress;
  progress.Add("round", static_cast<uint64_t>(p.round()))
      .Add("elapsed_ms", p.elapsed_ms())
      .Add("percent", p.percent())
      .Add("eta_ms", p.eta_ms())
      .Add("pages_total", p.pages_total())
      .Add("pages_transferred", p.pages_transferred())
      .Add("pages_remaining", p.pages_remaining())
      .Add("bytes_sent", p.bytes_sent())
      .Add("bandwidth_bps", p.bandwidth_bps())
      .Add("dirty_pages_per_sec", p.dirty_pages_per_sec())
      .Add("faults", p.faults())
      .Add("faults_per_sec", p.faults_per_sec())
      .Add("downtime_ms", p.downtime_ms())
      .Add("fault_p99_us", p.fault_p99_us())
      .Add("reconnects", static_cast<uint64_t>(p.reconnects()))
      .Add("paused_reason", p.paused_reason());
  JsonObject o;
  o.Add("id", m.id())
      .Add("request_id", m.request_id())
      .Add("vm_name", m.vm_name())
      .Add("direction", m.direction().empty() ? std::string("outgoing") : m.direction())
      .Add("source", m.source())
      .Add("destination", m.destination())
      .Add("mode", m.mode() ? api::Spelling(m.mode()) : std::string())
      .Add("fault_mode", m.fault_mode() ? api::Spelling(m.fault_mode()) : std::string())
      .Add("phase", PhaseName(m.phase()))
      .Add("error", m.error())
      .Add("error_code", static_cast<int64_t>(m.error_code()))
      .Add("progress", progress);
  if (Terminal(m.phase()) && m.has_report())
    o.Add("report", api::FromProto(m.report(), m.id()).ToJson());
  return o;
}

std::string ProgressLine(const ferry::v1::MigrationResource& m) {
  const auto& p = m.progress();
  // Percent and ETA of the whole migration (the agent's estimate), not of
  // the round.
  std::string line = absl::StrFormat("%6.2fs  %-10s", p.elapsed_ms() / 1e3, PhaseName(m.phase()));
  if (m.phase() == ferry::v1::MIGRATION_PHASE_PRECOPY)
    absl::StrAppendFormat(&line, " round %-3d", p.round());
  else
    line += "          ";
  absl::StrAppendFormat(&line, " %5.1f%%  %6.2f Gbit/s", p.percent(), p.bandwidth_bps() * 8 / 1e9);
  if (m.phase() == ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED) {
    absl::StrAppendFormat(&line, "  missing %7d  reconnecting: %s", p.pages_remaining(),
                          p.paused_reason());
    return line;
  }
  const bool running = m.phase() == ferry::v1::MIGRATION_PHASE_PRECOPY ||
                       m.phase() == ferry::v1::MIGRATION_PHASE_POSTCOPY;
  if (running)
    line += p.eta_ms() >= 0 ? absl::StrFormat("  ETA %.1fs", p.eta_ms() / 1e3)
                            : std::string("  ETA --");
  if (m.phase() == ferry::v1::MIGRATION_PHASE_PRECOPY) {
    absl::StrAppendFormat(&line, "  dirty %7.0f pages/s", p.dirty_pages_per_sec());
  } else if (m.phase() == ferry::v1::MIGRATION_PHASE_POSTCOPY) {
    absl::StrAppendFormat(&line, "  missing %7d  faults %6.0f/s  fault p99 %6.1f us",
                          p.pages_remaining(), p.faults_per_sec(), p.fault_p99_us());
  }
  if (p.reconnects() > 0) absl::StrAppendFormat(&line, "  reconnects %d", p.reconnects());
  return line;
}

absl::StatusOr<ferry::v1::MigrationResource> Follow(ferry::v1::Control::Stub& stub,
                                                    const std::string& address,
                                                    const std::string& id, bool json, FILE* out) {
  const bool tty = isatty(fileno(out));
  ferry::v1::WatchMigrationRequest r;
  r.set_id(id);
  r.set_interval_ms(tty ? 100 : 250);
  ferry::v1::MigrationResource m, last;
  bool any = false;
  ferry::v1::MigrationPhase printed_phase = ferry::v1::MIGRATION_PHASE_UNSPECIFIED;
  int64_t last_plain_ms = -1000;
  // The watch stream is only a view: when it breaks (the network, the
  // agent's connection) it is opened again, with backoff, for up to
  // kWatchReconnectFor without a message; the migration goes on regardless.
  absl::Time last_heard = absl::Now();
  absl::Duration backoff = absl::Milliseconds(200);
  grpc::Status s;
  for (;;) {
    grpc::ClientContext ctx;
    auto reader = stub.WatchMigration(&ctx, r);
    while (reader->Read(&m)) {
      last_heard = absl::Now();
      backoff = absl::Milliseconds(200);
      any = true;
      last = m;
      if (json) continue;
      if (tty) {
        // One live line, cut to the terminal's width (a line that wrapped
        // would leave a new line behind at every update).
        std::string line = ProgressLine(m);
        const size_t width = TerminalWidth(out);
        if (line.size() >= width) line.resize(width - 1);
        std::fprintf(out, "\r\033[K%s", line.c_str());
        std::fflush(out);
      } else if (m.phase() != printed_phase ||
                 (!Terminal(m.phase()) && m.progress().elapsed_ms() - last_plain_ms >= 1000)) {
        // A line at each phase change and every second; the end once.
        // Plain lines, each written out at once (logs and CI read them live).
        std::fprintf(out, "%s\n", ProgressLine(m).c_str());
        std::fflush(out);
        printed_phase = m.phase();
        last_plain_ms = static_cast<int64_t>(m.progress().elapsed_ms());
      }
    }
    s = reader->Finish();
    if (any && Terminal(last.phase())) break;
    const bool transient = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                           s.error_code() == grpc::StatusCode::INTERNAL || (s.ok() && any);
    if (!transient || absl::Now() - last_heard > kWatchReconnectFor) break;
    std::fprintf(stderr, "%sferry: the progress stream from %s broke (%s); reconnecting\n",
                 tty ? "\n" : "", address.c_str(), s.ok() ? "closed" : s.error_message().c_str());
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
  if (tty && !json) std::fprintf(out, "\n");
  if (!s.ok() && !(any && Terminal(last.phase())))
    return CallError(s, "watch migration " + id, address);
  if (!any || !Terminal(last.phase()))
    return absl::UnavailableError(
        absl::StrCat("lost the migration's progress stream from ", address, " before it ended"));
  if (json) {
    std::fprintf(out, "%s\n", MigrationJson(last).ToString().c_str());
  } else {
    std::fprintf(out, "%s", api::FromProto(last.report(), last.id()).ToText().c_str());
  }
  return last;
}

namespace {

// Ctrl-C during `ferry migrate`: the handler only writes a byte to a pipe;
// a thread of the command reads it and cancels the migration.
int interrupt_pipe[2] = {-1, -1};

void OnInterrupt(int) {
  const char b = 1;
  (void)!write(interrupt_pipe[1], &b, 1);
}

// Cancels the migration on the first Ctrl-C. Before switchover the agent
// cancels it (the source VM runs on) and the watch then ends with the
// cancelled migration. After switchover the destination owns the VM and
// the migration cannot be cancelled: the command says so and how to
// follow it, and exits with 130 (the migration goes on). A second Ctrl-C
// exits at once.
class InterruptToCancel {
 public:
  InterruptToCancel(ferry::v1::Control::Stub* stub, std::string address, std::string id)
      : stub_(stub), address_(std::move(address)), id_(std::move(id)) {
    if (pipe(interrupt_pipe) != 0) return;
    struct sigaction sa {};
    sa.sa_handler = OnInterrupt;
    sigaction(SIGINT, &sa, &old_);
    thread_ = std::thread([this] { Run(); });
  }
  ~InterruptToCancel() {
    sigaction(SIGINT, &old_, nullptr);
    if (thread_.joinable()) {
      const char b = 0;  // done
      (void)!write(interrupt_pipe[1], &b, 1);
      thread_.join();
    }
    close(interrupt_pipe[0]);
    close(interrupt_pipe[1]);
  }

 private:
  void Run() {
    char b;
    int interrupts = 0;
    while (read(interrupt_pipe[0], &b, 1) == 1 && b == 1) {
      if (++interrupts > 1) _exit(130);
      std::fprintf(stderr, "\nferry: interrupted: cancelling migration %s\n", id_.c_str());
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      ferry::v1::CancelMigrationRequest r;
      r.set_id(id_);
      ferry::v1::MigrationResource out;
      grpc::Status s = stub_->CancelMigration(&ctx, r, &out);
      if (s.ok()) continue;  // the watch ends with the cancelled migration
      std::fprintf(stderr,
                   "ferry: migration %s cannot be cancelled (%s); it continues on the agents: "
                   "follow it with `ferry migration watch %s --agent %s`\n",
                   id_.c_str(), s.error_message().c_str(), id_.c_str(), address_.c_str());
      _exit(130);
    }
  }

  ferry::v1::Control::Stub* stub_;
  const std::string address_, id_;
  struct sigaction old_ {};
  std::thread thread_;
};

} // namespace

absl::Status OutcomeStatus(const ferry::v1::MigrationResource& done) {
  if (done.phase() == ferry::v1::MIGRATION_PHASE_COMPLETED) return absl::OkStatus();
  // A destination the source could not reach is an unreachable agent
  // (exit 5); any other end is a failed operation (exit 1).
  const absl::StatusCode code =
      done.error_code() == static_cast<int>(absl::StatusCode::kUnavailable)
          ? absl::StatusCode::kUnavailable
          : absl::StatusCode::kAborted;
  return absl::Status(code, absl::StrCat("migration ", done.id(), " ", PhaseName(done.phase()),
                                         done.error().empty() ? "" : ": ", done.error()));
}

absl::Status MigrateCommand(Args& args) {
  if (args.positional().size() < 2)
    return absl::InvalidArgumentError(
        "ferry migrate needs a VM name (usage: ferry migrate NAME --from HOST:PORT --to "
        "HOST:PORT [flags]; ferry help migrate)");
  const std::string name = args.positional()[1];
  RETURN_IF_ERROR(api::ValidateVmName(name));
  const std::string from = args.String("from", "");
  const std::string to = args.String("to", "");
  if (from.empty() || to.empty())
    return absl::InvalidArgumentError(
        "ferry migrate needs --from (the source agent) and --to (the destination agent, "
        "as the source reaches it)");
  if (from == to)
    return absl::InvalidArgumentError(absl::StrCat(
        "--from and --to are the same agent (", from, "): a VM cannot migrate to where it is"));
  ferry::v1::StartMigrationRequest r;
  r.set_vm_name(name);
  r.set_destination(to);
  r.set_request_id(args.String("request-id", ""));
  // Values go to the agent as given; the agent applies the defaults of
  // fields left unset and validates every option (migration/options.cc).
  ASSIGN_OR_RETURN(ferry::v1::MigrationMode mode,
                   api::ParseMigrationMode(args.String("mode", api::kDefaultMode)));
  r.set_mode(mode);
  ASSIGN_OR_RETURN(ferry::v1::FaultMode fault_mode,
                   api::ParseFaultMode(args.String("fault-mode", api::kDefaultFaultMode)));
  r.set_fault_mode(fault_mode);
  RETURN_IF_ERROR(args.Alias("downtime-ms", "downtime-target-ms"));
  ASSIGN_OR_RETURN(int64_t downtime,
                   args.Int("downtime-target-ms", api::kDefaultDowntimeTargetMs));
  r.set_downtime_target_ms(downtime);
  ASSIGN_OR_RETURN(uint64_t bandwidth, args.Bytes("max-bandwidth", 0));
  r.set_max_bandwidth(bandwidth);
  ASSIGN_OR_RETURN(int64_t rounds, args.Int("max-rounds", api::kDefaultMaxRounds));
  if (rounds < 0 || rounds > UINT32_MAX)
    return absl::InvalidArgumentError("--max-rounds is not a number of rounds");
  r.set_max_rounds(static_cast<uint32_t>(rounds));
  ASSIGN_OR_RETURN(int64_t streams, args.Int("streams", 0));
  if (streams < 0 || streams > 8)
    return absl::InvalidArgumentError("--streams must be 1 to 8 (0: one per four cores)");
  r.set_streams(static_cast<uint32_t>(streams));
  ASSIGN_OR_RETURN(int64_t recovery, args.Int("recovery-timeout-ms", api::kDefaultRecoveryTimeoutMs));
  r.set_recovery_timeout_ms(recovery);
  const bool json = args.Bool("json");
  const bool detach = args.Bool("detach");
  ASSIGN_OR_RETURN(ConnectOptions co, ParseConnectOptions(args));
  RETURN_IF_ERROR(args.Finish(2, "ferry migrate NAME --from HOST:PORT --to HOST:PORT [flags]"));
  ASSIGN_OR_RETURN(auto stub, Connect(from, co));
  grpc::ClientContext ctx;
  ferry::v1::MigrationResource started;
  grpc::Status s = stub->StartMigration(&ctx, r, &started);
  if (!s.ok()) return CallError(s, "start the migration of " + name, from);
  if (detach) {
    // Started; the agents carry it out. The resource (JSON) or the id alone
    // on stdout, so that `ID=$(ferry migrate ... --detach)` captures it; a
    // person at a terminal also gets the sentence, on stderr.
    if (json) {
      std::printf("%s\n", MigrationJson(started).ToString().c_str());
    } else {
      std::printf("%s\n", started.id().c_str());
      if (isatty(STDERR_FILENO))
        std::fprintf(stderr,
                     "migration %s: %s from %s to %s started; follow it with `ferry migration "
                     "watch %s --agent %s`\n",
                     started.id().c_str(), name.c_str(), from.c_str(), to.c_str(),
                     started.id().c_str(), from.c_str());
    }
    return absl::OkStatus();
  }
  if (!json)
    std::printf("migration %s: %s from %s to %s (%s, fault mode %s)\n", started.id().c_str(),
                name.c_str(), from.c_str(), to.c_str(), api::Spelling(mode).c_str(),
                api::Spelling(fault_mode).c_str());
  InterruptToCancel interrupt(stub.get(), from, started.id());
  ASSIGN_OR_RETURN(ferry::v1::MigrationResource done, Follow(*stub, from, started.id(), json, stdout));
  return OutcomeStatus(done);
}

absl::Status MigrationCommand(Args& args) {
  const std::string address = args.String("agent", api::kDefaultAgentAddress);
  ASSIGN_OR_RETURN(ConnectOptions co, ParseConnectOptions(args));
  const bool json = args.Bool("json");
  if (args.positional().size() < 2)
    return absl::InvalidArgumentError(
        "usage: ferry migration list|get|watch|cancel|recover [ID] (see ferry help migration)");
  const std::string verb = args.positional()[1];
  if (verb == "list") {
    RETURN_IF_ERROR(args.Finish(2, "ferry migration list"));
    ASSIGN_OR_RETURN(auto stub, Connect(address, co));
    grpc::ClientContext ctx;
    ferry::v1::ListMigrationsResponse out;
    grpc::Status s = stub->ListMigrations(&ctx, {}, &out);
    if (!s.ok()) return CallError(s, "list migrations", address);
    if (json) {
      std::vector<JsonObject> all;
      for (const auto& m : out.migrations()) all.push_back(MigrationJson(m));
      JsonObject o;
      o.Add("migrations", all);
      std::printf("%s\n", o.ToString().c_str());
    } else {
      PrintMigrationTable({out.migrations().begin(), out.migrations().end()});
    }
    return absl::OkStatus();
  }
  if (verb != "get" && verb != "watch" && verb != "cancel" && verb != "recover")
    return absl::InvalidArgumentError(absl::StrFormat(
        "unknown migration command '%s' (list, get, watch, cancel, recover; see ferry help "
        "migration)",
        verb));
  if (args.positional().size() < 3)
    return absl::InvalidArgumentError(
        absl::StrFormat("ferry migration %s needs a migration ID (usage: ferry migration %s ID "
                        "--agent SOURCE)",
                        verb, verb));
  const std::string id = args.positional()[2];
  const std::string to = verb == "recover" ? args.String("to", "") : "";
  RETURN_IF_ERROR(args.Finish(
      3, absl::StrFormat("ferry migration %s ID --agent SOURCE", verb)));
  ASSIGN_OR_RETURN(auto stub, Connect(address, co));
  if (verb == "watch") {
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
  } else if (verb == "cancel") {
    ferry::v1::CancelMigrationRequest r;
    r.set_id(id);
    s = stub->CancelMigration(&ctx, r, &out);
  } else if (verb == "recover") {
    ferry::v1::RecoverMigrationRequest r;
    r.set_id(id);
    r.set_destination(to);
    s = stub->RecoverMigration(&ctx, r, &out);
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("unknown migration command '%s' (list, get, watch, cancel)", verb));
  }
  if (!s.ok()) return CallError(s, verb + " migration " + id, address);
  if (json) std::printf("%s\n", MigrationJson(out).ToString().c_str());
  else PrintMigrationTable({out});
  return absl::OkStatus();
}

}  // namespace ferry::cli
