#include "migration/cli/demo.h"

#include <thread>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/status_macros.h"
#include "migration/loopback.h"
#include "migration/source_session.h"

namespace ferry::cli {
namespace {

std::string ProgressLine(const migration::SourceProgress& p) {
  const double pct = p.pages_total ? 100.0 * p.pages_transferred / p.pages_total : 0;
  std::string line = absl::StrFormat("  %6.2fs  %-10s", p.elapsed_ms / 1e3,
                                     migration::SourcePhaseName(p.phase));
  if (p.phase == migration::SourcePhase::kPrecopy)
    absl::StrAppendFormat(&line, " round %-3d", p.round);
  else
    line += "          ";
  absl::StrAppendFormat(&line, " %5.1f%%  %6.2f Gbit/s", pct, p.bandwidth_bps * 8 / 1e9);
  if (p.phase == migration::SourcePhase::kPrecopy) {
    absl::StrAppendFormat(&line, "  dirty %7.0f pages/s", p.dirty_pages_per_sec);
    if (p.bandwidth_bps > 0)
      absl::StrAppendFormat(&line, "  ETA %.1fs",
                            p.pages_remaining * 4096.0 / p.bandwidth_bps);
  } else if (p.phase == migration::SourcePhase::kPostcopy) {
    absl::StrAppendFormat(&line, "  missing %7d  faults %6d (%5.0f/s)", p.pages_remaining,
                          p.faults, p.faults_per_sec);
  }
  return line;
}

// Mean guest ops/s over the timeline samples of the given phases.
double MeanOps(const migration::MigrationReport& r, std::initializer_list<const char*> phases) {
  double sum = 0;
  int n = 0;
  for (const auto& s : r.ops_timeline)
    for (const char* p : phases)
      if (s.phase == p) sum += s.ops_per_sec, ++n;
  return n ? sum / n : 0;
}

}  // namespace

absl::Status RunDemo(const DemoOptions& options, FILE* out) {
  auto say = [&](const std::string& line) {
    if (!options.json) std::fprintf(out, "%s\n", line.c_str()), std::fflush(out);
  };
  const vmm::VmConfig& c = options.vm;
  ASSIGN_OR_RETURN(auto lb, migration::Loopback::Start());
  say(absl::StrFormat(
      "ferry demo: two agents on loopback (destination gRPC 127.0.0.1:%d, source fetch "
      "channel 127.0.0.1:%d)",
      lb->destination_port(), lb->page_server().port()));
  say(absl::StrFormat("source: VM with %d MiB, %d vCPUs, workload %s (%.0f%% zero pages)",
                      c.memory_bytes >> 20, c.vcpus, vmm::WorkloadKindName(c.workload.kind),
                      100 * c.workload.zero_fraction));
  ASSIGN_OR_RETURN(auto source, vmm::Vm::Create(c));
  RETURN_IF_ERROR(source->LoadInitialMemory());
  RETURN_IF_ERROR(source->Start());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const uint64_t ops_before = source->Stats().total_ops;
  const double ops_before_rate = ops_before / 0.5;

  say(absl::StrFormat("migrating: mode %s, fault mode %s, downtime target %d ms",
                      migration::MigrationModeName(options.migration.mode),
                      vmm::FaultModeName(options.migration.fault_mode),
                      options.migration.downtime_target_ms));
  migration::SourceSession session(source.get(), lb->MakeSourceConfig(options.migration));
  absl::Status result;
  std::thread runner([&] { result = session.Run(); });
  while (true) {
    migration::SourceProgress p = session.Progress();
    const bool ended = p.phase == migration::SourcePhase::kCompleted ||
                       p.phase == migration::SourcePhase::kFailed ||
                       p.phase == migration::SourcePhase::kCancelled;
    if (ended) break;
    say(ProgressLine(p));
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  runner.join();
  migration::MigrationReport report = session.report();
  if (!result.ok()) {
    say(report.ToText());
    return result;
  }

  // The guest keeps running on the destination; then pause and verify.
  std::unique_ptr<vmm::Vm> moved = lb->TakeMigrated(session.migration_id());
  if (moved == nullptr) return absl::InternalError("the destination kept no VM");
  const uint64_t ops_at_arrival = moved->Stats().total_ops;
  const int64_t t0 = MonotonicNowNanos();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  RETURN_IF_ERROR(moved->Pause());
  const double ops_after_rate =
      (moved->Stats().total_ops - ops_at_arrival) / ((MonotonicNowNanos() - t0) / 1e9);
  std::vector<uint64_t> ops;
  for (const vmm::VcpuStats& v : moved->Stats().vcpus) ops.push_back(v.counters.ops);
  say("verifying: the destination's memory against a replay of the same guest "
      "operations on a VM that never moved");
  ASSIGN_OR_RETURN(vmm::MemoryDigest got, moved->Digest());
  moved.reset();
  source.reset();
  ASSIGN_OR_RETURN(vmm::MemoryDigest want, vmm::ReferenceDigest(c, ops));
  report.digest_match = got.digest == want.digest;

  if (options.json) {
    JsonObject o = report.ToJson();
    o.Add("guest_ops_per_sec_before", ops_before_rate)
        .Add("guest_ops_per_sec_during",
             MeanOps(report, {"precopy", "switchover", "postcopy"}))
        .Add("guest_ops_per_sec_after", ops_after_rate);
    std::fprintf(out, "%s\n", o.ToString().c_str());
  } else {
    say("report:");
    std::fprintf(out, "%s", report.ToText().c_str());
    say(absl::StrFormat("  guest ops/s: before %.2fM, during %.2fM, after %.2fM",
                        ops_before_rate / 1e6,
                        MeanOps(report, {"precopy", "switchover", "postcopy"}) / 1e6,
                        ops_after_rate / 1e6));
  }
  if (!*report.digest_match)
    return absl::DataLossError("the destination's memory differs from the reference run");
  return absl::OkStatus();
}

}  // namespace ferry::cli
