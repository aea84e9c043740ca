#include "bench/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace ferry::bench {
namespace {

// A gnuplot double-quoted string: '"' becomes '\'', a line break "\n".
std::string Quote(const std::string& s) {
  return "\"" + absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"\"", "'"}, {"\n", "\\n"}}) + "\"";
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

// A plot with nothing to draw: no PNG (a stale one from an earlier run in
// the same directory is removed), a note saying why in DIR/name.txt and on
// stderr.
absl::Status Skip(const std::string& dir, const std::string& name, const std::string& why) {
  const std::string base = dir + "/" + name;
  std::remove((base + ".png").c_str());
  std::ofstream note(base + ".txt");
  note << name << ".png not drawn: " << why << "\n";
  if (!note) return absl::InternalError(absl::StrCat("cannot write ", base, ".txt"));
  std::fprintf(stderr, "plot %s skipped: %s\n", name.c_str(), why.c_str());
  return absl::OkStatus();
}

// The caption goes under the key, in the right margin; the margin is made
// wide enough for the wider of the two (gnuplot sizes it for the key only,
// and a caption wider than a short key ran into the last x tick label).
// Widths are estimates at 960 pixels: a key entry about 7 pixels a
// character of its title plus 100 for the sample line, a caption line 5.5
// a character plus 50 for the last tick label's overhang.
void WriteCaption(std::ostream& gp, const std::string& caption,
                  const std::vector<std::string>& key_titles) {
  if (caption.empty()) return;
  size_t longest_title = 0, longest_line = 0;
  for (const std::string& t : key_titles) longest_title = std::max(longest_title, t.size());
  for (absl::string_view line : absl::StrSplit(caption, '\n'))
    longest_line = std::max(longest_line, line.size());
  const double margin_px = std::max(7.0 * longest_title + 100, 5.5 * longest_line + 50);
  gp << absl::StrFormat("set rmargin at screen %.3f\n", std::max(0.5, 1 - margin_px / 960));
  // A label's position is its first line's: lift it by the lines below
  // (about 13 of the 540 pixels each at 8 points) to keep them all inside.
  const int lines = 1 + std::count(caption.begin(), caption.end(), '\n');
  gp << absl::StrFormat(
      "set label 1000 %s at screen 0.99, screen %.3f right font ',8' tc rgb 'gray30'\n",
      Quote(caption), 0.025 + 0.025 * (lines - 1));
}

// "[lo:hi]" for gnuplot, %g.
std::string Range(double lo, double hi) { return absl::StrFormat("[%g:%g]", lo, hi); }

}  // namespace

