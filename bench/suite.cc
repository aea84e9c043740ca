#include "bench/suite.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "base/status_macros.h"
#include "bench/demand_paging.h"
#include "bench/migrate.h"
#include "bench/output.h"
#include "bench/plot.h"
#include "bench/reference.h"
#include "bench/stats.h"

namespace ferry::bench {
namespace {

struct Plan {
  // reference
  uint64_t tcp_bytes;
  int rtt_samples;
  int64_t baseline_ms;
  // demand-paging
  std::vector<int64_t> dp_vcpus;
  uint64_t dp_memory_per_vcpu;
  int dp_repeat;
  // migrate
  std::vector<uint64_t> memories;
  std::vector<std::string> workloads;
  std::vector<std::string> modes;
  std::vector<std::string> fault_modes;
  std::vector<uint64_t> caps;  // 0: none
  std::vector<uint64_t> dirty_rates;
  int repeat;
  // switchover
  std::vector<int> sw_vcpus;
  uint64_t sw_memory;
};

Plan Quick() {
  return {256ull << 20,
          5000,
          2000,
          {1, 2, 4},
          16ull << 20,
          3,
          {256ull << 20},
          {"zipf", "hotset", "dirty-rate"},
          {"precopy", "postcopy", "hybrid"},
          {"exit"},
          {0},
          {16ull << 20},
          2,
          {1, 2, 4},
          256ull << 20};
}

Plan Tiny() {
  return {16ull << 20, 200, 200, {1, 4}, 1ull << 20, 2,
          {32ull << 20}, {"zipf"}, {"postcopy"}, {"exit"},
          {0}, {16ull << 20}, 2, {1}, 32ull << 20};
}

Plan Full() {
  return {1ull << 30,
          20000,
          3000,
          {1, 2, 4, 8, 16},
          64ull << 20,
          5,
          {1ull << 30},
          {"idle", "zipf", "hotset", "dirty-rate"},
          {"precopy", "postcopy", "hybrid"},
          {"exit", "blocking"},
          {0},
          {16ull << 20},
          3,
          {1, 2, 4, 8},
          1ull << 30};
}

constexpr int64_t kCdfVcpus = 4;  // the fault-latency CDF's vCPU count
int run_number = 0;
void Progress(const std::string& line) {
  std::fprintf(stderr, "[%3d] %s\n", ++run_number, line.c_str());
}

void AddSummary(Row& row, const std::string& key, const std::vector<double>& v) {
  Summary s = Summarize(v);
  row.Add(key + "_median", s.median)
      .Add(key + "_min", s.min)
      .Add(key + "_p25", s.p25)
      .Add(key + "_p75", s.p75)
      .Add(key + "_max", s.max);
}

// The guest's ops/s without migration: a VM of the migrate scenario's shape
// running alone, counted over a window of baseline_ms (two seconds or more
// except in the harness's own tiny plan) after a one-second warm-up (a fresh
// VM first faults in its zero pages).
absl::StatusOr<double> Baseline(const Plan& p, const std::string& workload) {
  vmm::VmConfig c;
  c.memory_bytes = p.memories.front();
  c.vcpus = 2;
  ASSIGN_OR_RETURN(c.workload.kind, vmm::ParseWorkloadKind(workload));
  c.workload.zero_fraction = 0.5;
  c.workload.dirty_bytes_per_sec = p.dirty_rates.front();
  ASSIGN_OR_RETURN(auto vm, vmm::Vm::Create(c));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  RETURN_IF_ERROR(vm->Start());
  std::this_thread::sleep_for(std::chrono::milliseconds(p.baseline_ms >= 2000 ? 1000 : 200));
  const uint64_t ops0 = vm->Stats().total_ops;
  const int64_t t0 = MonotonicNowNanos();
  std::this_thread::sleep_for(std::chrono::milliseconds(p.baseline_ms));
  const double rate = (vm->Stats().total_ops - ops0) / ((MonotonicNowNanos() - t0) / 1e9);
  vm->Stop();
  return rate;
}

// What the figures were measured on, from /proc and uname:
// {"2 CPUs (AMD EPYC)", "24 GiB, Linux 6.18.44"}.
std::pair<std::string, std::string> Machine() {
  std::string model, line;
  uint64_t mem_kib = 0;
  {
    std::ifstream cpuinfo("/proc/cpuinfo");
    while (model.empty() && std::getline(cpuinfo, line))
      if (absl::StartsWith(line, "model name") && line.find(':') != std::string::npos)
        model = std::string(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
  }
  {
    std::ifstream meminfo("/proc/meminfo");
    while (std::getline(meminfo, line))
      if (absl::StartsWith(line, "MemTotal:")) {
        mem_kib = std::strtoull(line.c_str() + 9, nullptr, 10);
        break;
      }
  }
  struct utsname u {};
  uname(&u);
  return {absl::StrFormat("%d CPUs%s", sysconf(_SC_NPROCESSORS_ONLN),
                          model.empty() ? "" : absl::StrCat(" (", model, ")")),
          absl::StrFormat("%.0f GiB, %s %s", mem_kib / 1048576.0, u.sysname, u.release)};
}

// The command without its --out DIR (where the files went says nothing
// about the figures), for the plots' captions.
std::string WithoutOut(const std::string& command) {
  std::vector<std::string> words = absl::StrSplit(command, ' ', absl::SkipEmpty());
  std::vector<std::string> kept;
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i] == "--out") {
      ++i;
      continue;
    }
    if (absl::StartsWith(words[i], "--out=")) continue;
    kept.push_back(words[i]);
  }
  return absl::StrJoin(kept, " ");
}

}  // namespace

