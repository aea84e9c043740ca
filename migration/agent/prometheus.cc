#include "migration/agent/prometheus.h"

#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ferry::agent {
namespace {

std::string Format(const Labels& labels, const std::string& extra = "") {
  std::string s;
  for (const auto& [k, v] : labels)
    absl::StrAppend(&s, s.empty() ? "" : ",", k, "=\"",
                    absl::StrReplaceAll(v, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}}),
                    "\"");
  if (!extra.empty()) absl::StrAppend(&s, s.empty() ? "" : ",", extra);
  return s.empty() ? "" : absl::StrCat("{", s, "}");
}

std::string Number(double v) { return absl::StrFormat("%.9g", v); }

// Upper bounds, seconds.
constexpr double kBounds[] = {10e-6, 25e-6,  50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3,
                              5e-3,  10e-3, 25e-3, 50e-3,  100e-3, 250e-3, 1,    10};

}  // namespace

void PrometheusText::Declare(const std::string& name, const char* type,
                             const std::string& help) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void PrometheusText::Sample(const std::string& name, const Labels& labels, double value) {
  absl::StrAppend(&out_, name, Format(labels), " ", Number(value), "\n");
}

void PrometheusText::HistogramSeconds(const std::string& name, const Labels& labels,
                                      const HistogramSnapshot& ns) {
  // A recording bucket counts below a bound when all of it lies below.
  for (double bound : kBounds) {
    const uint64_t bound_ns = static_cast<uint64_t>(bound * 1e9);
    uint64_t below = 0;
    for (int b = 0; b < kHistogramBuckets; ++b)
      if (ns.counts[b] != 0 && LatencyHistogram::BucketHigh(b) <= bound_ns + 1)
        below += ns.counts[b];
    absl::StrAppend(&out_, name, "_bucket",
                    Format(labels, absl::StrCat("le=\"", Number(bound), "\"")), " ", below, "\n");
  }
  absl::StrAppend(&out_, name, "_bucket", Format(labels, "le=\"+Inf\""), " ", ns.total, "\n");
  absl::StrAppend(&out_, name, "_sum", Format(labels), " ", Number(ns.sum / 1e9), "\n");
  absl::StrAppend(&out_, name, "_count", Format(labels), " ", ns.total, "\n");
}

namespace {

struct Family {
  std::string help, type;  // whole lines, "" until declared
  std::vector<std::string> samples;
};

// `line` ("name{k="v",...} value" or "name value") with the labels of
// `extra` first and in place of any of the same name it had (a process
// names only itself); nullopt for a line that does not parse (label values
// are read with their escapes, so `}` or `,` inside one is no end).
std::optional<std::string> WithLabels(absl::string_view line, const Labels& extra) {
  const size_t end = line.find_first_of("{ ");
  if (end == 0 || end == absl::string_view::npos) return std::nullopt;
  const absl::string_view name = line.substr(0, end);
  for (size_t i = 0; i < name.size(); ++i)
    if (!(absl::ascii_isalpha(name[i]) || name[i] == '_' || name[i] == ':' ||
          (i > 0 && absl::ascii_isdigit(name[i]))))
      return std::nullopt;
  absl::string_view rest = line.substr(end);
  std::vector<std::string> kept;  // k="v" as written
  if (absl::ConsumePrefix(&rest, "{")) {
    while (!absl::ConsumePrefix(&rest, "}")) {
      const size_t eq = rest.find("=\"");
      if (eq == 0 || eq == absl::string_view::npos) return std::nullopt;
      const absl::string_view key = rest.substr(0, eq);
      size_t at = eq + 2;
      while (at < rest.size() && rest[at] != '"') at += rest[at] == '\\' ? 2 : 1;
      if (at >= rest.size()) return std::nullopt;
      bool replaced = false;
      for (const auto& label : extra) replaced |= label.first == key;
      if (!replaced) kept.emplace_back(rest.substr(0, at + 1));
      rest.remove_prefix(at + 1);
      absl::ConsumePrefix(&rest, ",");
    }
  }
  // A value (and maybe a timestamp) after one space.
  if (!absl::StartsWith(rest, " ")) return std::nullopt;
  const absl::string_view value = rest.substr(1, rest.find(' ', 1) - 1);
  double number = 0;
  if (!absl::SimpleAtod(value, &number) && value != "+Inf" && value != "-Inf" && value != "NaN")
    return std::nullopt;
  std::string labels = Format(extra);
  if (!labels.empty()) labels = labels.substr(1, labels.size() - 2);
  for (const std::string& k : kept) absl::StrAppend(&labels, labels.empty() ? "" : ",", k);
  return absl::StrCat(name, labels.empty() ? "" : absl::StrCat("{", labels, "}"), rest);
}

}  // namespace

std::string MergeExpositions(const std::vector<ExpositionPart>& parts) {
  std::vector<std::string> order;
  std::map<std::string, Family> families;
  auto family = [&](const std::string& name) -> Family& {
    auto [it, added] = families.try_emplace(name);
    if (added) order.push_back(name);
    return it->second;
  };
  for (const ExpositionPart& part : parts) {
    std::string current;
    for (absl::string_view line : absl::StrSplit(part.text, '\n')) {
      if (line.empty()) continue;
      if (absl::ConsumePrefix(&line, "# ")) {
        const bool help = absl::StartsWith(line, "HELP ");
        if (!help && !absl::StartsWith(line, "TYPE ")) continue;
        std::vector<absl::string_view> w = absl::StrSplit(line, absl::MaxSplits(' ', 2));
        if (w.size() < 2) continue;
        current = std::string(w[1]);
        Family& f = family(current);
        std::string& slot = help ? f.help : f.type;
        if (slot.empty()) slot = absl::StrCat("# ", line);
        continue;
      }
      if (line[0] == '#') continue;
      std::optional<std::string> sample = WithLabels(line, part.extra);
      if (!sample.has_value()) continue;  // not a sample: dropped, the rest stands
      const std::string name(line.substr(0, line.find_first_of("{ ")));
      const bool in_current = !current.empty() && absl::StartsWith(name, current);
      family(in_current ? current : name).samples.push_back(*std::move(sample));
    }
  }
  std::string out;
  for (const std::string& name : order) {
    const Family& f = families[name];
    if (!f.help.empty()) absl::StrAppend(&out, f.help, "\n");
    if (!f.type.empty()) absl::StrAppend(&out, f.type, "\n");
    for (const std::string& sample : f.samples) absl::StrAppend(&out, sample, "\n");
  }
  return out;
}

}  // namespace ferry::agent
