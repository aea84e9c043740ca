// The harness's statistics, output writers and plotting path.
#include <fstream>
#include <sstream>

#include "base/status_matchers.h"
#include "bench/output.h"
#include "bench/plot.h"
#include "bench/stats.h"
#include "gtest/gtest.h"

namespace ferry::bench {
namespace {

using ::ferry::testing::StatusIs;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TempDir() {
  const char* t = getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

TEST(Stats, QuantilesInterpolateBetweenOrderStatistics) {
  EXPECT_EQ(Quantile({}, 0.5), 0);
  EXPECT_EQ(Quantile({7}, 0.9), 7);
  EXPECT_EQ(Quantile({3, 1, 2}, 0.5), 2);
  EXPECT_EQ(Quantile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_EQ(Quantile({1, 2, 3, 4, 5}, 0.25), 2);
  EXPECT_DOUBLE_EQ(Quantile({10, 20}, 0.1), 11);
  EXPECT_EQ(Quantile({5, 1}, 0), 1);
  EXPECT_EQ(Quantile({5, 1}, 1), 5);
}

TEST(Stats, SummaryGivesMedianAndSpread) {
  Summary s = Summarize({9, 1, 5, 3, 7});
  EXPECT_EQ(s.n, 5u);
  EXPECT_EQ(s.median, 5);
  EXPECT_EQ(s.min, 1);
  EXPECT_EQ(s.max, 9);
  EXPECT_EQ(s.p25, 3);
  EXPECT_EQ(s.p75, 7);
  EXPECT_EQ(s.iqr(), 4);
  EXPECT_EQ(Summarize({}).n, 0u);
}

TEST(Stats, MedianIndexPicksTheMiddleRun) {
  EXPECT_EQ(MedianIndex({30, 10, 20}), 2u);
  EXPECT_EQ(MedianIndex({4, 1, 3, 2}), 3u);  // the lower middle of 2 and 3
  EXPECT_EQ(MedianIndex({}), 0u);
}

TEST(Output, WritesJsonLinesAndOneCsvPerScenario) {
  const std::string dir = TempDir() + "/out1";
  ASSERT_OK_AND_ASSIGN(auto sink, ResultSink::Open(dir));
  ASSERT_OK(sink->Write("migrate", Row().Add("mode", "postcopy").Add("downtime_ms", 2.5)
                                       .Add("pages", uint64_t{42}).Add("digest_match", true)));
  ASSERT_OK(sink->Write("migrate", Row().Add("mode", "a,\"b\"").Add("downtime_ms", 3.0)
                                       .Add("pages", uint64_t{7}).Add("digest_match", false)));
  ASSERT_OK(sink->Write("reference", Row().Add("tcp_gbps", 30.5)));
  EXPECT_EQ(Slurp(dir + "/results.jsonl"),
            "{\"mode\":\"postcopy\",\"downtime_ms\":2.5,\"pages\":42,\"digest_match\":true}\n"
            "{\"mode\":\"a,\\\"b\\\"\",\"downtime_ms\":3,\"pages\":7,\"digest_match\":false}\n"
            "{\"tcp_gbps\":30.5}\n");
  EXPECT_EQ(Slurp(dir + "/migrate.csv"),
            "mode,downtime_ms,pages,digest_match\n"
            "postcopy,2.5,42,true\n"
            "\"a,\"\"b\"\"\",3,7,false\n");
  EXPECT_EQ(Slurp(dir + "/reference.csv"), "tcp_gbps\n30.5\n");
}

TEST(Output, RowsOfAScenarioMustKeepTheirColumns) {
  ASSERT_OK_AND_ASSIGN(auto sink, ResultSink::Open(TempDir() + "/out2"));
  ASSERT_OK(sink->Write("s", Row().Add("a", 1)));
  EXPECT_THAT(sink->Write("s", Row().Add("b", 1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Plot, RendersLinePlotsAndStackedBarsAsPng) {
  const std::string dir = TempDir();
  LinePlot line;
  line.name = "tiny_line";
  line.title = "guest ops/s";
  line.xlabel = "t (ms)";
  line.ylabel = "ops/s";
  line.series = {{"hybrid", {{0, 1}, {100, 3}, {200, 2}}}, {"baseline", {{0, 2}, {200, 2}}}};
  line.vlines = {{120, "switchover"}};
  ASSERT_OK(Render(line, dir));
  std::string png = Slurp(dir + "/tiny_line.png");
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  StackedBars bars;
  bars.name = "tiny_bars";
  bars.title = "bytes by phase";
  bars.ylabel = "MiB";
  bars.parts = {"precopy", "push"};
  bars.bars = {{"zipf hybrid", {10, 2}}, {"zipf postcopy", {0, 12}}};
  ASSERT_OK(Render(bars, dir));
  png = Slurp(dir + "/tiny_bars.png");
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
}

// Small runs make degenerate data. One point: neither axis may collapse to
// gnuplot's +-1% around it (the "1 vCPU, 0.99 to 1.01" axis); the y range
// goes from 0 to twice the value.
TEST(Plot, OnePointGetsPaddedRangesNotACollapsedAxis) {
  const std::string dir = TempDir();
  LinePlot line;
  line.name = "one_point";
  line.title = "downtime";
  line.xlabel = "vCPUs";
  line.ylabel = "ms";
  line.series = {{"downtime", {{1, 2.5}}}};
  ASSERT_OK(Render(line, dir));
  std::string gp = Slurp(dir + "/one_point.gp");
  EXPECT_NE(gp.find("set xrange [0.5:1.5]"), std::string::npos) << gp;
  EXPECT_NE(gp.find("set yrange [0:5]"), std::string::npos) << gp;
  EXPECT_EQ(Slurp(dir + "/one_point.png").substr(1, 3), "PNG");

  // All values equal to zero (an MGU curve of a guest that stopped): [0, 1].
  line.name = "all_zero";
  line.series = {{"mgu", {{5, 0}, {10, 0}, {100, 0}}}};
  line.logx = true;
  ASSERT_OK(Render(line, dir));
  gp = Slurp(dir + "/all_zero.gp");
  EXPECT_NE(gp.find("set yrange [0:1]"), std::string::npos) << gp;
  EXPECT_EQ(gp.find("set xrange"), std::string::npos) << gp;  // x spans 5 to 100: autoscaled

  // One value on a log y axis: a factor of two either side.
  line.name = "one_point_log";
  line.logx = false;
  line.logy = true;
  line.series = {{"pages/s", {{4, 1000}}}};
  ASSERT_OK(Render(line, dir));
  gp = Slurp(dir + "/one_point_log.gp");
  EXPECT_NE(gp.find("set yrange [500:2000]"), std::string::npos) << gp;
}

// vCPU counts: ticks at the measured counts only (never at 1.5), on a log2
// axis when asked, with room around the first and last count.
TEST(Plot, DiscreteXTicksOnlyAtTheMeasuredCounts) {
  const std::string dir = TempDir();
  LinePlot line;
  line.name = "vcpus";
  line.title = "rate";
  line.xlabel = "vCPUs";
  line.ylabel = "pages/s";
  line.logx = true;
  line.discrete_x = true;
  line.series = {{"exit", {{1, 10}, {2, 20}, {4, 30}}}, {"blocking", {{1, 5}, {4, 8}, {16, 9}}}};
  ASSERT_OK(Render(line, dir));
  std::string gp = Slurp(dir + "/vcpus.gp");
  EXPECT_NE(gp.find("set xtics (\"1\" 1, \"2\" 2, \"4\" 4, \"16\" 16)"), std::string::npos)
      << gp;
  EXPECT_NE(gp.find("set logscale x 2"), std::string::npos) << gp;
  EXPECT_NE(gp.find("unset mxtics"), std::string::npos) << gp;
  EXPECT_EQ(Slurp(dir + "/vcpus.png").substr(1, 3), "PNG");

  line.name = "vcpus_linear";
  line.logx = false;
  line.y_from_zero = true;
  ASSERT_OK(Render(line, dir));
  gp = Slurp(dir + "/vcpus_linear.gp");
  EXPECT_EQ(gp.find("logscale x"), std::string::npos) << gp;
  EXPECT_NE(gp.find("set xrange [0.25:16.75]"), std::string::npos) << gp;
  EXPECT_NE(gp.find("set yrange [0:*]"), std::string::npos) << gp;
}

// Vertical lines are listed in the key in their series' colour, not
// labelled beside the line (two switchovers 10 ms apart overlapped), and
// the caption (the run's command, date, machine) is in the corner.
TEST(Plot, VerticalLinesGoInTheKeyAndTheCaptionInTheCorner) {
  const std::string dir = TempDir();
  LinePlot line;
  line.name = "vlines";
  line.title = "ops";
  line.xlabel = "ms";
  line.ylabel = "Mops/s";
  line.series = {{"empty", {}}, {"postcopy", {{0, 1}, {100, 2}}}, {"hybrid", {{0, 2}, {100, 1}}}};
  line.vlines = {{50, "postcopy switchover", 1}, {52, "hybrid switchover", 2}, {60, "other"}};
  line.caption = "ferry-bench suite --quick\n2026-12-05 12:00 UTC";
  ASSERT_OK(Render(line, dir));
  const std::string gp = Slurp(dir + "/vlines.gp");
  EXPECT_EQ(gp.find("set label 1 "), std::string::npos) << gp;  // no label beside a line
  // The empty series is left out: postcopy is series 1 (lc 1), hybrid lc 2.
  EXPECT_NE(gp.find("set arrow 1 from 50, graph 0 to 50, graph 1 nohead dt 2 lw 2 lc 1 "),
            std::string::npos) << gp;
  EXPECT_NE(gp.find("NaN with lines dt 2 lw 2 lc 1 title \"postcopy switchover\""),
            std::string::npos) << gp;
  EXPECT_NE(gp.find("NaN with lines dt 2 lw 2 lc 2 title \"hybrid switchover\""),
            std::string::npos) << gp;
  EXPECT_NE(gp.find("lc rgb 'black' title \"other\""), std::string::npos) << gp;
  EXPECT_NE(gp.find("set label 1000 \"ferry-bench suite --quick\\n2026-12-05 12:00 UTC\""),
            std::string::npos) << gp;
  EXPECT_EQ(Slurp(dir + "/vlines.png").substr(1, 3), "PNG");
}

// Nothing to draw: no PNG (a stale one is removed) and a note saying why.
TEST(Plot, APlotWithNoPointsIsSkippedWithANote) {
  const std::string dir = TempDir();
  { std::ofstream(dir + "/nothing.png") << "stale"; }
  LinePlot line;
  line.name = "nothing";
  line.series = {{"a", {}}};
  ASSERT_OK(Render(line, dir));
  EXPECT_FALSE(std::ifstream(dir + "/nothing.png").good());
  EXPECT_NE(Slurp(dir + "/nothing.txt").find("not drawn"), std::string::npos);

  StackedBars bars;
  bars.name = "no_bars";
  bars.parts = {"precopy"};
  ASSERT_OK(Render(bars, dir));
  EXPECT_FALSE(std::ifstream(dir + "/no_bars.png").good());
  EXPECT_NE(Slurp(dir + "/no_bars.txt").find("not drawn"), std::string::npos);

  // Drawn later in the same directory: the note goes.
  line.series = {{"a", {{0, 1}, {1, 2}}}};
  ASSERT_OK(Render(line, dir));
  EXPECT_FALSE(std::ifstream(dir + "/nothing.txt").good());
  EXPECT_EQ(Slurp(dir + "/nothing.png").substr(1, 3), "PNG");
}

}  // namespace
}  // namespace ferry::bench
