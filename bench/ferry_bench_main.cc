// ferry-bench: Ferry's benchmark harness. See docs/benchmarks.md.
//
//   ferry-bench demand-paging [--vcpus 1,2,4,8,16] [--fault-modes exit,blocking]
//                             [--memory-per-vcpu 64M] [--blocking-handlers 1]
//                             [--repeat 3] [--sources local,remote,remote-sealed]
//                             [--backend soft|kvm] [--json]
//   ferry-bench digest [--memory 1G] [--repeat 3]
//   ferry-bench compare OLD_DIR NEW_DIR [--repeat 4] [--json] [-- SCENARIO FLAGS...]...
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/args.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/man_page.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "base/units.h"
#include "base/version.h"
#include "bench/compare_run.h"
#include "bench/demand_paging.h"
#include "bench/kvm_dirty_log.h"
#include "bench/memory_change.h"
#include "bench/migrate.h"
#include "bench/processes.h"
#include "bench/reference.h"
#include "bench/restore.h"
#include "bench/suite.h"
#include "migration/api/defaults.h"
#include "sys/kvm.h"
#include "vmm/vm.h"

namespace ferry::bench {
namespace {

constexpr char kUsage[] = R"(ferry-bench: Ferry's benchmark harness

usage: ferry-bench SCENARIO [flags]

`ferry-bench help SCENARIO` (or SCENARIO --help) prints one scenario's flags;
`ferry-bench help --man` this help as the man page ferry-bench(1).

scenarios:
  kvm-dirty-log   KVM's dirty bitmap against its dirty rings on a running KVM
                  guest: Collect() time, pages per Collect(), guest ops/s with
                  and without tracking (needs /dev/kvm)
      --memory SIZE --vcpus N --workload KIND --rounds N --repeat N
  demand-paging   vCPUs fault in all of their memory from a local page source,
                  per fault mode (the analog of the kernel's demand_paging_test)
      --vcpus LIST             vCPU counts (default 1,2,4,8,16)
      --fault-modes LIST       exit,blocking (default both)
      --memory-per-vcpu SIZE   memory each vCPU touches (default 64M)
      --blocking-handlers N    userfaultfd handler threads in blocking mode (default 1)
      --repeat N               runs per point; the median is reported (default 3)
      --sources LIST           page sources: local (in-memory), remote (a page
                               server over the fetch channel), remote-sealed (the
                               same, replies encrypted as between TLS agents)
                               (default local)
      --backend soft|kvm       vCPUs: software (default) or real KVM running the
                               guest image (needs /dev/kvm; exit mode needs
                               Ferry's KVM patch, else blocking runs and says so)
      --json                   one JSON object per line instead of a table
  reference       the link itself: one plain TCP stream (tcp_gbps), the same
                  into a fresh memfd (tcp_into_memory_gbps), and a blocking
                  16-byte request / 4 KiB reply ping-pong, quiet (rtt_p50_us,
                  rtt_p99_us) and with every core busy (rtt_busy_p50_us,
                  rtt_busy_p99_us)
      --tcp-bytes SIZE         bytes for the TCP stream (default 1G)
      --rtt-samples N          ping-pongs (default 20000)
  migrate         one migration between two ferryd agents on loopback (two
                  processes, driven through the control API); prints the report
      --memory SIZE            guest memory (default 1G)
      --vcpus N                vCPUs (default 2)
      --workload KIND          idle, sequential, uniform, zipf, dirty-rate, hotset (default zipf)
      --ops N                  ops per vCPU, 0 = until stopped (default 0)
      --dirty-rate RATE        dirty-rate workload: bytes/s, e.g. 16M (MiB/s) (default 16M)
      --zero-fraction F        pages that start as zero pages (default 0)
      --mode MODE              precopy, postcopy, hybrid (default hybrid)
      --fault-mode MODE        exit or blocking (default exit)
      --downtime-target-ms N   downtime target (default 50; --downtime-ms is the old spelling)
      --max-bandwidth RATE     cap: 1Gbit/s, 125MB/s, 1G (GiB/s) (default none)
      --max-rounds N           precopy rounds (default 30)
      --streams N              streams carrying precopy pages and the postcopy
                               push (default: one per four cores, 1 to 4)
      --json                   the report as one JSON object
  suite           every scenario's matrix, repeated: JSON lines and CSV with the
                  median and spread of each point, PNG plots (each captioned
                  with the command, date and machine) and run.txt (the same,
                  and the wall time), in --out DIR
      --quick                  under two minutes on 2 quiet cores (the default)
      --full                   the figures of docs/benchmarks.md
      --tiny                   seconds: the harness's own test
      --memory LIST            migrate: guest memory sizes (e.g. 256M,1G)
      --dirty-rates LIST       migrate: dirty-rate workload rates (e.g. 8M,64M)
      --caps LIST              migrate: bandwidth caps (e.g. none,1G)
      --out DIR                where the results go (default bench-results)
  digest          time the whole-memory digest of a populated guest
      --memory SIZE            guest memory (default 1G)
      --repeat N               runs; the median is reported (default 3)
  processes       VMs inside ferryd against one ferry-vmm process per VM
                  (ferryd --state-dir), alternating in the same run: VM
                  creation time, precopy throughput and total time (idle
                  guest), postcopy total time and fault latency (uniform
                  guest); medians, every destination checked by digest
      --memory SIZE            guest memory (default 1G)
      --repeat N               migrations of each kind per layout (default 3)
      --json                   one JSON object per layout
  restore         snapshots and restores of one guest side by side: time to
                  the first instruction and to every page present, eager
                  against lazy (warm and cold file), guest impact against
                  the guest's speed before the snapshot, fault latency
                  against the page cache's 4 KiB io_uring random read, the
                  cold file's read rate, live snapshot rounds and pause, and
                  clones of one snapshot; every restored guest checked by
                  digest (docs/snapshots.md)
      --memory LIST            guest memory sizes (default 1G)
      --vcpus N                vCPUs (default 2)
      --workloads LIST         guest workloads (default idle,zipf,hotset)
      --fault-mode MODE        exit or blocking (default exit)
      --clones N               lazy restores of the zipf snapshot at once (default 8; 0: none)
      --observe-ms N           how long each restored guest is watched (default 3000)
      --dir DIR                where snapshots are written (default $TMPDIR or /var/tmp)
      --json                   one JSON object per row
  memory-change   what memory map transactions cost a running guest: vCPU
                  time held off (p50, p99) and the remapping part, per kind
                  of change (a region added above everything and removed,
                  ram grown and shrunk, the top region grown and shrunk, a
                  region added below another and removed), against a plain
                  pause+resume of the same VM; on KVM the memslots kept,
                  resized in place and recreated, the stage-2 coverage
                  dropped and the stage-2 faults taken after each change
                  (debugfs), with slots resized in place and deleted and
                  created side by side where the kernel has Ferry's patch;
                  the guest's ops/s with and without changes; the digest
                  against the epoch replay
      --backend B              soft or kvm (default soft)
      --memory SIZE            guest memory (default 256M)
      --repeat N               changes of each kind (default 50)
      --json                   one JSON object per row
  compare         the same scenarios on two builds, alternating which goes first,
                  and per figure the old and new median, new/old, and the spread
                  (min..max) of the per-repetition ratios:
                    ferry-bench compare OLD_DIR NEW_DIR [flags] [-- SCENARIO FLAGS...]...
                  Each DIR holds ferry-bench, ferryd and ferry-vmm (./dev
                  bench-snapshot DIR). Each run is DIR/ferry-bench SCENARIO FLAGS
                  --json with that build's ferryd and ferry-vmm. Without a
                  scenario (about 3 minutes on 2 cores): reference --tcp-bytes
                  256M --rtt-samples 5000 (the control: the same code in both),
                  migrate of an idle 512M guest in precopy and of a uniform 256M
                  guest in postcopy. A figure is WORSE (better) when every
                  repetition's ratio lies on the bad (good) side of 1.0, beyond
                  the tolerance: higher is better for *_gbps, *_per_sec and
                  mgu_*, lower for *_ms, *_us and seconds; other figures get no
                  verdict. Exit status 0 whatever the figures say, 1 when a run
                  fails
      --repeat N               repetitions per build (default 4; even: each
                               build goes first equally often)
      --tolerance F            a spread must clear 1.0 by more than F to be
                               marked (default 0.02)
      --json                   one JSON object per figure instead of tables
      --fail-on-regression     exit status 1 also when a figure is WORSE
)";

// The digest of `--memory` of populated guest memory (random pages, a
// quarter zero pages left as holes), timed: docs/benchmarks.md.
absl::Status Digest(Args& args) {
  ASSIGN_OR_RETURN(uint64_t memory, args.Bytes("memory", 1ull << 30));
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", 3));
  args.Bool("json");  // the only output format
  RETURN_IF_ERROR(args.Finish());
  vmm::VmConfig config;
  config.memory_bytes = memory;
  config.vcpus = 1;
  config.workload.zero_fraction = 0.25;
  ASSIGN_OR_RETURN(auto vm, vmm::Vm::Create(config));
  RETURN_IF_ERROR(vm->LoadInitialMemory());
  std::vector<double> seconds;
  uint64_t digest = 0;
  for (int64_t i = 0; i < std::max<int64_t>(1, repeat); ++i) {
    int64_t t0 = MonotonicNowNanos();
    ASSIGN_OR_RETURN(vmm::MemoryDigest d, vm->Digest());
    seconds.push_back((MonotonicNowNanos() - t0) / 1e9);
    digest = d.digest;
  }
  std::sort(seconds.begin(), seconds.end());
  double median = seconds[seconds.size() / 2];
  JsonObject o;
  o.Add("scenario", "digest")
      .Add("memory_bytes", memory)
      .Add("seconds", median)
      .Add("gbytes_per_sec", memory / median / 1e9)
      .Add("runs", static_cast<int64_t>(seconds.size()))
      .Add("digest", absl::StrFormat("%016x", digest));
  std::printf("%s\n", o.ToString().c_str());
  return absl::OkStatus();
}

absl::Status DemandPaging(Args& args) {
  DemandPagingOptions options;
  ASSIGN_OR_RETURN(options.vcpus, args.IntList("vcpus", options.vcpus));
  ASSIGN_OR_RETURN(options.memory_per_vcpu,
                   args.Bytes("memory-per-vcpu", options.memory_per_vcpu));
  ASSIGN_OR_RETURN(int64_t handlers, args.Int("blocking-handlers", 1));
  options.blocking_handlers = static_cast<int>(handlers);
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", options.repeat));
  options.repeat = static_cast<int>(repeat);
  options.modes.clear();
  for (const std::string& m : args.List("fault-modes", {"exit", "blocking"})) {
    ASSIGN_OR_RETURN(vmm::FaultMode mode, vmm::ParseFaultMode(m));
    options.modes.push_back(mode);
  }
  options.sources = args.List("sources", {"local"});
  ASSIGN_OR_RETURN(options.backend, vmm::ParseVmBackend(args.String("backend", "soft")));
  const bool json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  if (options.memory_per_vcpu < 4096 || options.memory_per_vcpu % 4096 != 0)
    return absl::InvalidArgumentError("--memory-per-vcpu must be a multiple of 4K");

  int64_t max_vcpus = 0;
  for (int64_t v : options.vcpus) max_vcpus = std::max(max_vcpus, v);
  // The page-source image and the VM: twice the largest run's memory.
  WarmHostMemory(2 * options.memory_per_vcpu * max_vcpus);
  if (!json)
    std::printf("%-6s %-9s %-14s %9s %13s %9s %9s %9s\n", "vcpus", "mode", "source", "pages",
                "pages/s", "p50 us", "p99 us", "p999 us");
  // The sources of one point run one after the other, under the same
  // conditions: compare them row by row.
  for (int64_t vcpus : options.vcpus) {
    for (vmm::FaultMode mode : options.modes) {
      for (const std::string& source : options.sources) {
        ASSIGN_OR_RETURN(DemandPagingResult r,
                         RunDemandPagingPoint(options, static_cast<int>(vcpus), mode, source));
        if (json) {
          std::printf("%s\n", r.ToJson(options).ToString().c_str());
        } else {
          std::printf("%-6d %-9s %-14s %9llu %13.0f %9.1f %9.1f %9.1f%s\n", r.vcpus,
                      vmm::FaultModeName(r.mode), source.c_str(),
                      static_cast<unsigned long long>(r.pages), r.pages_per_sec, r.fault_p50_us,
                      r.fault_p99_us, r.fault_p999_us,
                      r.mode != r.asked ? "  (exit asked: this kernel has no KVM userfault)" : "");
        }
        std::fflush(stdout);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Reference(Args& args) {
  ASSIGN_OR_RETURN(uint64_t bytes, args.Bytes("tcp-bytes", 1ull << 30));
  ASSIGN_OR_RETURN(int64_t samples, args.Int("rtt-samples", 20000));
  args.Bool("json");  // the only output format
  RETURN_IF_ERROR(args.Finish());
  ASSIGN_OR_RETURN(ReferenceResult r, RunReference(bytes, static_cast<int>(samples)));
  std::printf("%s\n", r.ToJson().ToString().c_str());
  return absl::OkStatus();
}

absl::Status Processes(Args& args) {
  ProcessesOptions o;
  ASSIGN_OR_RETURN(o.memory_bytes, args.Bytes("memory", 1ull << 30));
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", 3));
  if (repeat < 1 || repeat > 100) return absl::InvalidArgumentError("--repeat must be 1 to 100");
  o.repeat = static_cast<int>(repeat);
  const bool json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  WarmHostMemory(3 * o.memory_bytes);
  ASSIGN_OR_RETURN(std::vector<ProcessesRow> rows, RunProcesses(o));
  if (!json)
    std::printf("%-19s %5s %10s %13s %13s %14s %9s %9s %6s\n", "layout", "runs", "create_ms",
                "precopy_gbps", "precopy_ms", "postcopy_ms", "fault_p50", "fault_p99", "digest");
  for (const ProcessesRow& r : rows) {
    if (json) {
      JsonObject j;
      j.Add("scenario", "processes")
          .Add("layout", r.layout)
          .Add("memory_bytes", o.memory_bytes)
          .Add("runs", static_cast<int64_t>(r.runs))
          .Add("create_ms", r.create_ms)
          .Add("precopy_gbps", r.precopy_gbps)
          .Add("precopy_total_ms", r.precopy_total_ms)
          .Add("postcopy_total_ms", r.postcopy_total_ms)
          .Add("fault_p50_us", r.fault_p50_us)
          .Add("fault_p99_us", r.fault_p99_us)
          .Add("digests_match", r.digests_match);
      std::printf("%s\n", j.ToString().c_str());
    } else {
      std::printf("%-19s %5d %10.1f %13.2f %13.0f %14.0f %7.0fus %7.0fus %6s\n", r.layout.c_str(),
                  r.runs, r.create_ms, r.precopy_gbps, r.precopy_total_ms, r.postcopy_total_ms,
                  r.fault_p50_us, r.fault_p99_us, r.digests_match ? "match" : "DIFFER");
    }
  }
  for (const ProcessesRow& r : rows)
    if (!r.digests_match)
      return absl::DataLossError("a destination's memory differs from its reference run");
  return absl::OkStatus();
}

absl::Status RestoreScenario(Args& args) {
  RestoreBenchOptions o;
  o.memory_bytes.clear();
  for (const std::string& m : args.List("memory", {"1G"})) {
    ASSIGN_OR_RETURN(uint64_t bytes, ParseSize(m, "--memory"));
    o.memory_bytes.push_back(bytes);
  }
  ASSIGN_OR_RETURN(int64_t vcpus, args.Int("vcpus", 2));
  o.vcpus = static_cast<int>(vcpus);
  o.workloads.clear();
  for (const std::string& w : args.List("workloads", {"idle", "zipf", "hotset"})) {
    ASSIGN_OR_RETURN(vmm::WorkloadKind kind, vmm::ParseWorkloadKind(w));
    o.workloads.push_back(kind);
  }
  ASSIGN_OR_RETURN(o.fault_mode, vmm::ParseFaultMode(args.String("fault-mode", "exit")));
  ASSIGN_OR_RETURN(int64_t clones, args.Int("clones", 8));
  if (clones < 0 || clones > 64) return absl::InvalidArgumentError("--clones must be 0 to 64");
  o.clones = static_cast<int>(clones);
  ASSIGN_OR_RETURN(int64_t observe_ms, args.Int("observe-ms", 3000));
  if (observe_ms < 100) return absl::InvalidArgumentError("--observe-ms must be at least 100");
  o.observe = absl::Milliseconds(observe_ms);
  o.dir = args.String("dir", "");
  const bool json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  for (uint64_t m : o.memory_bytes) {
    vmm::VmConfig c;
    c.memory_bytes = m;
    c.vcpus = o.vcpus;
    RETURN_IF_ERROR(vmm::ValidateVmConfig(c));
  }
  ASSIGN_OR_RETURN(RestoreBenchResult r, RunRestoreBench(o));
  const RestoreReference& ref = r.reference;
  if (json) {
    JsonObject j;
    j.Add("scenario", "restore-reference")
        .Add("page_cache_read_p50_us", ref.page_cache_read_p50_us)
        .Add("page_cache_read_p99_us", ref.page_cache_read_p99_us)
        .Add("cold_read_gbps", ref.cold_read_gbps);
    std::printf("%s\n", j.ToString().c_str());
  } else {
    std::printf(
        "reference: page cache 4 KiB random read (io_uring) p50 %.1f us, p99 %.1f us; "
        "cold file read %.2f Gbit/s\n\n",
        ref.page_cache_read_p50_us, ref.page_cache_read_p99_us, ref.cold_read_gbps);
    std::printf("%-8s %6s %9s %10s %13s %11s %6s\n", "workload", "memory", "data_MB", "write_ms",
                "live_write_ms", "live_pause", "rounds");
  }
  for (const SnapshotRow& s : r.snapshots) {
    if (json) {
      JsonObject j;
      j.Add("scenario", "snapshot")
          .Add("workload", s.workload)
          .Add("memory_bytes", s.memory_bytes)
          .Add("data_bytes", s.data_bytes)
          .Add("write_ms", s.write_ms)
          .Add("live_write_ms", s.live_write_ms)
          .Add("live_paused_ms", s.live_paused_ms)
          .Add("live_rounds", static_cast<int64_t>(s.live_rounds));
      std::printf("%s\n", j.ToString().c_str());
    } else {
      std::printf("%-8s %5dM %9.0f %10.0f %13.0f %9.1fms %6d\n", s.workload.c_str(),
                  static_cast<int>(s.memory_bytes >> 20), s.data_bytes / 1e6, s.write_ms,
                  s.live_write_ms, s.live_paused_ms, s.live_rounds);
    }
  }
  if (!json)
    std::printf("\n%-8s %6s %-9s %9s %10s %9s %10s %6s %6s %7s %9s %9s %6s\n", "workload", "memory",
                "restore", "first_ms", "full_ms", "limit_ms", "below_half", "mgu100", "mgu1s",
                "faults", "fault_p50", "fault_p99", "digest");
  bool all_match = true;
  for (const RestoreRow& x : r.restores) {
    all_match &= x.digest_match;
    if (json) {
      JsonObject j;
      j.Add("scenario", "restore")
          .Add("workload", x.workload)
          .Add("memory_bytes", x.memory_bytes)
          .Add("restore", x.how)
          .Add("first_instruction_ms", x.first_instruction_ms)
          .Add("full_speed_ms", x.full_speed_ms)
          .Add("data_bytes", x.data_bytes)
          .Add("limit_ms", x.limit_ms)
          .Add("below_half_ms", x.below_half_ms)
          .Add("mgu_100ms", x.mgu_100ms)
          .Add("mgu_1s", x.mgu_1s)
          .Add("faults", x.faults)
          .Add("fault_p50_us", x.fault_p50_us)
          .Add("fault_p99_us", x.fault_p99_us)
          .Add("background_pages", x.background_pages)
          .Add("digest_match", x.digest_match);
      std::printf("%s\n", j.ToString().c_str());
    } else {
      std::printf("%-8s %5dM %-9s %9.1f %10.1f %9.1f %10.0f %6.2f %6.2f %7lu %7.1fus %7.1fus %6s\n",
                  x.workload.c_str(), static_cast<int>(x.memory_bytes >> 20), x.how.c_str(),
                  x.first_instruction_ms, x.full_speed_ms, x.limit_ms, x.below_half_ms, x.mgu_100ms,
                  x.mgu_1s, static_cast<unsigned long>(x.faults), x.fault_p50_us, x.fault_p99_us,
                  x.digest_match ? "match" : "DIFFER");
    }
  }
  const ClonesRow& c = r.clones;
  if (c.clones > 0) {
    all_match &= c.digests_match;
    if (json) {
      JsonObject j;
      j.Add("scenario", "restore-clones")
          .Add("clones", static_cast<int64_t>(c.clones))
          .Add("memory_bytes", c.memory_bytes)
          .Add("start_ms_median", c.start_ms_median)
          .Add("start_ms_max", c.start_ms_max)
          .Add("all_filled_ms", c.all_filled_ms)
          .Add("shared_page_cache_bytes", c.shared_page_cache_bytes)
          .Add("guest_bytes_per_clone", c.guest_bytes_per_clone)
          .Add("digests_match", c.digests_match);
      std::printf("%s\n", j.ToString().c_str());
    } else {
      std::printf(
          "\nclones: %d lazy restores of the zipf %dM snapshot: start median %.1f ms, "
          "max %.1f ms; all filled after %.0f ms; page cache shared %.0f MB (the "
          "file, once); guest memory per clone %.0f MB; digests %s\n",
          c.clones, static_cast<int>(c.memory_bytes >> 20), c.start_ms_median, c.start_ms_max,
          c.all_filled_ms, c.shared_page_cache_bytes / 1e6, c.guest_bytes_per_clone / 1e6,
          c.digests_match ? "match" : "DIFFER");
    }
  }
  if (!all_match) return absl::DataLossError("a restored guest's memory differs from its replay");
  return absl::OkStatus();
}

// One run of the memory-change bench, printed; `way` names how resized
// slots were handled ("" where there is one way only).
absl::Status PrintMemoryChange(const MemoryChangeOptions& o, const std::string& way, bool json);

absl::Status MemoryChangeScenario(Args& args) {
  MemoryChangeOptions o;
  ASSIGN_OR_RETURN(o.backend, vmm::ParseVmBackend(args.String("backend", "soft")));
  ASSIGN_OR_RETURN(o.memory_bytes, ParseSize(args.String("memory", "256M"), "--memory"));
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", 50));
  if (repeat < 1 || repeat > 10000)
    return absl::InvalidArgumentError("--repeat must be 1 to 10000");
  o.repeats = static_cast<int>(repeat);
  const bool json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  if (o.memory_bytes % (8ull << 20) != 0)
    return absl::InvalidArgumentError("--memory must be a multiple of 8 MiB");
  // On a kernel with Ferry's in-place memslot resize, both ways side by
  // side in this run: resized in place, and deleted and created as on a
  // stock kernel.
  std::vector<std::pair<std::string, bool>> ways = {{"", true}};
  if (o.backend == vmm::VmBackend::kKvm) {
    absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();
    if (kvm.ok() && kvm->caps().memslot_resize)
      ways = {{"in place", true}, {"delete+create", false}};
    else if (!json)
      std::printf(
          "this KVM cannot resize a memslot in place (no Ferry KVM patch): resized "
          "slots are deleted and created\n");
  }
  for (const auto& [way, in_place] : ways) {
    o.resize_in_place = in_place;
    RETURN_IF_ERROR(PrintMemoryChange(o, way, json));
  }
  return absl::OkStatus();
}

absl::Status PrintMemoryChange(const MemoryChangeOptions& o, const std::string& way, bool json) {
  ASSIGN_OR_RETURN(MemoryChangeResult r, RunMemoryChangeBench(o));
  if (!json)
    std::printf(
        "%s VM%s, %d MiB + a %d MiB region; guest %.0f ops/s quiet, %.0f ops/s while "
        "changing\n\n%-18s %5s %12s %12s %10s %6s %8s %10s %10s %13s\n",
        r.backend.c_str(), way.empty() ? "" : absl::StrCat(", slots resized ", way).c_str(),
        static_cast<int>(o.memory_bytes >> 20), static_cast<int>(o.memory_bytes >> 22),
        r.ops_per_sec_quiet, r.ops_per_sec_changing, "change", "n", "held_p50_ms", "held_p99_ms",
        "apply_p50", "kept", "resized", "recreated", "stage2_MB", "faults_after");
  for (const MemoryChangeRow& x : r.rows) {
    if (json) {
      JsonObject j;
      j.Add("scenario", "memory-change")
          .Add("backend", r.backend)
          .Add("change", x.change)
          .Add("n", static_cast<int64_t>(x.n))
          .Add("held_off_p50_ms", x.held_off_p50_ms)
          .Add("held_off_p99_ms", x.held_off_p99_ms)
          .Add("apply_p50_ms", x.apply_p50_ms)
          .Add("slots_kept", x.slots_kept)
          .Add("slots_recreated", x.slots_recreated)
          .Add("slots_resized", x.slots_resized)
          .Add("resize", way.empty() ? "n/a" : way)
          .Add("stage2_mb_dropped", x.stage2_mb_dropped)
          .Add("stage2_faults_after", x.stage2_faults_after)
          .Add("ops_per_sec_quiet", r.ops_per_sec_quiet)
          .Add("ops_per_sec_changing", r.ops_per_sec_changing)
          .Add("digest_match", r.digest_match);
      std::printf("%s\n", j.ToString().c_str());
    } else {
      std::printf("%-18s %5d %12.3f %12.3f %10.3f %6.1f %8.1f %10.1f %10.1f %13.0f\n",
                  x.change.c_str(), x.n, x.held_off_p50_ms, x.held_off_p99_ms, x.apply_p50_ms,
                  x.slots_kept, x.slots_resized, x.slots_recreated, x.stage2_mb_dropped,
                  x.stage2_faults_after);
    }
  }
  if (!json)
    std::printf("\ndigest against the epoch replay: %s\n\n", r.digest_match ? "match" : "DIFFER");
  if (!r.digest_match) return absl::DataLossError("the guest's memory differs from its replay");
  return absl::OkStatus();
}

absl::Status Migrate(Args& args) {
  MigrateOptions o;
  ASSIGN_OR_RETURN(o.vm.memory_bytes, args.Bytes("memory", api::kDefaultMemoryBytes));
  ASSIGN_OR_RETURN(int64_t vcpus, args.Int("vcpus", api::kDefaultVcpus));
  o.vm.vcpus = static_cast<int>(vcpus);
  ASSIGN_OR_RETURN(o.vm.workload.kind,
                   vmm::ParseWorkloadKind(args.String("workload", api::kDefaultWorkload)));
  ASSIGN_OR_RETURN(int64_t ops, args.Int("ops", 0));
  if (ops < 0) return absl::InvalidArgumentError("--ops must not be negative");
  o.vm.workload.ops_per_vcpu = static_cast<uint64_t>(ops);
  ASSIGN_OR_RETURN(o.vm.workload.dirty_bytes_per_sec,
                   args.Rate("dirty-rate", api::kDefaultDirtyBytesPerSec));
  ASSIGN_OR_RETURN(o.vm.workload.zero_fraction, args.Double("zero-fraction", 0));
  ASSIGN_OR_RETURN(o.migration.mode,
                   migration::ParseMigrationMode(args.String("mode", api::kDefaultMode)));
  ASSIGN_OR_RETURN(o.migration.fault_mode,
                   vmm::ParseFaultMode(args.String("fault-mode", api::kDefaultFaultMode)));
  RETURN_IF_ERROR(args.Alias("downtime-ms", "downtime-target-ms"));
  ASSIGN_OR_RETURN(o.migration.downtime_target_ms,
                   args.Int("downtime-target-ms", api::kDefaultDowntimeTargetMs));
  ASSIGN_OR_RETURN(o.migration.max_bandwidth, args.Rate("max-bandwidth", 0));
  ASSIGN_OR_RETURN(int64_t rounds, args.Int("max-rounds", api::kDefaultMaxRounds));
  o.migration.max_rounds = static_cast<int>(rounds);
  ASSIGN_OR_RETURN(int64_t streams, args.Int("streams", 0));
  o.migration.streams = static_cast<int>(streams);
  const bool json = args.Bool("json");
  RETURN_IF_ERROR(args.Finish());
  RETURN_IF_ERROR(vmm::ValidateVmConfig(o.vm));
  RETURN_IF_ERROR(migration::ValidateMigrationOptions(o.migration));
  // Source, destination and the replay each hold the guest's memory.
  WarmHostMemory(3 * o.vm.memory_bytes);
  ASSIGN_OR_RETURN(migration::MigrationReport r, RunMigrate(o));
  if (json) {
    std::printf("%s\n", migration::ReportJson(r).ToString().c_str());
  } else {
    std::printf("%s", migration::ReportText(r).c_str());
  }
  if (r.outcome() != "completed") return absl::AbortedError(r.outcome());
  if (r.has_digest_match() && !r.digest_match())
    return absl::DataLossError("the destination's memory differs from the reference run");
  return absl::OkStatus();
}

absl::Status Suite(Args& args, std::string command) {
  SuiteOptions o;
  o.command = std::move(command);
  const int sizes = args.Bool("quick") + args.Bool("full") + args.Bool("tiny");
  if (args.Bool("full")) o.size = SuiteOptions::Size::kFull;
  if (args.Bool("tiny")) o.size = SuiteOptions::Size::kTiny;
  o.out = args.String("out", "bench-results");
  for (auto [flag, list] : {std::pair<const char*, std::vector<uint64_t>*>{"memory", &o.memories},
                            {"dirty-rates", &o.dirty_rates},
                            {"caps", &o.caps}}) {
    for (const std::string& v : args.List(flag, {})) {
      if (v == "none") {
        list->push_back(0);
        continue;
      }
      // --memory lists sizes; --dirty-rates and --caps rates (base/units.h).
      ASSIGN_OR_RETURN(uint64_t bytes, std::string(flag) == "memory"
                                           ? ParseSize(v, absl::StrCat("--", flag))
                                           : ParseRate(v, absl::StrCat("--", flag)));
      list->push_back(bytes);
    }
  }
  RETURN_IF_ERROR(args.Finish());
  if (sizes > 1) return absl::InvalidArgumentError("one of --tiny, --quick or --full");
  return RunSuite(o);
}

absl::Status KvmDirtyLog(Args& args) {
  KvmDirtyLogOptions o;
  ASSIGN_OR_RETURN(o.memory, args.Bytes("memory", o.memory));
  ASSIGN_OR_RETURN(int64_t vcpus, args.Int("vcpus", o.vcpus));
  o.vcpus = static_cast<int>(vcpus);
  o.workload = args.String("workload", o.workload);
  ASSIGN_OR_RETURN(int64_t rounds, args.Int("rounds", o.rounds));
  o.rounds = static_cast<int>(std::max<int64_t>(1, rounds));
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", o.repeat));
  o.repeat = static_cast<int>(std::max<int64_t>(1, repeat));
  RETURN_IF_ERROR(args.Finish());
  ASSIGN_OR_RETURN(std::vector<KvmDirtyLogResult> results, RunKvmDirtyLog(o));
  std::printf("%-7s %14s %12s %16s %18s %16s\n", "mode", "collect p50 us", "max us",
              "pages/collect", "guest ops/s before", "ops/s tracked");
  for (const KvmDirtyLogResult& r : results)
    std::printf("%-7s %14.1f %12.1f %16.0f %18.0f %16.0f\n", r.mode.c_str(),
                r.collect_us_median, r.collect_us_max, r.pages_per_collect,
                r.ops_per_sec_untracked, r.ops_per_sec_tracked);
  return absl::OkStatus();
}

// `ferry-bench compare OLD_DIR NEW_DIR [flags] [-- SCENARIO FLAGS...]...`:
// the scenarios after each `--` (Args keeps every word after the first
// `--` as a positional; later `--` separate scenarios).
absl::Status Compare(Args& args) {
  CompareOptions o;
  ASSIGN_OR_RETURN(int64_t repeat, args.Int("repeat", o.repeat));
  if (repeat < 1 || repeat > 100) return absl::InvalidArgumentError("--repeat must be 1 to 100");
  o.repeat = static_cast<int>(repeat);
  ASSIGN_OR_RETURN(o.tolerance, args.Double("tolerance", o.tolerance));
  if (o.tolerance < 0 || o.tolerance >= 1)
    return absl::InvalidArgumentError("--tolerance must be at least 0 and below 1");
  const bool json = args.Bool("json");
  const bool fail_on_regression = args.Bool("fail-on-regression");
  RETURN_IF_ERROR(args.Finish());
  const std::vector<std::string>& words = args.positional();
  if (words.size() < 3)
    return absl::InvalidArgumentError(
        "usage: ferry-bench compare OLD_DIR NEW_DIR [flags] [-- SCENARIO FLAGS...]...");
  o.old_dir = words[1];
  o.new_dir = words[2];
  for (size_t i = 3; i < words.size(); ++i) {
    if (words[i] == "--") continue;
    if (i == 3 || words[i - 1] == "--") o.scenarios.emplace_back();
    o.scenarios.back().push_back(words[i]);
  }
  if (o.scenarios.empty()) o.scenarios = DefaultCompareScenarios();
  for (const auto& s : o.scenarios)
    if (s[0] == "compare" || s[0] == "suite" || s[0] == "help")
      return absl::InvalidArgumentError(
          absl::StrCat("compare runs scenarios that print JSON, not '", s[0], "'"));
  for (const auto& [name, dir] : {std::pair{"old", o.old_dir}, std::pair{"new", o.new_dir}}) {
    RETURN_IF_ERROR(CheckBuildDir(dir));
    const std::string label = BuildLabel(dir);
    std::fprintf(stderr, "%s: %s%s\n", name, dir.c_str(),
                 label.empty() ? "" : absl::StrCat(" (", label, ")").c_str());
  }
  ASSIGN_OR_RETURN(std::vector<ScenarioComparison> result, RunCompare(o));
  int worse = 0;
  for (const ScenarioComparison& s : result) {
    if (json) {
      for (const JsonObject& j : ComparisonJson(s.command, s.fields))
        std::printf("%s\n", j.ToString().c_str());
    } else {
      std::printf("%s\n", ComparisonTable(s.command, o.repeat, s.fields).c_str());
    }
    for (const FieldComparison& f : s.fields) worse += f.verdict == Verdict::kWorse;
  }
  if (fail_on_regression && worse > 0)
    return absl::AbortedError(
        absl::StrCat("figures WORSE in the new build: ", worse, " (--fail-on-regression)"));
  return absl::OkStatus();
}

// `ferry-bench help SCENARIO`: the scenario's part of the usage (its
// line, indented by two, and what follows up to the next scenario).
absl::Status ScenarioHelp(const std::string& scenario) {
  const std::string usage = kUsage;
  const size_t list = usage.find("\nscenarios:\n");
  const size_t at = usage.find("\n  " + scenario + " ", list);
  if (list == std::string::npos || at == std::string::npos)
    return absl::InvalidArgumentError(
        absl::StrFormat("no help for '%s': unknown scenario (see ferry-bench --help)", scenario));
  size_t end = at + 1;
  for (;;) {
    end = usage.find('\n', end);
    if (end == std::string::npos || end + 3 >= usage.size() ||
        (usage[end + 1] == ' ' && usage[end + 2] == ' ' && usage[end + 3] != ' '))
      break;
    ++end;
  }
  std::cout << "usage: ferry-bench " << scenario << " [flags]\n\n"
            << usage.substr(at + 1, end == std::string::npos ? std::string::npos : end - at)
            << "\n";
  return absl::OkStatus();
}

absl::Status Main(int argc, char** argv) {
  ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1,
                                          {"full", "tiny", "quick", "man", "fail-on-regression"}));
  if (!args.positional().empty() && args.positional()[0] == "help") {
    if (args.Bool("man")) {
      RETURN_IF_ERROR(args.Finish(1, "ferry-bench help --man"));
      std::cout << ManPage("ferry-bench", 1, "Ferry's benchmark harness",
                           {{"SYNOPSIS", "ferry-bench SCENARIO [flags]\nferry-bench help [SCENARIO]"},
                            {"DESCRIPTION", kUsage},
                            {"SEE ALSO", "ferry(1), ferryd(8); docs/benchmarks.md"}});
      return absl::OkStatus();
    }
    RETURN_IF_ERROR(args.Finish(2, "ferry-bench help [SCENARIO]"));
    if (args.positional().size() == 1) {
      std::cout << kUsage;
      return absl::OkStatus();
    }
    return ScenarioHelp(args.positional()[1]);
  }
  if (args.Bool("version")) {
    std::cout << "ferry-bench " << FerryVersion() << "\n";
    return absl::OkStatus();
  }
  if (!args.positional().empty() && args.Bool("help")) return ScenarioHelp(args.positional()[0]);
  if (args.positional().empty() || args.Bool("help")) {
    std::cout << kUsage;
    return args.positional().empty() && !args.Bool("help")
               ? absl::InvalidArgumentError("no scenario given")
               : absl::OkStatus();
  }
  const std::string& scenario = args.positional()[0];
  if (scenario == "demand-paging") return DemandPaging(args);
  if (scenario == "kvm-dirty-log") return KvmDirtyLog(args);
  if (scenario == "digest") return Digest(args);
  if (scenario == "reference") return Reference(args);
  if (scenario == "migrate") return Migrate(args);
  if (scenario == "processes") return Processes(args);
  if (scenario == "restore") return RestoreScenario(args);
  if (scenario == "memory-change") return MemoryChangeScenario(args);
  if (scenario == "compare") return Compare(args);
  if (scenario == "suite") {
    std::vector<std::string> words = {"ferry-bench"};
    for (int i = 1; i < argc; ++i) words.push_back(argv[i]);
    return Suite(args, absl::StrJoin(words, " "));
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown scenario '%s' (see --help)", scenario));
}

}  // namespace
}  // namespace ferry::bench

int main(int argc, char** argv) {
  ferry::TuneMallocForBulkTransfers();
  absl::Status s = ferry::bench::Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "ferry-bench: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
