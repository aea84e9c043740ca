// The guest-impact arithmetic from recorded samples: baseline, stitching the
// two sides, sliding-window minimum utilization, time below half speed.
#include "migration/guest_impact.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

constexpr int64_t kMs = 1'000'000;

// A trace of `vcpus` vCPUs sampled every `step_ms` from t0_ms to t1_ms,
// each vCPU doing rate_fn(t_ms) ops per ms (per vCPU v: scaled by
// scale[v]).
template <typename RateFn>
vmm::OpsTrace MakeTrace(int vcpus, int64_t t0_ms, int64_t t1_ms, int64_t step_ms, RateFn rate,
                        std::vector<double> scale = {}) {
  vmm::OpsTrace t;
  t.vcpus = vcpus;
  std::vector<double> acc(vcpus, 0);
  for (int64_t ms = t0_ms; ms <= t1_ms; ms += step_ms) {
    t.t_ns.push_back(ms * kMs);
    for (int v = 0; v < vcpus; ++v) {
      if (ms > t0_ms) acc[v] += rate(ms - step_ms) * step_ms * (scale.empty() ? 1 : scale[v]);
      t.ops.push_back(static_cast<uint64_t>(acc[v]));
    }
  }
  return t;
}

TEST(Baseline, IsTheRateOverTheLastSecondAfterWarmUp) {
  // 2 vCPUs at 100 ops/ms each; the VM ran 5 s before the migration.
  vmm::OpsTrace t = MakeTrace(2, 0, 5000, 2, [](int64_t) { return 100.0; });
  absl::StatusOr<Baseline> b = MeasureBaseline(t, 1, 5000 * kMs);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NEAR(b->ops_per_sec, 200'000, 200);
  EXPECT_DOUBLE_EQ(b->window_ms, 1000);
  EXPECT_EQ(b->counted, (std::vector<bool>{true, true}));
}

TEST(Baseline, SkipsTheWarmUpOfAYoungVm) {
  // Slow for the first 250 ms (warming up), then 100 ops/ms.
  vmm::OpsTrace t =
      MakeTrace(1, 0, 600, 2, [](int64_t ms) { return ms < 250 ? 1.0 : 100.0; });
  absl::StatusOr<Baseline> b = MeasureBaseline(t, 1, 600 * kMs);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NEAR(b->window_ms, 350, 2);  // between the samples at 252 and 600 ms
  EXPECT_NEAR(b->ops_per_sec, 100'000, 500);
}

TEST(Baseline, IsRefusedForAVmThatRanTooBriefly) {
  vmm::OpsTrace t = MakeTrace(1, 0, 300, 2, [](int64_t) { return 100.0; });
  absl::StatusOr<Baseline> b = MeasureBaseline(t, 1, 300 * kMs);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(b.status().message().find("ran 300 ms"), std::string::npos) << b.status();
}

TEST(Baseline, IsRefusedWithoutSamplesOrOps) {
  EXPECT_FALSE(MeasureBaseline(vmm::OpsTrace{1, {}, {}}, 0, 5000 * kMs).ok());
  vmm::OpsTrace idle = MakeTrace(2, 0, 5000, 2, [](int64_t) { return 0.0; });
  absl::StatusOr<Baseline> b = MeasureBaseline(idle, 1, 5000 * kMs);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("no op"), std::string::npos);
}

TEST(Baseline, LeavesOutAVcpuWithNoOps) {
  // vCPU 1 did nothing before the migration (halted or idle): it is not
  // counted, so the others' throughput is the whole baseline.
  vmm::OpsTrace t = MakeTrace(2, 0, 3000, 2, [](int64_t) { return 50.0; }, {1, 0});
  absl::StatusOr<Baseline> b = MeasureBaseline(t, 1, 3000 * kMs);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->counted, (std::vector<bool>{true, false}));
  EXPECT_NEAR(b->ops_per_sec, 50'000, 100);
  // Its later ops (had it any) are not counted either.
  vmm::OpsTrace later = MakeTrace(2, 3000, 4000, 2, [](int64_t) { return 50.0; }, {1, 5});
  absl::StatusOr<GuestTimeline> tl = Stitch(later, 4000 * kMs, nullptr, b->counted);
  ASSERT_TRUE(tl.ok());
  EXPECT_NEAR(tl->ops.back() - tl->ops.front(), 50'000, 100);
}

TEST(MinUtilization, OfASteadyGuestIsOne) {
  vmm::OpsTrace t = MakeTrace(1, 0, 2000, 2, [](int64_t) { return 100.0; });
  absl::StatusOr<GuestTimeline> tl = Stitch(t, 2000 * kMs, nullptr, {true});
  ASSERT_TRUE(tl.ok());
  for (int64_t w : {10, 100, 1000})
    EXPECT_NEAR(MinUtilization(*tl, 100'000, 0, 2000 * kMs, w * kMs), 1.0, 1e-9) << w;
  EXPECT_DOUBLE_EQ(BelowHalfMs(*tl, 100'000, 0, 2000 * kMs), 0);
}

TEST(MinUtilization, FindsAStopWhereverItIs) {
  // Full speed except a 30 ms stop at 1000..1030 ms (sampled every 2 ms).
  auto rate = [](int64_t ms) { return ms >= 1000 && ms < 1030 ? 0.0 : 100.0; };
  vmm::OpsTrace t = MakeTrace(1, 0, 3000, 2, rate);
  absl::StatusOr<GuestTimeline> tl = Stitch(t, 3000 * kMs, nullptr, {true});
  ASSERT_TRUE(tl.ok());
  const double base = 100'000;
  EXPECT_NEAR(MinUtilization(*tl, base, 0, 3000 * kMs, 10 * kMs), 0.0, 1e-9);
  EXPECT_NEAR(MinUtilization(*tl, base, 0, 3000 * kMs, 100 * kMs), 0.7, 1e-9);
  EXPECT_NEAR(MinUtilization(*tl, base, 0, 3000 * kMs, 1000 * kMs), 0.97, 1e-9);
  // The 10 ms bins 1000..1030 are below half (the stop is bin aligned).
  EXPECT_DOUBLE_EQ(BelowHalfMs(*tl, base, 0, 3000 * kMs), 30);
  // A window that must lie in a span without the stop sees none.
  EXPECT_NEAR(MinUtilization(*tl, base, 1030 * kMs, 3000 * kMs, 10 * kMs), 1.0, 1e-9);
}

TEST(MinUtilization, AtTheEdgesOfTheSpan) {
  // The stop is at the very start and the very end of the span.
  auto rate = [](int64_t ms) { return ms < 20 || ms >= 980 ? 0.0 : 100.0; };
  vmm::OpsTrace t = MakeTrace(1, 0, 1000, 2, rate);
  absl::StatusOr<GuestTimeline> tl = Stitch(t, 1000 * kMs, nullptr, {true});
  ASSERT_TRUE(tl.ok());
  EXPECT_NEAR(MinUtilization(*tl, 100'000, 0, 1000 * kMs, 20 * kMs), 0.0, 1e-9);
  EXPECT_NEAR(MinUtilization(*tl, 100'000, 0, 1000 * kMs, 40 * kMs), 0.5, 1e-9);
  // A span shorter than the window is one window: 960 of 1000 ms ran.
  EXPECT_NEAR(MinUtilization(*tl, 100'000, 0, 1000 * kMs, 5000 * kMs), 0.96, 1e-9);
  // 0..20 and 980..995: the last bin (990..995) is partial and counts 5 ms.
  EXPECT_DOUBLE_EQ(BelowHalfMs(*tl, 100'000, 0, 995 * kMs), 35);
  EXPECT_DOUBLE_EQ(MinUtilization(*tl, 100'000, 500 * kMs, 500 * kMs, 10 * kMs), 1.0);
}

TEST(MinUtilization, IsClippedToOneAndNeverNegative) {
  vmm::OpsTrace t = MakeTrace(1, 0, 1000, 2, [](int64_t) { return 300.0; });
  absl::StatusOr<GuestTimeline> tl = Stitch(t, 1000 * kMs, nullptr, {true});
  ASSERT_TRUE(tl.ok());
  EXPECT_DOUBLE_EQ(MinUtilization(*tl, 100'000, 0, 1000 * kMs, 10 * kMs), 1.0);
  // Before the first sample and after the last: no ops known, so none.
  EXPECT_DOUBLE_EQ(MinUtilization(*tl, 100'000, 1000 * kMs, 1100 * kMs, 10 * kMs), 0.0);
}

TEST(Stitch, TheDestinationContinuesAfterThePause) {
  // Source: 100 ops/ms until the pause at 1000 ms (then constant); the
  // destination resumes 5 ms later on the source clock and runs at 100.
  vmm::OpsTrace src = MakeTrace(2, 0, 1005, 1, [](int64_t ms) { return ms < 1000 ? 50.0 : 0.0; });
  vmm::OpsTrace dst;
  dst.vcpus = 2;
  const uint64_t at_pause = src.ops[1000 * 2];
  for (int64_t ms = 0; ms <= 500; ++ms) {
    dst.t_ns.push_back(ms * kMs);
    for (int v = 0; v < 2; ++v) dst.ops.push_back(at_pause + 50 * ms);
  }
  absl::StatusOr<GuestTimeline> tl = Stitch(src, 1005 * kMs, &dst, {true, true});
  ASSERT_TRUE(tl.ok()) << tl.status();
  EXPECT_NEAR(OpsAt(*tl, 1000 * kMs), 100'000, 1);
  EXPECT_NEAR(OpsAt(*tl, 1005 * kMs), 100'000, 1);
  EXPECT_NEAR(OpsAt(*tl, 1105 * kMs), 110'000, 1);
  // The 5 ms pause: 10 ms windows dip to one half at worst, and one 10 ms
  // bin straddles the pause at 0.5 (not below half).
  EXPECT_NEAR(MinUtilization(*tl, 100'000, 500 * kMs, 1500 * kMs, 10 * kMs), 0.5, 1e-9);
  EXPECT_NEAR(MinUtilization(*tl, 100'000, 500 * kMs, 1500 * kMs, 5 * kMs), 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(BelowHalfMs(*tl, 100'000, 500 * kMs, 1500 * kMs), 0);

  // A destination whose counters restarted at zero is placed on top of
  // the source's count.
  vmm::OpsTrace zeroed = dst;
  for (uint64_t& o : zeroed.ops) o -= at_pause;
  absl::StatusOr<GuestTimeline> tl2 = Stitch(src, 1005 * kMs, &zeroed, {true, true});
  ASSERT_TRUE(tl2.ok());
  EXPECT_NEAR(OpsAt(*tl2, 1105 * kMs), 110'000, 1);
}

TEST(Stitch, RejectsADestinationTraceThatDoesNotFit) {
  vmm::OpsTrace src = MakeTrace(2, 0, 100, 1, [](int64_t) { return 1.0; });
  vmm::OpsTrace wrong_vcpus{1, {0, 1}, {1, 2}};
  EXPECT_EQ(Stitch(src, 100 * kMs, &wrong_vcpus, {true, true}).status().code(),
            absl::StatusCode::kInvalidArgument);
  vmm::OpsTrace short_ops{2, {0, 1}, {1, 2, 3}};
  EXPECT_EQ(Stitch(src, 100 * kMs, &short_ops, {true, true}).status().code(),
            absl::StatusCode::kInvalidArgument);
  vmm::OpsTrace time_back{2, {5, 3}, {200, 200, 201, 201}};
  EXPECT_EQ(Stitch(src, 100 * kMs, &time_back, {true, true}).status().code(),
            absl::StatusCode::kInvalidArgument);
  vmm::OpsTrace ops_back{2, {1, 2}, {300, 300, 299, 299}};
  EXPECT_EQ(Stitch(src, 100 * kMs, &ops_back, {true, true}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(OpsTrace, ThinningKeepsExactCountsAtTheRowsKept) {
  vmm::OpsTrace t = MakeTrace(2, 0, 1000, 1, [](int64_t) { return 3.0; });
  const uint64_t last = t.total(t.rows() - 1);
  t.Thin(100);
  EXPECT_LE(t.rows(), 100u);
  EXPECT_EQ(t.total(t.rows() - 1), last);
  EXPECT_EQ(t.t_ns.front(), 0);
  EXPECT_EQ(t.t_ns.back(), 1000 * kMs);
  for (size_t i = 0; i < t.rows(); ++i) EXPECT_EQ(t.total(i), 6 * (t.t_ns[i] / kMs));
}

}  // namespace
}  // namespace ferry::migration
