// `ferry-bench compare`'s arithmetic: figures out of JSON lines, ratios,
// spreads, verdicts and their direction, and what it does with bad input.
#include "bench/compare.h"

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry::bench {
namespace {

using ::ferry::testing::StatusIs;

const FieldComparison* Find(const std::vector<FieldComparison>& fields, const std::string& name) {
  for (const FieldComparison& f : fields)
    if (f.field == name) return &f;
  return nullptr;
}

TEST(NumericFields, KeepsTopLevelNumbersOnly) {
  ASSERT_OK_AND_ASSIGN(
      Figures f, NumericFields(R"({"scenario":"migrate","total_ms":1234.5,"pages_sent":262144,)"
                               R"("digest_match":true,"timeline_t_ms":[1,2,3],"nested":{"x_ms":1},)"
                               R"("fault_p50_us":null,"precopy_gbps":-0.5e1})"));
  EXPECT_EQ(f.size(), 3u);
  EXPECT_EQ(f["total_ms"], 1234.5);
  EXPECT_EQ(f["pages_sent"], 262144);
  EXPECT_EQ(f["precopy_gbps"], -5);
}

TEST(NumericFields, RefusesWhatIsNotOneObject) {
  EXPECT_THAT(NumericFields("vcpus mode pages/s"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NumericFields(R"({"total_ms": 12,)"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NumericFields("[1, 2]"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(NumericFields(R"({"a": 1} trailing)"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseRunOutput, ReadsEveryObjectLineAndSkipsTheRest) {
  ASSERT_OK_AND_ASSIGN(RunFigures run, ParseRunOutput("a table header\n"
                                                      "{\"pages_per_sec\": 10}\n"
                                                      "\n"
                                                      "  {\"pages_per_sec\": 20}\n"));
  ASSERT_EQ(run.size(), 2u);
  EXPECT_EQ(run[0]["pages_per_sec"], 10);
  EXPECT_EQ(run[1]["pages_per_sec"], 20);
  ASSERT_OK_AND_ASSIGN(RunFigures none, ParseRunOutput(""));
  EXPECT_TRUE(none.empty());
}

TEST(ParseRunOutput, NamesTheLineOfABrokenObject) {
  auto run = ParseRunOutput("{\"a\": 1}\n{\"a\": \n");
  EXPECT_THAT(run, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(run.status().message().find("output line 2"), std::string::npos)
      << run.status().message();
}

TEST(BetterDirection, FollowsTheFieldName) {
  EXPECT_EQ(BetterDirection("precopy_gbps"), Better::kHigher);
  EXPECT_EQ(BetterDirection("tcp_gbps"), Better::kHigher);
  EXPECT_EQ(BetterDirection("pages_per_sec"), Better::kHigher);
  EXPECT_EQ(BetterDirection("gbytes_per_sec"), Better::kHigher);
  EXPECT_EQ(BetterDirection("mgu_10ms"), Better::kHigher);  // not a time, despite "ms"
  EXPECT_EQ(BetterDirection("precopy_mgu_100ms"), Better::kHigher);
  EXPECT_EQ(BetterDirection("total_ms"), Better::kLower);
  EXPECT_EQ(BetterDirection("fault_p50_us"), Better::kLower);
  EXPECT_EQ(BetterDirection("seconds"), Better::kLower);
  EXPECT_EQ(BetterDirection("[2] fault_p99_us"), Better::kLower);
  EXPECT_EQ(BetterDirection("[0] pages_per_sec"), Better::kHigher);
  EXPECT_EQ(BetterDirection("memory_bytes"), Better::kUnknown);
  EXPECT_EQ(BetterDirection("pages_resent"), Better::kUnknown);
  EXPECT_EQ(BetterDirection("vcpus"), Better::kUnknown);
}

TEST(VerdictOf, MarksOnlyASpreadThatExcludesOne) {
  EXPECT_EQ(VerdictOf(Better::kHigher, 0.80, 0.95), Verdict::kWorse);
  EXPECT_EQ(VerdictOf(Better::kHigher, 1.05, 1.20), Verdict::kBetter);
  EXPECT_EQ(VerdictOf(Better::kHigher, 0.90, 1.10), Verdict::kNoise);
  EXPECT_EQ(VerdictOf(Better::kLower, 1.05, 1.20), Verdict::kWorse);
  EXPECT_EQ(VerdictOf(Better::kLower, 0.80, 0.95), Verdict::kBetter);
  EXPECT_EQ(VerdictOf(Better::kLower, 0.90, 1.00), Verdict::kNoise);  // 1.0 is inside
  EXPECT_EQ(VerdictOf(Better::kUnknown, 2.0, 3.0), Verdict::kNone);
}

TEST(VerdictOf, ASpreadWithinTheToleranceIsNoise) {
  // The default: 2 %.
  EXPECT_EQ(VerdictOf(Better::kLower, 1.001, 1.015), Verdict::kNoise);
  EXPECT_EQ(VerdictOf(Better::kHigher, 0.985, 0.999), Verdict::kNoise);
  EXPECT_EQ(VerdictOf(Better::kLower, 1.021, 1.1), Verdict::kWorse);
  EXPECT_EQ(VerdictOf(Better::kLower, 1.001, 1.015, 0), Verdict::kWorse);
  EXPECT_EQ(VerdictOf(Better::kHigher, 0.80, 0.95, 0.10), Verdict::kNoise);
}

TEST(CompareRuns, RatioOfMediansAndSpreadOfPairedRatios) {
  // Three repetitions; repetition i pairs old[i] with new[i].
  std::vector<RunFigures> olds = {{{{"total_ms", 100}, {"precopy_gbps", 4}}},
                                  {{{"total_ms", 200}, {"precopy_gbps", 5}}},
                                  {{{"total_ms", 300}, {"precopy_gbps", 6}}}};
  std::vector<RunFigures> news = {{{{"total_ms", 110}, {"precopy_gbps", 4}}},
                                  {{{"total_ms", 240}, {"precopy_gbps", 5.5}}},
                                  {{{"total_ms", 330}, {"precopy_gbps", 5.4}}}};
  std::vector<FieldComparison> c = CompareRuns(olds, news);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].field, "precopy_gbps");  // sorted by name
  const FieldComparison* t = Find(c, "total_ms");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->old_n, 3u);
  EXPECT_EQ(t->new_n, 3u);
  EXPECT_EQ(t->old_median, 200);
  EXPECT_EQ(t->new_median, 240);
  EXPECT_TRUE(t->has_ratio);
  EXPECT_DOUBLE_EQ(t->ratio, 1.2);
  EXPECT_EQ(t->ratio_n, 3u);
  EXPECT_DOUBLE_EQ(t->ratio_min, 1.1);
  EXPECT_DOUBLE_EQ(t->ratio_max, 1.2);
  EXPECT_EQ(t->better, Better::kLower);
  EXPECT_EQ(t->verdict, Verdict::kWorse);
  const FieldComparison* g = Find(c, "precopy_gbps");
  EXPECT_DOUBLE_EQ(g->ratio, 5.4 / 5);  // of the medians, not the median of the ratios
  EXPECT_DOUBLE_EQ(g->ratio_min, 0.9);
  EXPECT_DOUBLE_EQ(g->ratio_max, 1.1);
  EXPECT_EQ(g->verdict, Verdict::kNoise);
}

TEST(CompareRuns, AFieldOneBuildNeverPrintedIsMissingNotACrash) {
  std::vector<RunFigures> olds = {{{{"total_ms", 100}, {"old_only_ms", 1}}},
                                  {{{"total_ms", 100}, {"old_only_ms", 1}}}};
  std::vector<RunFigures> news = {{{{"total_ms", 90}, {"new_only_ms", 2}}}, {{{"total_ms", 80}}}};
  std::vector<FieldComparison> c = CompareRuns(olds, news);
  ASSERT_EQ(c.size(), 3u);
  const FieldComparison* o = Find(c, "old_only_ms");
  EXPECT_EQ(o->note, "missing in new");
  EXPECT_FALSE(o->has_ratio);
  EXPECT_EQ(o->ratio_n, 0u);
  EXPECT_EQ(o->verdict, Verdict::kNone);
  const FieldComparison* n = Find(c, "new_only_ms");
  EXPECT_EQ(n->note, "missing in old");
  EXPECT_EQ(n->new_n, 1u);  // printed in one repetition of two
  EXPECT_EQ(n->new_median, 2);
  EXPECT_EQ(Find(c, "total_ms")->verdict, Verdict::kBetter);
  // A build whose every run printed nothing: every field missing in it.
  std::vector<FieldComparison> empty = CompareRuns(olds, {{}, {}});
  EXPECT_EQ(Find(empty, "total_ms")->note, "missing in new");
}

TEST(CompareRuns, ZeroInTheOldBuildGivesNoRatio) {
  std::vector<FieldComparison> c = CompareRuns({{{{"stall_ms", 0}}}, {{{"stall_ms", 0}}}},
                                               {{{{"stall_ms", 5}}}, {{{"stall_ms", 6}}}});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_FALSE(c[0].has_ratio);
  EXPECT_EQ(c[0].ratio_n, 0u);
  EXPECT_EQ(c[0].verdict, Verdict::kNone);
  EXPECT_FALSE(c[0].all_zero);
}

TEST(CompareRuns, NoVerdictFromPartOfTheRepetitionsOrFromOne) {
  // Old was 0 in one repetition of three: the two ratios left say nothing
  // about that one.
  std::vector<FieldComparison> c =
      CompareRuns({{{{"mgu_10ms", 0.5}}}, {{{"mgu_10ms", 0}}}, {{{"mgu_10ms", 0.5}}}},
                  {{{{"mgu_10ms", 0.4}}}, {{{"mgu_10ms", 0.3}}}, {{{"mgu_10ms", 0.4}}}});
  EXPECT_EQ(c[0].paired_n, 3u);
  EXPECT_EQ(c[0].ratio_n, 2u);
  EXPECT_TRUE(c[0].has_ratio);
  EXPECT_EQ(c[0].verdict, Verdict::kNone);
  // One repetition: one ratio, no spread.
  c = CompareRuns({{{{"total_ms", 100}}}}, {{{{"total_ms", 200}}}});
  EXPECT_DOUBLE_EQ(c[0].ratio, 2);
  EXPECT_EQ(c[0].verdict, Verdict::kNone);
}

TEST(CompareRuns, ZeroInEveryRunIsListedApart) {
  RunFigures run = {{{"faults", 0}, {"total_ms", 10}}};
  std::vector<FieldComparison> c = CompareRuns({run, run}, {run, run});
  EXPECT_TRUE(Find(c, "faults")->all_zero);
  EXPECT_FALSE(Find(c, "total_ms")->all_zero);
  const std::string table = ComparisonTable("x", 2, c);
  EXPECT_NE(table.find("\n  0 in every run: faults\n"), std::string::npos) << table;
  EXPECT_EQ(table.find("\n  faults "), std::string::npos) << table;
  EXPECT_EQ(ComparisonJson("x", c).size(), 2u);  // JSON keeps every field
}

TEST(CompareRuns, SeveralObjectsPerRunAreNumbered) {
  RunFigures run = {{{"pages_per_sec", 10}}, {{"pages_per_sec", 20}}};
  std::vector<FieldComparison> c = CompareRuns({run}, {run});
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].field, "[0] pages_per_sec");
  EXPECT_EQ(c[1].field, "[1] pages_per_sec");
  EXPECT_EQ(c[1].better, Better::kHigher);
  EXPECT_DOUBLE_EQ(c[1].ratio, 1.0);
}

TEST(ComparisonOutput, TableAndJsonCarryRatioSpreadAndMark) {
  std::vector<RunFigures> olds = {{{{"fault_p50_us", 100}, {"vcpus", 2}}},
                                  {{{"fault_p50_us", 100}, {"vcpus", 2}}}};
  std::vector<RunFigures> news = {{{{"fault_p50_us", 150}, {"vcpus", 2}}},
                                  {{{"fault_p50_us", 120}, {"vcpus", 2}}}};
  std::vector<FieldComparison> c = CompareRuns(olds, news);
  const std::string table = ComparisonTable("migrate --json", 2, c);
  EXPECT_NE(table.find("migrate --json  (2 repetitions per build)"), std::string::npos) << table;
  EXPECT_NE(table.find("1.350"), std::string::npos) << table;
  EXPECT_NE(table.find("1.200..1.500"), std::string::npos) << table;
  EXPECT_NE(table.find("WORSE"), std::string::npos) << table;
  EXPECT_NE(table.find("1 worse, 0 better, 0 within the spread (of 1 figures with a verdict)"),
            std::string::npos)
      << table;
  std::vector<JsonObject> json = ComparisonJson("migrate --json", c);
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0].ToString(),
            R"({"scenario":"migrate --json","field":"fault_p50_us","old_n":2,"new_n":2,)"
            R"("old_median":100,"new_median":135,"ratio":1.35,"ratio_min":1.2,"ratio_max":1.5,)"
            R"("better":"lower","verdict":"worse"})");
  // The JSON line reads back as figures.
  ASSERT_OK_AND_ASSIGN(Figures back, NumericFields(json[1].ToString()));
  EXPECT_EQ(back["ratio"], 1);
}

}  // namespace
}  // namespace ferry::bench
