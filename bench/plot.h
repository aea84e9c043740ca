// Plots as PNG files, rendered by gnuplot (Debian's gnuplot-nox, installed by
// ./dev setup). For each plot the data (.dat) and the script (.gp) are
// written next to the PNG, so a plot can be re-rendered or restyled by hand.
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

struct LinePlot {
  std::string name;  // file stem: DIR/name.png
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  std::vector<Series> series;
  std::vector<std::pair<double, std::string>> vlines;  // x, label
};

// Stacked bars: one bar per category, one stacked segment per part.
struct StackedBars {
  std::string name, title, ylabel;
  std::vector<std::string> parts;
  std::vector<std::pair<std::string, std::vector<double>>> bars;  // category, one value per part
};

// FailedPrecondition naming the package when gnuplot is not installed.
absl::Status Render(const LinePlot& plot, const std::string& dir);
absl::Status Render(const StackedBars& plot, const std::string& dir);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_PLOT_H_
