// `ferry-bench compare OLD_DIR NEW_DIR`: runs the same scenarios on two
// builds of Ferry, alternating, and compares each figure they print
// (bench/compare.h does the arithmetic; docs/development.md, "Keeping
// performance gains", says when to run it).
//
// A build directory holds `ferry-bench`, `ferryd` and `ferry-vmm` (as
// `./dev bench-snapshot DIR` leaves them). Every run is a child process
// `DIR/ferry-bench SCENARIO FLAGS --json` with FERRYD=DIR/ferryd and
// FERRY_VMM=DIR/ferry-vmm in its environment, so the agents it starts are
// that build's too. Repetition i runs every scenario on both builds, the old
// one first when i is even and the new one first when it is odd, so that a
// machine that drifts during the run favours neither.
//
// Fails (and the whole comparison stops) with InvalidArgument when a
// directory is no build directory, and otherwise (Aborted,
// DeadlineExceeded) when a run exits non-zero (the message carries the end
// of its stderr), does not end within kRunTimeout, prints no JSON object, or
// prints a line that starts with '{' but is no JSON object. A figure that
// got worse is a result, not a failure.
//
// Threads: one thread; children run one at a time.
//
//   CompareOptions o{.old_dir = "/tmp/old", .new_dir = "/tmp/new", .repeat = 4,
//                    .scenarios = DefaultCompareScenarios()};
//   ASSIGN_OR_RETURN(std::vector<ScenarioComparison> result, RunCompare(o));
#ifndef FERRY_BENCH_COMPARE_RUN_H_
#define FERRY_BENCH_COMPARE_RUN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/compare.h"

namespace ferry::bench {

// The longest one run may take before it is killed (and the comparison
// fails).
inline constexpr absl::Duration kRunTimeout = absl::Minutes(30);

struct CompareOptions {
  std::string old_dir;
  std::string new_dir;
  // Repetitions of every scenario on each build; an even count puts each
  // build first equally often.
  int repeat = 4;
  double tolerance = kDefaultTolerance;  // CompareRuns
  // Each: a scenario and its flags ({"migrate", "--memory", "1G"}).
  // `--json` is added unless present.
  std::vector<std::vector<std::string>> scenarios;
};

// The scenarios compare runs when none is named: the link (the control:
// the same code in both builds, so its ratios show this run's noise),
// precopy of an idle 512 MiB guest (throughput, total time) and postcopy
// of a uniform 256 MiB one (total time, fault latency): about 20 s per
// repetition and build on 2 cores, under 3 min with the default 4
// repetitions (both at 1 GiB took 42 s, near 6 min).
std::vector<std::vector<std::string>> DefaultCompareScenarios();

struct ScenarioComparison {
  std::string command;  // "migrate --memory 1G ... --json"
  std::vector<FieldComparison> fields;
};

// OK if `dir` holds executable ferry-bench, ferryd and ferry-vmm;
// InvalidArgument naming what is missing otherwise.
absl::Status CheckBuildDir(const std::string& dir);

// The first line of DIR/build.txt (`./dev bench-snapshot` writes the commit
// there), or "" when there is none.
std::string BuildLabel(const std::string& dir);

// Runs every scenario `repeat` times on each build, writing one progress
// line per run to stderr, and compares them.
absl::StatusOr<std::vector<ScenarioComparison>> RunCompare(const CompareOptions& options);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_COMPARE_RUN_H_
