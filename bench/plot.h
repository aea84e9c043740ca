// Plots as PNG files, rendered by gnuplot (Debian's gnuplot-nox, installed by
// ./dev setup). For each plot the data (.dat) and the script (.gp) are
// written next to the PNG, so a plot can be re-rendered or restyled by hand.
//
// Small runs make degenerate data (one point, all values equal); Render
// never lets gnuplot's autoscale collapse such a range to +-1% around the
// value: an x or y range of one value is padded (y to [0, 2 x value] on a
// linear axis), and a plot with no point at all is skipped with a note
// (DIR/name.txt, and on stderr) instead of a PNG.
#ifndef FERRY_BENCH_PLOT_H_
#define FERRY_BENCH_PLOT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace ferry::bench {

struct Series {
  std::string title;
  std::vector<std::pair<double, double>> points;
  // Optional error band: the lowest and highest y at each point (as many
  // as points), drawn shaded behind the line.
  std::vector<std::pair<double, double>> band;
};

// A dashed vertical line at x, listed in the key as label (not written
// beside the line, where labels of nearby lines overlap); drawn in the
// colour of series `series` (an index into LinePlot::series), or black.
struct VLine {
  double x = 0;
  std::string label;
  int series = -1;
};

struct LinePlot {
  std::string name;  // file stem: DIR/name.png
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  // x is a count measured at a few values (vCPUs 1, 2, 4, 8): ticks only at
  // those values, labelled as integers; with logx the axis is log2.
  bool discrete_x = false;
  // A linear y axis that starts at 0 (a spread of 2.2 to 2.6 ms is not
  // drawn as a steep rise).
  bool y_from_zero = false;
  std::vector<Series> series;
  std::vector<VLine> vlines;
  // Small print in the lower right corner: the run it came from (command,
  // date, machine). Lines separated by '\n'.
  std::string caption;
};

// Stacked bars: one bar per category, one stacked segment per part.
struct StackedBars {
  std::string name, title, ylabel;
  std::vector<std::string> parts;
  std::vector<std::pair<std::string, std::vector<double>>> bars;  // category, one value per part
  std::string caption;  // as LinePlot::caption
};

// FailedPrecondition naming the package when gnuplot is not installed.
absl::Status Render(const LinePlot& plot, const std::string& dir);
absl::Status Render(const StackedBars& plot, const std::string& dir);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_PLOT_H_
