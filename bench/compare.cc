#include "bench/compare.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/stats.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace ferry::bench {

absl::StatusOr<Figures> NumericFields(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (!absl::StartsWith(line, "{"))
    return absl::InvalidArgumentError("not a JSON object (it does not start with '{')");
  google::protobuf::Struct object;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(line.data(), line.size()), &object, options);
  if (!status.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("not a JSON object: ", std::string(status.message())));
  Figures figures;
  for (const auto& [name, value] : object.fields())
    if (value.kind_case() == google::protobuf::Value::kNumberValue)
      figures[name] = value.number_value();
  return figures;
}

absl::StatusOr<RunFigures> ParseRunOutput(absl::string_view text) {
  RunFigures run;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    if (!absl::StartsWith(absl::StripLeadingAsciiWhitespace(line), "{")) continue;
    auto figures = NumericFields(line);
    if (!figures.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("output line ", number, ": ", figures.status().message()));
    run.push_back(*std::move(figures));
  }
  return run;
}

Better BetterDirection(absl::string_view field) {
  // "[k] name": the direction is the name's.
  if (absl::StartsWith(field, "[")) {
    const size_t at = field.find("] ");
    if (at != absl::string_view::npos) field.remove_prefix(at + 2);
  }
  if (absl::StartsWith(field, "mgu_") || absl::StrContains(field, "_mgu_")) return Better::kHigher;
  if (absl::EndsWith(field, "_gbps") || absl::EndsWith(field, "_per_sec")) return Better::kHigher;
  if (absl::EndsWith(field, "_ms") || absl::EndsWith(field, "_us") || field == "seconds" ||
      absl::EndsWith(field, "_seconds"))
    return Better::kLower;
  return Better::kUnknown;
}

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kNone:
      return "";
    case Verdict::kNoise:
      return "noise";
    case Verdict::kWorse:
      return "worse";
    case Verdict::kBetter:
      return "better";
  }
  return "";
}

Verdict VerdictOf(Better better, double ratio_min, double ratio_max, double tolerance) {
  if (better == Better::kUnknown) return Verdict::kNone;
  const bool all_above = ratio_min > 1.0 + tolerance;
  const bool all_below = ratio_max < 1.0 - tolerance;
  if (!all_above && !all_below) return Verdict::kNoise;
  const bool higher = all_above;
  return higher == (better == Better::kHigher) ? Verdict::kBetter : Verdict::kWorse;
}

namespace {

// The figures of one run under the names CompareRuns reports: "[k] name"
// when the scenario prints several objects per run.
Figures Flatten(const RunFigures& run, bool indexed) {
  Figures out;
  for (size_t k = 0; k < run.size(); ++k)
    for (const auto& [name, value] : run[k])
      out[indexed ? absl::StrCat("[", k, "] ", name) : name] = value;
  return out;
}

}  // namespace

std::vector<FieldComparison> CompareRuns(const std::vector<RunFigures>& old_runs,
                                         const std::vector<RunFigures>& new_runs,
                                         double tolerance) {
  size_t objects = 0;
  for (const auto* runs : {&old_runs, &new_runs})
    for (const RunFigures& run : *runs) objects = std::max(objects, run.size());
  const bool indexed = objects > 1;
  std::vector<Figures> olds, news;
  std::set<std::string> names;
  for (const RunFigures& run : old_runs) olds.push_back(Flatten(run, indexed));
  for (const RunFigures& run : new_runs) news.push_back(Flatten(run, indexed));
  for (const auto* runs : {&olds, &news})
    for (const Figures& f : *runs)
      for (const auto& [name, value] : f) names.insert(name);

  std::vector<FieldComparison> out;
  for (const std::string& name : names) {
    FieldComparison c;
    c.field = name;
    c.better = BetterDirection(name);
    std::vector<double> old_values, new_values, ratios;
    for (size_t i = 0; i < std::max(olds.size(), news.size()); ++i) {
      const double* o = nullptr;
      const double* n = nullptr;
      if (i < olds.size()) {
        auto it = olds[i].find(name);
        if (it != olds[i].end()) o = &it->second;
      }
      if (i < news.size()) {
        auto it = news[i].find(name);
        if (it != news[i].end()) n = &it->second;
      }
      if (o != nullptr) old_values.push_back(*o);
      if (n != nullptr) new_values.push_back(*n);
      if (o != nullptr && n != nullptr) ++c.paired_n;
      if (o != nullptr && n != nullptr && *o != 0) ratios.push_back(*n / *o);
    }
    c.old_n = old_values.size();
    c.new_n = new_values.size();
    c.old_median = Summarize(old_values).median;
    c.new_median = Summarize(new_values).median;
    if (c.old_n == 0) c.note = "missing in old";
    if (c.new_n == 0) c.note = "missing in new";
    c.has_ratio = c.old_n > 0 && c.new_n > 0 && c.old_median != 0;
    if (c.has_ratio) c.ratio = c.new_median / c.old_median;
    c.all_zero = c.old_n > 0 && c.new_n > 0;
    for (const auto* values : {&old_values, &new_values})
      for (double v : *values) c.all_zero = c.all_zero && v == 0;
    c.ratio_n = ratios.size();
    if (!ratios.empty()) {
      c.ratio_min = *std::min_element(ratios.begin(), ratios.end());
      c.ratio_max = *std::max_element(ratios.begin(), ratios.end());
    }
    // A verdict needs a spread, and one over every repetition: a ratio
    // left out (old was 0 there) could lie on the other side.
    if (c.has_ratio && c.ratio_n >= 2 && c.ratio_n == c.paired_n)
      c.verdict = VerdictOf(c.better, c.ratio_min, c.ratio_max, tolerance);
    out.push_back(std::move(c));
  }
  return out;
}

