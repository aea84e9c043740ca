#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/grpc_status.h"
#include "base/json.h"
#include "base/status_macros.h"
#include "base/units.h"
#include "migration/api/defaults.h"
#include "migration/api/names.h"
#include "migration/cli/commands.h"
#include "migration/cli/json_output.h"
#include "migration/report.h"

namespace ferry::cli {

std::string PhaseName(ferry::v1::MigrationPhase p) { return api::Spelling(p); }

bool Terminal(ferry::v1::MigrationPhase p) {
  return p == ferry::v1::MIGRATION_PHASE_COMPLETED || p == ferry::v1::MIGRATION_PHASE_FAILED ||
         p == ferry::v1::MIGRATION_PHASE_CANCELLED;
}

bool GotNowhere(const ferry::v1::MigrationResource& m) {
  const auto& r = m.report();
  return m.phase() != ferry::v1::MIGRATION_PHASE_COMPLETED && r.bytes_sent() == 0 &&
         r.pages_sent() == 0 && r.zero_pages() == 0;
}

namespace {

constexpr absl::Duration kWatchReconnectFor = absl::Seconds(60);

// The terminal's width in columns (80 when it does not say).
size_t TerminalWidth(FILE* out) {
  winsize ws{};
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace

std::string ProgressLine(const ferry::v1::MigrationResource& m) {
  const auto& p = m.progress();
  // Percent and ETA of the whole migration (the agent's estimate), not of
  // the round.
  std::string line = absl::StrFormat("%6.2fs  %-10s", p.elapsed_ms() / 1e3, PhaseName(m.phase()));
  if (m.phase() == ferry::v1::MIGRATION_PHASE_PRECOPY)
    absl::StrAppendFormat(&line, " round %-3d", p.round());
  else
    line += "          ";
  absl::StrAppendFormat(&line, " %5.1f%%  %11s", p.percent(),
                        FormatRate(p.bandwidth_bytes_per_sec()));
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
    if (p.throttle_percent() > 0)
      absl::StrAppendFormat(&line, "  throttle %d%%", p.throttle_percent());
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
  r.set_interval_ms(tty && !json ? 100 : 250);
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
      if (json) {
        // NDJSON: a progress object per message while it runs; the final
        // object (below) is the one `migration get --json` prints.
        if (!Terminal(m.phase())) std::fprintf(out, "%s\n", MigrationJson(m).ToString().c_str());
        continue;
      }
      if (Terminal(m.phase())) continue;  // the report below says how it ended
      if (tty) {
        // One live line, cut to the terminal's width (a line that wrapped
        // would leave a new line behind at every update).
        std::string line = ProgressLine(m);
        const size_t width = TerminalWidth(out);
        if (line.size() >= width) line.resize(width - 1);
        std::fprintf(out, "\r\033[K%s", line.c_str());
        std::fflush(out);
      } else if (m.phase() != printed_phase || m.progress().elapsed_ms() - last_plain_ms >= 1000) {
        // A line at each phase change and every second.
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
  if (tty && !json) std::fprintf(out, "\r\033[K");  // the live line gives way to the report
  if (!s.ok() && !(any && Terminal(last.phase())))
    return CallError(s, "watch migration " + id, address);
  if (!any || !Terminal(last.phase()))
    return absl::UnavailableError(
        absl::StrCat("lost the migration's progress stream from ", address, " before it ended"));
  if (json) {
    std::fprintf(out, "%s\n", MigrationJson(last).ToString().c_str());
  } else if (!GotNowhere(last)) {
    // A migration refused or failed before it sent anything has no report
    // worth reading: the caller prints its reason (OutcomeStatus).
    std::fprintf(out, "%s", migration::ReportText(migration::ReportOf(last)).c_str());
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

}  // namespace

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

namespace {

// `ferry migrate ... --check`: prints every check (a line each, or one JSON
// object) and fails (exit 1) when any failed.
absl::Status RunChecks(ferry::v1::Control::Stub& stub, const ferry::v1::StartMigrationRequest& r,
                       const std::string& from, bool json) {
  grpc::ClientContext ctx;
  ferry::v1::CheckMigrationResponse out;
  grpc::Status s = stub.CheckMigration(&ctx, r, &out);
  if (!s.ok()) return CallError(s, "check the migration of " + r.vm_name(), from);
  int failed = 0;
  std::vector<JsonObject> checks;
  if (!json)
    std::printf("checking a migration of %s from %s to %s\n", r.vm_name().c_str(), from.c_str(),
                r.destination().c_str());
  for (const ferry::v1::CheckItem& c : out.checks()) {
    if (!c.ok()) ++failed;
    if (json) {
      checks.push_back(
          JsonObject().Add("name", c.name()).Add("ok", c.ok()).Add("detail", c.detail()));
    } else {
      std::printf("  %-4s  %-20s %s\n", c.ok() ? "ok" : "FAIL", c.name().c_str(),
                  c.detail().c_str());
    }
  }
  if (json) {
    std::printf("%s\n", JsonObject().Add("ok", out.ok()).Add("checks", checks).ToString().c_str());
  } else {
    std::printf("%d passed, %d failed%s\n", out.checks_size() - failed, failed,
                out.ok() ? ": nothing was started" : "");
  }
  std::fflush(stdout);
  if (out.ok() && failed == 0) return absl::OkStatus();
  return absl::AbortedError(
      absl::StrFormat("%d of %d checks failed: the migration of %s would not start or would fail",
                      std::max(failed, 1), out.checks_size(), r.vm_name()));
}

}  // namespace

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
    return absl::InvalidArgumentError(absl::StrCat("--from and --to are the same agent (", from,
                                                   "): a VM cannot migrate to where it is"));
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
  ASSIGN_OR_RETURN(int64_t downtime, args.Int("downtime-target-ms", api::kDefaultDowntimeTargetMs));
  r.set_downtime_target_ms(downtime);
  ASSIGN_OR_RETURN(uint64_t bandwidth, args.Rate("max-bandwidth", 0));
  r.set_max_bandwidth(bandwidth);
  ASSIGN_OR_RETURN(int64_t rounds, args.Int("max-rounds", api::kDefaultMaxRounds));
  if (rounds < 0 || rounds > UINT32_MAX)
    return absl::InvalidArgumentError("--max-rounds is not a number of rounds");
  r.set_max_rounds(static_cast<uint32_t>(rounds));
  ASSIGN_OR_RETURN(int64_t streams, args.Int("streams", 0));
  if (streams < 0 || streams > 8)
    return absl::InvalidArgumentError("--streams must be 1 to 8 (0: one per four cores)");
  r.set_streams(static_cast<uint32_t>(streams));
  ASSIGN_OR_RETURN(int64_t recovery,
                   args.Int("recovery-timeout-ms", api::kDefaultRecoveryTimeoutMs));
  r.set_recovery_timeout_ms(recovery);
  r.set_auto_converge(args.Bool("auto-converge"));
  ASSIGN_OR_RETURN(int64_t initial, args.Int("throttle-initial", api::kDefaultThrottleInitial));
  ASSIGN_OR_RETURN(int64_t step, args.Int("throttle-step", api::kDefaultThrottleStep));
  ASSIGN_OR_RETURN(int64_t max, args.Int("throttle-max", api::kDefaultThrottleMax));
  for (const auto& [flag, value] :
       {std::pair<const char*, int64_t>{"initial", initial}, {"step", step}, {"max", max}}) {
    if (value < 1 || value > 99)
      return absl::InvalidArgumentError(
          absl::StrCat("--throttle-", flag, " ", value,
                       ": a throttle is 1 to 99 (percent of each vCPU's "
                       "time it sleeps)"));
  }
  if (initial > max)
    return absl::InvalidArgumentError(
        absl::StrCat("--throttle-initial ", initial, " is above --throttle-max ", max));
  if (!r.auto_converge() &&
      (args.Has("throttle-initial") || args.Has("throttle-step") || args.Has("throttle-max")))
    return absl::InvalidArgumentError(
        "--throttle-initial, --throttle-step and --throttle-max tune auto-converge: give "
        "--auto-converge too");
  r.set_throttle_initial(static_cast<uint32_t>(initial));
  r.set_throttle_step(static_cast<uint32_t>(step));
  r.set_throttle_max(static_cast<uint32_t>(max));
  const bool json = args.Bool("json");
  const bool detach = args.Bool("detach");
  const bool check = args.Bool("check");
  ASSIGN_OR_RETURN(ConnectOptions co, ParseConnectOptions(args));
  RETURN_IF_ERROR(args.Finish(2, "ferry migrate NAME --from HOST:PORT --to HOST:PORT [flags]"));
  ASSIGN_OR_RETURN(auto stub, Connect(from, co));
  if (check) return RunChecks(*stub, r, from, json);
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
  ASSIGN_OR_RETURN(ferry::v1::MigrationResource done,
                   Follow(*stub, from, started.id(), json, stdout));
  return OutcomeStatus(done);
}

}  // namespace ferry::cli
