#include "migration/cli/demo.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/clock.h"
#include "base/status_macros.h"
#include "migration/agent/agent_process.h"
#include "migration/agent/vmm_process.h"
#include "migration/api/names.h"
#include "migration/cli/client.h"
#include "migration/cli/commands.h"
#include "migration/report.h"

namespace ferry::cli {
namespace {

std::atomic<pid_t> agent_pids[2] = {-1, -1};

// Ctrl-C, SIGTERM, a closed terminal (SIGHUP) or SIGQUIT: stop both
// agents and their VM processes, then leave. (A SIGKILL of the demo leaves
// its VM processes running, as it would any ferryd's: docs/cli.md.)
void WatchSignals(const std::string& state_a, const std::string& state_b) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  std::thread([set, a = state_a, b = state_b] {
    int sig;
    sigwait(&set, &sig);
    for (auto& p : agent_pids)
      if (p.load() > 0) kill(p.load(), SIGKILL);
    agent::EndStateDir(a, absl::ZeroDuration());
    agent::EndStateDir(b, absl::ZeroDuration());
    std::fprintf(stderr, "\nferry demo: interrupted; both agents and their VMs stopped\n");
    _exit(130);
  }).detach();
}

// The guest's ops/s, measured once it runs at a steady rate: a fresh VM
// first touches its memory for the first time, a migrated one fetches, and
// either runs slower than it will. Rates over 500 ms windows until two in a
// row agree within 15% (at most `settle_limit`), then the ops counted over
// `window` (two seconds, so before, during and after compare like with
// like). `steady` says whether the rate settled.
struct GuestRate {
  double ops_per_sec = 0;
  bool steady = false;
};

absl::StatusOr<GuestRate> OpsPerSec(ferry::v1::Control::Stub& stub, const std::string& name,
                                    absl::Duration settle_limit = absl::Seconds(10),
                                    absl::Duration window = absl::Seconds(2)) {
  auto total_ops = [&]() -> absl::StatusOr<std::pair<uint64_t, int64_t>> {
    ferry::v1::VmStatsRequest r;
    r.set_name(name);
    ferry::v1::VmStatsResponse s;
    grpc::ClientContext ctx;
    grpc::Status st = stub.VmStats(&ctx, r, &s);
    if (!st.ok()) return CallError(st, "stats of " + name, "");
    uint64_t ops = 0;
    for (const auto& v : s.vcpus()) ops += v.ops();
    return std::make_pair(ops, MonotonicNowNanos());
  };
  auto rate = [](std::pair<uint64_t, int64_t> a, std::pair<uint64_t, int64_t> b) {
    return b.first >= a.first && b.second > a.second
               ? (b.first - a.first) / ((b.second - a.second) / 1e9)
               : 0.0;
  };
  GuestRate out;
  const absl::Time give_up = absl::Now() + settle_limit;
  ASSIGN_OR_RETURN(auto prev, total_ops());
  double last = -1;
  while (absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(500));
    ASSIGN_OR_RETURN(auto now, total_ops());
    const double r = rate(prev, now);
    prev = now;
    if (last > 0 && r > 0 && std::abs(r - last) <= 0.15 * std::max(r, last)) {
      out.steady = true;
      break;
    }
    last = r;
  }
  ASSIGN_OR_RETURN(auto a, total_ops());
  absl::SleepFor(window);
  ASSIGN_OR_RETURN(auto b, total_ops());
  out.ops_per_sec = rate(a, b);
  return out;
}

std::string RateText(const GuestRate& r) {
  return absl::StrFormat("%.2fM%s", r.ops_per_sec / 1e6,
                         r.steady ? "" : " (not yet steady after 10 s)");
}

}  // namespace

