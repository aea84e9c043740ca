#include "bench/processes.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "bench/migrate.h"
#include "bench/stats.h"

namespace ferry::bench {

namespace {

struct Samples {
  std::vector<double> create_ms, precopy_gbps, precopy_total_ms, postcopy_total_ms, fault_p50_us,
      fault_p99_us;
  bool digests_match = true;
};

// The layouts, in the order of the rows.
struct Layout {
  const char* name;
  bool vmm_processes;
  bool own_sessions;
};
constexpr Layout kLayouts[] = {
    {"in-ferryd/1-session", false, false},
    {"in-ferryd", false, true},
    {"vmm-process", true, true},
};
constexpr int kNumLayouts = sizeof(kLayouts) / sizeof(kLayouts[0]);

absl::StatusOr<MigrateRun> RunOne(const ProcessesOptions& o, const Layout& layout, bool postcopy) {
  MigrateOptions m;
  m.vm.memory_bytes = o.memory_bytes;
  m.vm.vcpus = 2;
  m.vm.workload.kind = postcopy ? vmm::WorkloadKind::kUniform : vmm::WorkloadKind::kIdle;
  m.migration.mode =
      postcopy ? migration::MigrationMode::kPostcopy : migration::MigrationMode::kPrecopy;
  m.vmm_processes = layout.vmm_processes;
  m.own_sessions = layout.own_sessions;
  ASSIGN_OR_RETURN(MigrateRun run, RunMigrateTimed(m));
  if (run.report.outcome() != "completed")
    return absl::AbortedError(absl::StrCat(postcopy ? "postcopy" : "precopy", " migration (",
                                           layout.name,
                                           ") did not complete: ", run.report.outcome()));
  return run;
}

}  // namespace

absl::StatusOr<std::vector<ProcessesRow>> RunProcesses(const ProcessesOptions& o) {
  Samples s[kNumLayouts];
  for (int i = 0; i < o.repeat; ++i) {
    // Rotate which layout goes first, so a drift of the machine's speed
    // over the run does not favour one.
    for (int k = 0; k < kNumLayouts; ++k) {
      const int layout = (i + k) % kNumLayouts;
      ASSIGN_OR_RETURN(MigrateRun pre, RunOne(o, kLayouts[layout], /*postcopy=*/false));
      ASSIGN_OR_RETURN(MigrateRun post, RunOne(o, kLayouts[layout], /*postcopy=*/true));
      Samples& x = s[layout];
      x.create_ms.push_back(pre.create_ms);
      x.create_ms.push_back(post.create_ms);
      x.precopy_gbps.push_back(pre.report.precopy_gbps());
      x.precopy_total_ms.push_back(pre.report.total_ms());
      x.postcopy_total_ms.push_back(post.report.total_ms());
      x.fault_p50_us.push_back(post.report.fault_p50_us());
      x.fault_p99_us.push_back(post.report.fault_p99_us());
      x.digests_match &= pre.report.digest_match() && post.report.digest_match();
    }
  }
  std::vector<ProcessesRow> rows;
  for (int layout = 0; layout < kNumLayouts; ++layout) {
    const Samples& x = s[layout];
    ProcessesRow r;
    r.layout = kLayouts[layout].name;
    r.runs = o.repeat;
    r.create_ms = Summarize(x.create_ms).median;
    r.precopy_gbps = Summarize(x.precopy_gbps).median;
    r.precopy_total_ms = Summarize(x.precopy_total_ms).median;
    r.postcopy_total_ms = Summarize(x.postcopy_total_ms).median;
    r.fault_p50_us = Summarize(x.fault_p50_us).median;
    r.fault_p99_us = Summarize(x.fault_p99_us).median;
    r.digests_match = x.digests_match;
    rows.push_back(r);
  }
  return rows;
}

}  // namespace ferry::bench