absl::Status RunSuite(const SuiteOptions& options) {
  Plan p = options.size == SuiteOptions::Size::kFull    ? Full()
           : options.size == SuiteOptions::Size::kTiny ? Tiny()
                                                       : Quick();
  if (!options.memories.empty()) p.memories = options.memories;
  if (!options.dirty_rates.empty()) p.dirty_rates = options.dirty_rates;
  if (!options.caps.empty()) p.caps = options.caps;
  ASSIGN_OR_RETURN(auto sink, ResultSink::Open(options.out));
  const std::string dir = options.out;
  const int64_t t_start = MonotonicNowNanos();
  const std::string started = absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(), absl::UTCTimeZone());
  const auto [cpus, host] = Machine();
  // Every plot names its run: command, date, machine (short lines: the
  // caption sits under the key).
  const std::string caption =
      absl::StrCat(WithoutOut(options.command), "\n", started, "\n", cpus, "\n", host);
  {
    std::ofstream run(dir + "/run.txt");
    run << "command: " << options.command << "\nstarted: " << started << "\nmachine: " << cpus
        << ", " << host << "\n";
  }

  // Reference.
  ASSIGN_OR_RETURN(ReferenceResult ref, RunReference(p.tcp_bytes, p.rtt_samples));
  Row ref_row;
  ref_row.Add("tcp_gbps", ref.tcp_gbps).Add("tcp_into_memory_gbps", ref.tcp_into_memory_gbps)
      .Add("rtt_p50_us", ref.rtt_p50_us).Add("rtt_p99_us", ref.rtt_p99_us)
      .Add("rtt_p999_us", ref.rtt_p999_us).Add("rtt_busy_p50_us", ref.rtt_busy_p50_us)
      .Add("rtt_busy_p99_us", ref.rtt_busy_p99_us);
  std::map<std::string, double> baseline;
  for (const std::string& w : p.workloads) {
    ASSIGN_OR_RETURN(baseline[w], Baseline(p, w));
    ref_row.Add("baseline_ops_per_sec_" + w, baseline[w]);
  }
  RETURN_IF_ERROR(sink->Write("reference", ref_row));
  Progress(absl::StrFormat(
      "reference: tcp %.1f Gbit/s (into memory %.1f), rtt p50 %.1f us p99 %.1f us (busy %.1f / "
      "%.1f)",
      ref.tcp_gbps, ref.tcp_into_memory_gbps, ref.rtt_p50_us, ref.rtt_p99_us,
      ref.rtt_busy_p50_us, ref.rtt_busy_p99_us));

  // Demand paging.
  DemandPagingOptions dp;
  dp.memory_per_vcpu = p.dp_memory_per_vcpu;
  dp.repeat = 1;  // repeated here, to keep every run's figures
  int64_t max_vcpus = *std::max_element(p.dp_vcpus.begin(), p.dp_vcpus.end());
  WarmHostMemory(2 * dp.memory_per_vcpu * max_vcpus);
  std::map<std::string, Series> rate_series;
  std::map<std::string, HistogramSnapshot> cdf_hist;  // "exit, remote" at 1 vCPU
  for (const std::string& source : {std::string("local"), std::string("remote")})
    for (int64_t vcpus : p.dp_vcpus)
      for (vmm::FaultMode mode : {vmm::FaultMode::kExit, vmm::FaultMode::kBlocking}) {
        std::vector<DemandPagingResult> runs;
        std::vector<double> rates;
        for (int i = 0; i < p.dp_repeat; ++i) {
          ASSIGN_OR_RETURN(DemandPagingResult r,
                           RunDemandPaging(dp, static_cast<int>(vcpus), mode, source));
          Progress(absl::StrFormat("demand-paging %s %lld vCPUs %s run %d: %.0f pages/s, p50 %.1f us",
                                   source, vcpus, vmm::FaultModeName(mode), i + 1,
                                   r.pages_per_sec, r.fault_p50_us));
          rates.push_back(r.pages_per_sec);
          runs.push_back(r);
        }
        const DemandPagingResult& med = runs[MedianIndex(rates)];
        Row row;
        row.Add("source", source).Add("vcpus", static_cast<int>(vcpus))
            .Add("fault_mode", vmm::FaultModeName(mode)).Add("pages", med.pages)
            .Add("runs", static_cast<int>(runs.size()));
        AddSummary(row, "pages_per_sec", rates);
        row.Add("fault_p50_us", med.fault_p50_us).Add("fault_p99_us", med.fault_p99_us)
            .Add("fault_p999_us", med.fault_p999_us);
        RETURN_IF_ERROR(sink->Write("demand_paging", row));
        const std::string key = absl::StrCat(vmm::FaultModeName(mode), ", ", source);
        rate_series[key].title = key;
        rate_series[key].points.push_back({static_cast<double>(vcpus), Summarize(rates).median});
        if (vcpus == kCdfVcpus) cdf_hist[key] = med.latency;
      }

  // Migrate.
  std::vector<Series> ops_series;
  std::vector<Series> mgu_series;  // minimum guest utilization curves
  std::vector<VLine> switchovers;  // in the colour of their mode's series
  StackedBars bytes;
  bytes.name = "bytes_by_phase";
  bytes.title = "bytes on the wire by phase (median run)";
  bytes.ylabel = "MiB";
  bytes.parts = {"precopy", "stop-and-copy", "postcopy push", "demand"};
  for (uint64_t memory : p.memories)
  for (const std::string& workload : p.workloads)
    for (uint64_t dirty_rate : p.dirty_rates)
    for (const std::string& mode : p.modes)
      for (const std::string& fault_mode : p.fault_modes)
        for (uint64_t cap : p.caps) {
          if (fault_mode == "blocking" && mode == "precopy") continue;  // no faults
          if (dirty_rate != p.dirty_rates.front() && workload != "dirty-rate") continue;
          if (cap != 0 && (fault_mode != "exit" || workload == "idle")) continue;
          MigrateOptions mo;
          mo.vm.memory_bytes = memory;
          mo.vm.vcpus = 2;
          ASSIGN_OR_RETURN(mo.vm.workload.kind, vmm::ParseWorkloadKind(workload));
          mo.vm.workload.zero_fraction = 0.5;
          mo.vm.workload.dirty_bytes_per_sec = dirty_rate;
          ASSIGN_OR_RETURN(mo.migration.mode, migration::ParseMigrationMode(mode));
          ASSIGN_OR_RETURN(mo.migration.fault_mode, vmm::ParseFaultMode(fault_mode));
          mo.migration.max_bandwidth = cap;
          WarmHostMemory(3 * memory);
          std::vector<migration::MigrationReport> runs;
          std::vector<double> total, downtime, gbps, below_half, mgu10, mgu100, mgu1s, blocktime;
          int completed = 0, verified = 0;
          for (int i = 0; i < p.repeat; ++i) {
            ASSIGN_OR_RETURN(migration::MigrationReport r, RunMigrate(mo));
            Progress(absl::StrFormat(
                "migrate %dM %s %s %s%s run %d: %s, total %.0f ms, downtime %.2f ms, digest %s",
                memory >> 20, workload, mode, fault_mode,
                cap ? absl::StrCat(" cap ", cap >> 20, "M/s") : "", i + 1,
                r.outcome() == "completed" ? "completed" : "failed", r.total_ms(), r.downtime_ms(),
                r.digest_match() ? "match" : "-"));
            completed += r.outcome() == "completed";
            verified += r.digest_match();
            total.push_back(r.total_ms());
            downtime.push_back(r.downtime_ms());
            gbps.push_back(r.precopy_gbps());
            blocktime.push_back(r.blocktime_ms());
            if (r.impact_measured()) {
              below_half.push_back(r.below_half_ms());
              mgu10.push_back(r.mgu_10ms());
              mgu100.push_back(r.mgu_100ms());
              mgu1s.push_back(r.mgu_1s());
            }
            runs.push_back(r);
          }
          const migration::MigrationReport& med = runs[MedianIndex(total)];
          Row row;
          row.Add("memory_bytes", memory).Add("workload", workload)
              .Add("dirty_rate", dirty_rate).Add("mode", mode).Add("fault_mode", fault_mode)
              .Add("max_bandwidth", cap).Add("runs", static_cast<int>(runs.size()))
              .Add("completed", completed).Add("digest_match", verified);
          AddSummary(row, "total_ms", total);
          AddSummary(row, "downtime_ms", downtime);
          AddSummary(row, "precopy_gbps", gbps);
          // Guest impact (docs/benchmarks.md): over the runs that measured it.
          AddSummary(row, "blocktime_ms", blocktime);
          // The same columns in every row (CSV): empty where not measured.
          if (!below_half.empty()) {
            AddSummary(row, "below_half_ms", below_half);
            AddSummary(row, "mgu_10ms", mgu10);
            AddSummary(row, "mgu_100ms", mgu100);
            AddSummary(row, "mgu_1s", mgu1s);
            row.Add("precopy_below_half_ms", med.precopy_below_half_ms())
                .Add("precopy_mgu_100ms", med.precopy_mgu_100ms())
                .Add("baseline_below_half_ms", med.baseline_below_half_ms())
                .Add("baseline_mgu_10ms", med.baseline_mgu_10ms())
                .Add("baseline_mgu_100ms", med.baseline_mgu_100ms())
                .Add("impact_note", std::string());
          } else {
            for (const char* k : {"below_half_ms", "mgu_10ms", "mgu_100ms", "mgu_1s"})
              for (const char* q : {"_median", "_min", "_p25", "_p75", "_max"})
                row.Add(absl::StrCat(k, q), std::string());
            for (const char* k : {"precopy_below_half_ms", "precopy_mgu_100ms",
                                  "baseline_below_half_ms", "baseline_mgu_10ms",
                                  "baseline_mgu_100ms"})
              row.Add(k, std::string());
            row.Add("impact_note", med.impact_note());
          }
          row.Add("precopy_rounds", static_cast<int>(med.precopy_rounds()))
              .Add("faults", med.faults())
              .Add("fault_p50_us", med.fault_p50_us())
              .Add("fault_p99_us", med.fault_p99_us())
              .Add("max_vcpu_stall_ms", med.max_vcpu_stall_ms())
              .Add("bytes_precopy", med.bytes_precopy())
              .Add("bytes_stop_and_copy", med.bytes_stop_and_copy())
              .Add("bytes_push", med.bytes_push())
              .Add("bytes_demand", med.bytes_demand())
              .Add("outcome", med.outcome());
          RETURN_IF_ERROR(sink->Write("migrate", row));
          const std::string label = absl::StrCat(
              p.memories.size() > 1 ? absl::StrCat(memory >> 20, "M ") : "", workload, " ", mode,
                                                 fault_mode == "exit" ? "" : " blocking",
                                                 cap ? absl::StrCat(" cap ", cap >> 20, "M") : "");
          bytes.bars.push_back(
              {label,
               {med.bytes_precopy() / 1048576.0, med.bytes_stop_and_copy() / 1048576.0,
                med.bytes_push() / 1048576.0, med.bytes_demand() / 1048576.0}});
          if (workload == "zipf" && fault_mode == "exit" && cap == 0) {
            Series s;
            s.title = mode;
            bool marked = false;
            const int samples = std::min({med.timeline_t_ms_size(), med.timeline_ops_per_sec_size(),
                                          med.timeline_phase_size()});
            for (int k = 0; k < samples; ++k) {
              const double t_ms = med.timeline_t_ms(k), ops = med.timeline_ops_per_sec(k);
              const std::string& phase = med.timeline_phase(k);
              s.points.push_back({t_ms, ops / 1e6});
              // The band: the lowest and highest rate any repetition had
              // in the same 100 ms sample.
              double lo = ops, hi = ops;
              for (const auto& run : runs) {
                if (k >= run.timeline_ops_per_sec_size()) continue;
                lo = std::min(lo, run.timeline_ops_per_sec(k));
                hi = std::max(hi, run.timeline_ops_per_sec(k));
              }
              s.band.push_back({lo / 1e6, hi / 1e6});
              if (!marked &&
                  (phase == "switchover" || phase == "postcopy" || phase == "completed")) {
                switchovers.push_back(
                    {t_ms, mode + " switchover", static_cast<int>(ops_series.size())});
                marked = true;
              }
            }
            ops_series.push_back(s);
            if (med.impact_measured()) {
              Series m{mode, {}, {}};
              for (int k = 0; k < med.mgu_curve_size() && k < med.mgu_curve_window_ms_size(); ++k)
                m.points.push_back({med.mgu_curve_window_ms(k), med.mgu_curve(k)});
              mgu_series.push_back(m);
            }
          }
        }

  // Switchover downtime by vCPU count (postcopy).
  Series downtime_series{"postcopy downtime (median)", {}};
  for (int vcpus : p.sw_vcpus) {
    MigrateOptions mo;
    mo.vm.memory_bytes = p.sw_memory;
    mo.vm.vcpus = vcpus;
    mo.vm.workload.kind = vmm::WorkloadKind::kZipf;
    mo.migration.mode = migration::MigrationMode::kPostcopy;
    std::vector<double> downtime;
    int verified = 0;
    for (int i = 0; i < p.repeat; ++i) {
      ASSIGN_OR_RETURN(migration::MigrationReport r, RunMigrate(mo));
      Progress(absl::StrFormat("switchover %d vCPUs run %d: downtime %.2f ms, digest %s", vcpus,
                               i + 1, r.downtime_ms(), r.digest_match() ? "match" : "-"));
      downtime.push_back(r.downtime_ms());
      verified += r.digest_match();
    }
    Row row;
    row.Add("vcpus", vcpus).Add("memory_bytes", p.sw_memory)
        .Add("runs", static_cast<int>(downtime.size())).Add("digest_match", verified);
    AddSummary(row, "downtime_ms", downtime);
    RETURN_IF_ERROR(sink->Write("switchover", row));
    downtime_series.points.push_back({static_cast<double>(vcpus), Summarize(downtime).median});
  }

  // Plots.
  LinePlot ops{"ops_timeline", "guest ops/s through the migration (zipf, median runs)",
               "time since the migration started (ms)", "guest Mops/s"};
  ops.series = ops_series;
  if (baseline.count("zipf") && !ops_series.empty()) {
    double end = 0;
    for (const auto& s : ops_series)
      if (!s.points.empty()) end = std::max(end, s.points.back().first);
    ops.series.push_back({"without migration", {{0, baseline["zipf"] / 1e6},
                                                {end, baseline["zipf"] / 1e6}}});
  }
  ops.vlines = switchovers;
  ops.y_from_zero = true;
  ops.caption = caption;
  RETURN_IF_ERROR(Render(ops, dir));
  LinePlot mgu{"mgu_curve",
               "minimum guest utilization by window length (zipf, median runs)",
               "window (ms)", "lowest fraction of pre-migration ops/s in any window"};
  mgu.logx = true;
  mgu.y_from_zero = true;
  mgu.caption = caption;
  mgu.series = mgu_series;
  RETURN_IF_ERROR(Render(mgu, dir));
  LinePlot cdf{"fault_cdf", absl::StrCat("fault latency CDF, demand paging with ", kCdfVcpus, " vCPUs"),
               "fault latency (us)", "fraction of faults"};
  cdf.logx = true;
  cdf.caption = caption;
  for (auto& [key, h] : cdf_hist) {
    Series s{key, {}};
    for (double q = 0.5; q <= 99.95; q += q < 90 ? 2.5 : 0.5)
      s.points.push_back({h.Percentile(q) / 1e3, q / 100});
    cdf.series.push_back(s);
  }
  RETURN_IF_ERROR(Render(cdf, dir));
  LinePlot rate{"demand_paging_rate", "demand-paging rate by vCPU count", "vCPUs",
                "pages per second"};
  rate.logy = true;
  rate.logx = true;  // vCPU counts 1, 2, 4, ...: a log2 axis, ticks at the counts
  rate.discrete_x = true;
  rate.caption = caption;
  for (auto& [key, s] : rate_series) rate.series.push_back(s);
  RETURN_IF_ERROR(Render(rate, dir));
  bytes.caption = caption;
  RETURN_IF_ERROR(Render(bytes, dir));
  LinePlot sw{"switchover_downtime", "postcopy switchover downtime by vCPU count", "vCPUs",
              "downtime (ms)"};
  sw.series = {downtime_series};
  sw.logx = true;
  sw.discrete_x = true;
  sw.y_from_zero = true;
  sw.caption = caption;
  RETURN_IF_ERROR(Render(sw, dir));
  const double wall_s = (MonotonicNowNanos() - t_start) / 1e9;
  {
    std::ofstream run(dir + "/run.txt", std::ios::app);
    run << absl::StrFormat("wall_s: %.0f\n", wall_s);
  }
  std::fprintf(stderr, "suite done in %.0f s: %s/results.jsonl, %s/*.csv, %s/*.png, %s/run.txt\n",
               wall_s, dir.c_str(), dir.c_str(), dir.c_str(), dir.c_str());
  return absl::OkStatus();
}

}  // namespace ferry::bench