absl::Status RunDemo(const DemoOptions& o, FILE* out) {
  auto say = [&](const std::string& line) {
    if (!o.json) std::fprintf(out, "%s\n", line.c_str()), std::fflush(out);
  };
  // Agents first, before this process has any threads.
  char dir_template[] = "/tmp/ferry-demo-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) return absl::InternalError("cannot create a directory for agent logs");
  const std::string ferryd = agent::FindFerryd();
  // As ferryd runs by default: each VM in a ferry-vmm process of its own,
  // recorded in the agent's state directory (one per agent: two on a host).
  // Ended (their VM processes with them) when the demo ends, however it
  // ends.
  agent::ScopedStateDir state_a(std::string(dir) + "/state-a", absl::Seconds(3));
  agent::ScopedStateDir state_b(std::string(dir) + "/state-b", absl::Seconds(3));
  ASSIGN_OR_RETURN(agent::AgentProcess a,
                   agent::AgentProcess::Start(ferryd, {"--state-dir", state_a.path()},
                                              std::string(dir) + "/agent-a.log"));
  agent_pids[0] = a.pid();
  ASSIGN_OR_RETURN(agent::AgentProcess b,
                   agent::AgentProcess::Start(ferryd, {"--state-dir", state_b.path()},
                                              std::string(dir) + "/agent-b.log"));
  agent_pids[1] = b.pid();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  WatchSignals(state_a.path(), state_b.path());
  say(absl::StrFormat(
      "ferry demo: agent A on %s, agent B on %s, each VM in a ferry-vmm process of its own "
      "(logs in %s)",
      a.address(), b.address(), dir));

  ConnectOptions co;
  ASSIGN_OR_RETURN(auto stub_a, Connect(a.address(), co));
  ASSIGN_OR_RETURN(auto stub_b, Connect(b.address(), co));
  const std::string name = "demo-vm";
  ferry::v1::CreateVmRequest create = o.vm;
  create.set_name(name);
  {
    grpc::ClientContext ctx;
    ferry::v1::Vm vm;
    grpc::Status s = stub_a->CreateVm(&ctx, create, &vm);
    if (!s.ok()) return CallError(s, "create " + name, a.address());
  }
  say(absl::StrFormat("created %s on A: %d MiB, %d vCPUs, workload %s (%.0f%% zero pages)",
                      name, o.vm.memory_bytes() >> 20, o.vm.vcpus(),
                      api::Spelling(o.vm.workload().kind()), 100 * o.vm.workload().zero_fraction()));
  say("letting the guest reach its steady rate before migrating it");
  ASSIGN_OR_RETURN(GuestRate before, OpsPerSec(*stub_a, name));

  ferry::v1::StartMigrationRequest start = o.migration;
  start.set_vm_name(name);
  start.set_destination(b.address());
  start.set_request_id("ferry-demo");
  ferry::v1::MigrationResource m;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub_a->StartMigration(&ctx, start, &m);
    if (!s.ok()) return CallError(s, "start the migration", a.address());
  }
  say(absl::StrFormat("migrating %s from A to B: %s, mode %s, fault mode %s, downtime target %d ms",
                      name, m.id(), api::Spelling(start.mode()),
                      api::Spelling(start.fault_mode()), start.downtime_target_ms()));
  // Live progress, then the report; in JSON mode only the final object below.
  FILE* devnull = fopen("/dev/null", "w");
  auto followed = Follow(*stub_a, a.address(), m.id(), o.json, o.json ? devnull : out);
  fclose(devnull);
  if (!followed.ok()) return followed.status();
  const ferry::v1::MigrationResource& done = *followed;
  if (done.phase() != ferry::v1::MIGRATION_PHASE_COMPLETED) {
    return absl::AbortedError(absl::StrCat("the migration ", PhaseName(done.phase()), ": ",
                                           done.error()));
  }
  ASSIGN_OR_RETURN(GuestRate after, OpsPerSec(*stub_b, name));
  ferry::v1::VerifyVmRequest verify;
  verify.set_name(name);
  ferry::v1::VerifyVmResponse v;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub_b->VerifyVm(&ctx, verify, &v);
    if (!s.ok()) return CallError(s, "verify " + name, b.address());
  }
  migration::MigrationReport report = migration::ReportOf(done);
  report.set_digest_match(v.match());
  double during = 0;
  int n = 0;
  for (int i = 0; i < report.timeline_ops_per_sec_size() && i < report.timeline_phase_size(); ++i)
    if (report.timeline_phase(i) != "setup") during += report.timeline_ops_per_sec(i), ++n;
  during = n ? during / n : 0;
  if (o.json) {
    JsonObject j = migration::ReportJson(report);
    j.Add("guest_ops_per_sec_before", before.ops_per_sec)
        .Add("guest_steady_before", before.steady)
        .Add("guest_ops_per_sec_during", during)
        .Add("guest_ops_per_sec_after", after.ops_per_sec)
        .Add("guest_steady_after", after.steady);
    std::fprintf(out, "%s\n", j.ToString().c_str());
  } else {
    say(absl::StrFormat("  guest ops/s, each at a steady rate: before %s, during %.2fM, after %s",
                        RateText(before), during / 1e6, RateText(after)));
    say(absl::StrFormat("verified on B: memory digest %s, replay of the same guest operations "
                        "on a VM that never moved %s: %s",
                        v.digest(), v.reference_digest(), v.match() ? "MATCH" : "MISMATCH"));
  }
  {
    // Its process ends with it (A's, its VM gone, within a moment).
    grpc::ClientContext ctx;
    ferry::v1::DeleteVmRequest d;
    d.set_name(name);
    ferry::v1::DeleteVmResponse out;
    (void)stub_b->DeleteVm(&ctx, d, &out);
  }
  a.Stop();
  b.Stop();
  agent_pids[0] = agent_pids[1] = -1;
  if (!v.match())
    return absl::DataLossError("the destination's memory differs from the reference run");
  return absl::OkStatus();
}

}  // namespace ferry::cli
