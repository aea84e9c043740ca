#include "bench/plot.h"

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace ferry::bench {
namespace {

std::string Quote(const std::string& s) {
  return "\"" + absl::StrReplaceAll(s, {{"\"", "'"}}) + "\"";
}

absl::Status RunGnuplot(const std::string& script) {
  if (system("command -v gnuplot >/dev/null 2>&1") != 0)
    return absl::FailedPreconditionError(
        "gnuplot is not installed (Debian package gnuplot-nox; ./dev setup installs it)");
  int rc = system(absl::StrCat("gnuplot ", script, " 2>&1").c_str());
  if (rc != 0) return absl::InternalError(absl::StrCat("gnuplot failed on ", script));
  return absl::OkStatus();
}

const char* kHeader =
    "set terminal pngcairo size 960,540 noenhanced font ',10'\n"
    "set grid\nset key outside right top\n";

}  // namespace

absl::Status Render(const LinePlot& plot, const std::string& dir) {
  // An empty series would collapse gnuplot's data-block indexes and shift
  // every later series under the wrong title: leave such series out.
  LinePlot p = plot;
  std::erase_if(p.series, [](const Series& s) { return s.points.empty(); });
  if (p.series.empty()) return absl::OkStatus();
  const std::string base = dir + "/" + p.name;
  {
    std::ofstream dat(base + ".dat");
    for (const Series& s : p.series) {
      dat << "# " << s.title << "\n";
      const bool band = s.band.size() == s.points.size();
      for (size_t i = 0; i < s.points.size(); ++i) {
        dat << s.points[i].first << " " << s.points[i].second;
        if (band) dat << " " << s.band[i].first << " " << s.band[i].second;
        dat << "\n";
      }
      dat << "\n\n";  // gnuplot index separator
    }
  }
  std::ofstream gp(base + ".gp");
  gp << kHeader;
  gp << "set output " << Quote(base + ".png") << "\n";
  gp << "set title " << Quote(p.title) << "\n";
  gp << "set xlabel " << Quote(p.xlabel) << "\nset ylabel " << Quote(p.ylabel) << "\n";
  if (p.logx) gp << "set logscale x\n";
  if (p.logy) gp << "set logscale y\n";
  int n = 1;
  for (const auto& [x, label] : p.vlines) {
    gp << absl::StrFormat("set arrow %d from %g, graph 0 to %g, graph 1 nohead dt 2 lw 2\n", n, x, x);
    gp << absl::StrFormat("set label %d %s at %g, graph 0.95 offset 0.5,0\n", n, Quote(label), x);
    ++n;
  }
  gp << "plot ";
  bool first = true;
  for (size_t i = 0; i < p.series.size(); ++i) {
    if (p.series[i].band.size() != p.series[i].points.size()) continue;
    gp << (first ? "" : ", ") << Quote(base + ".dat") << " index " << i
       << " using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc " << i + 1
       << " notitle";
    first = false;
  }
  for (size_t i = 0; i < p.series.size(); ++i) {
    gp << (first ? "" : ", ") << Quote(base + ".dat") << " index " << i
       << " using 1:2 with linespoints pt 7 ps 0.5 lc " << i + 1 << " title "
       << Quote(p.series[i].title);
    first = false;
  }
  gp << "\n";
  gp.close();
  return RunGnuplot(base + ".gp");
}

absl::Status Render(const StackedBars& p, const std::string& dir) {
  const std::string base = dir + "/" + p.name;
  {
    std::ofstream dat(base + ".dat");
    dat << "category";
    for (const std::string& part : p.parts) dat << " " << Quote(part);
    dat << "\n";
    for (const auto& [category, values] : p.bars) {
      dat << Quote(category);
      for (double v : values) dat << " " << v;
      dat << "\n";
    }
  }
  std::ofstream gp(base + ".gp");
  gp << kHeader;
  gp << "set output " << Quote(base + ".png") << "\n";
  gp << "set title " << Quote(p.title) << "\nset ylabel " << Quote(p.ylabel) << "\n";
  gp << "set style data histograms\nset style histogram rowstacked\n"
        "set style fill solid 0.8 border -1\nset boxwidth 0.7\nset xtics rotate by -25\n";
  gp << "plot for [i=2:" << p.parts.size() + 1 << "] " << Quote(base + ".dat")
     << " using i:xtic(1) title columnheader(i)\n";
  gp.close();
  return RunGnuplot(base + ".gp");
}

}  // namespace ferry::bench
