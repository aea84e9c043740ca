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

}  // namespace
}  // namespace ferry::bench