absl::Status Render(const LinePlot& plot, const std::string& dir) {
  // An empty series would collapse gnuplot's data-block indexes and shift
  // every later series under the wrong title: leave such series out (and
  // re-point the vertical lines that take a series' colour).
  LinePlot p = plot;
  p.series.clear();
  std::vector<int> new_index(plot.series.size(), -1);
  for (size_t i = 0; i < plot.series.size(); ++i) {
    if (plot.series[i].points.empty()) continue;
    new_index[i] = static_cast<int>(p.series.size());
    p.series.push_back(plot.series[i]);
  }
  for (VLine& v : p.vlines)
    v.series = v.series >= 0 && v.series < static_cast<int>(new_index.size()) ? new_index[v.series]
                                                                              : -1;
  if (p.series.empty()) return Skip(dir, p.name, "no data points (nothing measured for it)");

  // The data's extent, to keep gnuplot's autoscale from collapsing a range
  // of one value to +-1% around it.
  std::set<double> xs;
  double ymin = INFINITY, ymax = -INFINITY;
  for (const Series& s : p.series) {
    const bool band = s.band.size() == s.points.size();
    for (size_t i = 0; i < s.points.size(); ++i) {
      xs.insert(s.points[i].first);
      ymin = std::min(ymin, s.points[i].second);
      ymax = std::max(ymax, s.points[i].second);
      if (band) {
        ymin = std::min(ymin, s.band[i].first);
        ymax = std::max(ymax, s.band[i].second);
      }
    }
  }
  const double xmin = *xs.begin(), xmax = *xs.rbegin();

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
  std::remove((base + ".txt").c_str());  // a skip note of an earlier run
  std::ofstream gp(base + ".gp");
  gp << kHeader;
  gp << "set output " << Quote(base + ".png") << "\n";
  gp << "set title " << Quote(p.title) << "\n";
  gp << "set xlabel " << Quote(p.xlabel) << "\nset ylabel " << Quote(p.ylabel) << "\n";
  std::vector<std::string> key_titles;
  for (const Series& s : p.series) key_titles.push_back(s.title);
  for (const VLine& v : p.vlines) key_titles.push_back(v.label);
  WriteCaption(gp, p.caption, key_titles);

  // x axis.
  const bool logx = p.logx && xmin > 0;
  if (p.discrete_x) {
    // Ticks at the measured values only, never at 1.5 vCPUs.
    std::vector<std::string> tics;
    for (double x : xs) tics.push_back(absl::StrFormat("\"%g\" %g", x, x));
    gp << "set xtics (" << absl::StrJoin(tics, ", ") << ")\nunset mxtics\n";
    if (logx) {
      gp << "set logscale x 2\nset xrange " << Range(xmin / 1.4, xmax * 1.4) << "\n";
    } else {
      const double pad = std::max(0.5, 0.05 * (xmax - xmin));
      gp << "set xrange " << Range(xmin - pad, xmax + pad) << "\n";
    }
  } else {
    if (logx) gp << "set logscale x\n";
    if (xmin == xmax) {
      const double d = xmin != 0 ? std::fabs(xmin) / 2 : 1;
      gp << "set xrange " << (logx ? Range(xmin / 2, xmax * 2) : Range(xmin - d, xmax + d))
         << "\n";
    }
  }

  // y axis.
  const bool logy = p.logy && ymin > 0;
  if (logy) gp << "set logscale y\n";
  if (ymin == ymax) {
    // One value (one point, or all equal): show it against zero.
    const double y = ymin;
    gp << "set yrange "
       << (logy ? Range(y / 2, y * 2)
           : y > 0 ? Range(0, 2 * y)
           : y < 0 ? Range(2 * y, 0)
                   : Range(0, 1))
       << "\n";
  } else if (p.y_from_zero && !logy && ymin >= 0) {
    gp << "set yrange [0:*]\n";
  }

  for (size_t n = 0; n < p.vlines.size(); ++n) {
    const VLine& v = p.vlines[n];
    const std::string colour = v.series >= 0 ? absl::StrCat(v.series + 1) : "rgb 'black'";
    gp << absl::StrFormat(
        "set arrow %d from %g, graph 0 to %g, graph 1 nohead dt 2 lw 2 lc %s front\n", n + 1, v.x,
        v.x, colour);
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
  // The vertical lines' key entries (a line of their style, no data).
  for (const VLine& v : p.vlines) {
    const std::string colour = v.series >= 0 ? absl::StrCat(v.series + 1) : "rgb 'black'";
    gp << ", NaN with lines dt 2 lw 2 lc " << colour << " title " << Quote(v.label);
  }
  gp << "\n";
  gp.close();
  return RunGnuplot(base + ".gp");
}

absl::Status Render(const StackedBars& p, const std::string& dir) {
  if (p.bars.empty() || p.parts.empty()) return Skip(dir, p.name, "no bars (nothing measured)");
  double top = 0;
  for (const auto& [category, values] : p.bars) {
    double sum = 0;
    for (double v : values) sum += std::max(0.0, v);
    top = std::max(top, sum);
  }
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
  std::remove((base + ".txt").c_str());
  std::ofstream gp(base + ".gp");
  gp << kHeader;
  gp << "set output " << Quote(base + ".png") << "\n";
  gp << "set title " << Quote(p.title) << "\nset ylabel " << Quote(p.ylabel) << "\n";
  WriteCaption(gp, p.caption, p.parts);
  // Category labels at 45 degrees, ending at their bar: parallel, so they
  // cannot run into each other however many bars there are.
  gp << "set style data histograms\nset style histogram rowstacked\n"
        "set style fill solid 0.8 border -1\nset boxwidth 0.7\n"
        "set xtics rotate by 45 right nomirror\n";
  if (top == 0) gp << "set yrange [0:1]\n";  // every bar empty: not a +-1% axis
  else gp << "set yrange [0:*]\n";
  gp << "plot for [i=2:" << p.parts.size() + 1 << "] " << Quote(base + ".dat")
     << " using i:xtic(1) title columnheader(i)\n";
  gp.close();
  return RunGnuplot(base + ".gp");
}

}  // namespace ferry::bench
