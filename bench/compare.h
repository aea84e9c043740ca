// The arithmetic of `ferry-bench compare` (docs/benchmarks.md, "compare"):
// from the JSON a scenario printed in each repetition, on the old build and
// on the new one, the ratio new/old of every numeric figure, the spread of
// that ratio over the repetitions, and a verdict where the figure's name
// says which direction is better. Pure functions on values; the child
// processes are bench/compare_run.h's.
//
// A repetition's output is the JSON objects its stdout held, one per line
// (ferry-bench writes them with JsonObject or ProtoToJson). Of each object
// only the top-level numbers count: strings, booleans, nulls, arrays and
// nested objects are skipped. When a scenario prints more than one object
// per run (demand-paging: one per point), the k-th object's figures are
// named "[k] field", k from 0.
//
// Threads: pure functions; any thread.
//
//   ASSIGN_OR_RETURN(RunFigures run, ParseRunOutput(stdout_text));
//   ...one RunFigures per build and repetition...
//   for (const FieldComparison& c : CompareRuns(old_runs, new_runs)) ...
#ifndef FERRY_BENCH_COMPARE_H_
#define FERRY_BENCH_COMPARE_H_

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/json.h"

namespace ferry::bench {

// One JSON object's top-level numeric fields, by name.
using Figures = std::map<std::string, double>;
// Every object one run printed, in order.
using RunFigures = std::vector<Figures>;

// The top-level numeric fields of one JSON object (`line`, surrounding
// whitespace allowed). InvalidArgument if `line` is not one JSON object.
absl::StatusOr<Figures> NumericFields(absl::string_view line);

// Every JSON object of a run's stdout: each line that starts with '{'
// (after spaces) must be one object (InvalidArgument naming the line
// otherwise); other lines (a table, a note) are ignored.
absl::StatusOr<RunFigures> ParseRunOutput(absl::string_view text);

// Which way a figure is better, from its name: higher for throughput
// (`*_gbps`, `*_per_sec`) and minimum utilization (`mgu_*`, `*_mgu_*`);
// lower for times and latencies (`*_ms`, `*_us`, `seconds`, `*_seconds`);
// no direction for anything else (counts, sizes, settings).
enum class Better { kUnknown, kHigher, kLower };
Better BetterDirection(absl::string_view field);

// kWorse (kBetter): every repetition's ratio lies on the bad (good) side of
// 1.0, beyond the tolerance; kNoise: the spread reaches into 1.0 +-
// tolerance; kNone: no direction, or not a ratio from every repetition, or
// fewer than two.
enum class Verdict { kNone, kNoise, kWorse, kBetter };
const char* VerdictName(Verdict v);  // "", "noise", "worse", "better"

// The default tolerance: a spread must clear 1.0 by more than 2 % to be
// marked. Smaller changes are below what a few repetitions on a shared
// 2-core machine resolve.
inline constexpr double kDefaultTolerance = 0.02;

// One figure of one scenario, over the repetitions.
struct FieldComparison {
  std::string field;
  size_t old_n = 0;  // repetitions in which the old build printed it
  size_t new_n = 0;
  double old_median = 0;  // meaningful when old_n > 0
  double new_median = 0;
  // new_median / old_median; has_ratio false when either build never
  // printed the figure or the old median is 0.
  bool has_ratio = false;
  double ratio = 0;
  // The per-repetition ratios new/old (repetitions in which both printed
  // the figure and old was not 0): how many, their min and max.
  size_t paired_n = 0;  // repetitions in which both builds printed it
  size_t ratio_n = 0;
  double ratio_min = 0;
  double ratio_max = 0;
  Better better = Better::kUnknown;
  Verdict verdict = Verdict::kNone;
  // "missing in new" / "missing in old" when one build never printed it.
  std::string note;
  // Every value either build printed is 0 (a path this scenario never took).
  bool all_zero = false;
};

// Compares one scenario: old_runs[i] and new_runs[i] are repetition i of
// each build (a failed run may be an empty RunFigures). The result holds
// every field either build printed, sorted by name.
std::vector<FieldComparison> CompareRuns(const std::vector<RunFigures>& old_runs,
                                         const std::vector<RunFigures>& new_runs,
                                         double tolerance = kDefaultTolerance);

// The verdict for a direction and a spread of ratios.
Verdict VerdictOf(Better better, double ratio_min, double ratio_max,
                  double tolerance = kDefaultTolerance);

// One scenario's comparison as a table: a heading naming `command` and the
// repetitions, one row per field (old and new median, new/old, the spread
// min..max of the per-repetition ratios, WORSE or better), the all_zero
// fields listed on one line, and a closing count of the verdicts.
std::string ComparisonTable(const std::string& command, int repeat,
                            const std::vector<FieldComparison>& fields);

// The same as JSON objects, one per field: scenario (`command`), field,
// old_n, new_n, old_median, new_median, ratio, ratio_min, ratio_max (the
// ratios only when there are some), better ("higher", "lower" or absent),
// verdict ("worse", "better", "noise" or absent), note (when set). Every
// field, all_zero ones included.
std::vector<JsonObject> ComparisonJson(const std::string& command,
                                       const std::vector<FieldComparison>& fields);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_COMPARE_H_