namespace {

std::string Number(double v) { return absl::StrFormat("%.4g", v); }

// One row of the table, without trailing spaces.
std::string Row(absl::string_view field, absl::string_view old_median, absl::string_view new_median,
                absl::string_view ratio, absl::string_view spread, absl::string_view mark) {
  const std::string row = absl::StrFormat("  %-28s %11s %11s %8s  %-15s %s", field, old_median,
                                          new_median, ratio, spread, mark);
  return absl::StrCat(absl::StripTrailingAsciiWhitespace(row), "\n");
}

}  // namespace

std::string ComparisonTable(const std::string& command, int repeat,
                            const std::vector<FieldComparison>& fields) {
  std::string out = absl::StrFormat("%s  (%d repetitions per build)\n", command, repeat);
  out += Row("figure", "old median", "new median", "new/old", "spread", "");
  int worse = 0, better = 0, noise = 0;
  std::vector<std::string> zero;
  for (const FieldComparison& c : fields) {
    if (c.all_zero) {
      zero.push_back(c.field);
      continue;
    }
    const std::string old_median = c.old_n > 0 ? Number(c.old_median) : "-";
    const std::string new_median = c.new_n > 0 ? Number(c.new_median) : "-";
    const std::string ratio = c.has_ratio ? absl::StrFormat("%.3f", c.ratio) : "-";
    const std::string spread =
        c.ratio_n > 0 ? absl::StrFormat("%.3f..%.3f", c.ratio_min, c.ratio_max) : "-";
    std::string mark = c.note;
    if (c.verdict == Verdict::kWorse) mark = "WORSE";
    if (c.verdict == Verdict::kBetter) mark = "better";
    worse += c.verdict == Verdict::kWorse;
    better += c.verdict == Verdict::kBetter;
    noise += c.verdict == Verdict::kNoise;
    out += Row(c.field, old_median, new_median, ratio, spread, mark);
  }
  // The all-zero fields, wrapped at about 100 columns.
  std::string line = "  0 in every run:";
  for (const std::string& name : zero) {
    if (line.size() + name.size() + 1 > 100) {
      out += line + "\n";
      line = "   ";
    }
    absl::StrAppend(&line, " ", name);
  }
  if (!zero.empty()) out += line + "\n";
  absl::StrAppendFormat(&out,
                        "  %d worse, %d better, %d within the spread (of %d figures with a "
                        "verdict)\n",
                        worse, better, noise, worse + better + noise);
  return out;
}

std::vector<JsonObject> ComparisonJson(const std::string& command,
                                       const std::vector<FieldComparison>& fields) {
  std::vector<JsonObject> out;
  for (const FieldComparison& c : fields) {
    JsonObject o;
    o.Add("scenario", command).Add("field", c.field);
    o.Add("old_n", static_cast<int64_t>(c.old_n)).Add("new_n", static_cast<int64_t>(c.new_n));
    if (c.old_n > 0) o.Add("old_median", c.old_median);
    if (c.new_n > 0) o.Add("new_median", c.new_median);
    if (c.has_ratio) o.Add("ratio", c.ratio);
    if (c.ratio_n > 0) o.Add("ratio_min", c.ratio_min).Add("ratio_max", c.ratio_max);
    if (c.better != Better::kUnknown)
      o.Add("better", c.better == Better::kHigher ? "higher" : "lower");
    if (c.verdict != Verdict::kNone) o.Add("verdict", VerdictName(c.verdict));
    if (!c.note.empty()) o.Add("note", c.note);
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace ferry::bench
