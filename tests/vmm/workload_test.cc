#include "vmm/workload.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>
#include <vector>

#include "base/clock.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;

constexpr uint32_t kPage = 4096;

TEST(Workload, ParsesEveryKindByName) {
  for (auto kind : {WorkloadKind::kIdle, WorkloadKind::kSequential, WorkloadKind::kUniform,
                    WorkloadKind::kZipf, WorkloadKind::kDirtyRate, WorkloadKind::kHotset})
    EXPECT_THAT(ParseWorkloadKind(WorkloadKindName(kind)), IsOkAndHolds(kind));
  EXPECT_THAT(ParseWorkloadKind("memcached"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Workload, ValidateRejectsBadParameters) {
  WorkloadSpec s;
  s.zero_fraction = 1.5;
  EXPECT_THAT(ValidateWorkload(s), StatusIs(absl::StatusCode::kInvalidArgument));
  s = {};
  s.kind = WorkloadKind::kDirtyRate;
  s.dirty_bytes_per_sec = 0;
  EXPECT_THAT(ValidateWorkload(s), StatusIs(absl::StatusCode::kInvalidArgument));
  for (double bad : {0.0, -0.1, 1.5}) {
    s = {};
    s.kind = WorkloadKind::kHotset;
    s.hot_fraction = bad;
    EXPECT_THAT(ValidateWorkload(s),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("hot fraction")));
    s = {};
    s.kind = WorkloadKind::kHotset;
    s.hot_access_fraction = bad;
    EXPECT_THAT(ValidateWorkload(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                              ::testing::HasSubstr("hot access fraction")));
  }
  s = {};
  s.kind = static_cast<WorkloadKind>(0);
  EXPECT_THAT(ValidateWorkload(s), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Workload, InitialMemoryHasTheRequestedZeroFraction) {
  WorkloadSpec s;
  s.zero_fraction = 0.5;
  constexpr uint64_t kPages = 4096;
  std::vector<uint8_t> ram(kPages * kPage, 0);
  uint64_t written = FillInitialPages(s, ram.data(), kPage, 0, kPages);
  EXPECT_NEAR(static_cast<double>(written) / kPages, 0.5, 0.05);
  for (uint64_t p = 0; p < kPages; ++p) {
    bool all_zero = true;
    for (uint32_t i = 0; i < kPage; ++i) all_zero &= ram[p * kPage + i] == 0;
    EXPECT_EQ(all_zero, InitialPageIsZero(s, p)) << p;
  }
}

TEST(Workload, ReplayIsDeterministicAndSeedDependent) {
  constexpr uint64_t kPages = 256;
  for (auto kind : {WorkloadKind::kSequential, WorkloadKind::kUniform, WorkloadKind::kZipf,
                    WorkloadKind::kDirtyRate, WorkloadKind::kHotset}) {
    WorkloadSpec s;
    s.kind = kind;
    s.ops_per_vcpu = 5000;
    std::vector<uint8_t> a(kPages * kPage), b(kPages * kPage), c(kPages * kPage);
    FillInitialPages(s, a.data(), kPage, 0, kPages);
    std::memcpy(b.data(), a.data(), a.size());
    std::memcpy(c.data(), a.data(), a.size());
    std::vector<uint8_t> initial = a;
    ASSERT_OK(RunReference(s, a.data(), kPages, kPage, {s.ops_per_vcpu, s.ops_per_vcpu}));
    ASSERT_OK(RunReference(s, b.data(), kPages, kPage, {s.ops_per_vcpu, s.ops_per_vcpu}));
    EXPECT_EQ(a, b) << WorkloadKindName(kind);
    EXPECT_NE(a, initial) << WorkloadKindName(kind);
    s.seed = 2;
    ASSERT_OK(RunReference(s, c.data(), kPages, kPage, {s.ops_per_vcpu, s.ops_per_vcpu}));
    EXPECT_NE(a, c) << WorkloadKindName(kind);
  }
}

TEST(Workload, AReplayThatCannotFitItsDeadlineIsRefusedEarly) {
  constexpr uint64_t kPages = 256;
  WorkloadSpec s;
  s.kind = WorkloadKind::kUniform;
  std::vector<uint8_t> ram(kPages * kPage);
  FillInitialPages(s, ram.data(), kPage, 0, kPages);
  EXPECT_THAT(RunReference(s, ram.data(), kPages, kPage, {1000, 1000}, MonotonicNowNanos() - 1),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       ::testing::HasSubstr("no time is left")));
  // Billions of ops against a millisecond: refused by the pace of the first
  // ones, saying how long the whole would take.
  EXPECT_THAT(RunReference(s, ram.data(), kPages, kPage, {1ull << 32, 1ull << 32},
                           MonotonicNowNanos() + 1'000'000),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       ::testing::HasSubstr("would take about")));
}

TEST(Workload, VcpusStayInTheirOwnRegions) {
  constexpr uint64_t kPages = 64;
  WorkloadSpec s;
  s.kind = WorkloadKind::kUniform;
  s.write_fraction = 1;
  s.ops_per_vcpu = 10000;
  std::vector<uint8_t> ram(kPages * kPage, 0);
  GuestProgram p1(s, ram.data(), kPages, kPage, 1, 4);  // region: pages 16..31
  uint64_t acc = 0;
  for (uint64_t i = 0; i < s.ops_per_vcpu; ++i) acc = p1.Step(i, acc);
  for (uint64_t p = 0; p < kPages; ++p) {
    bool touched = false;
    for (uint32_t i = 0; i < kPage; ++i) touched |= ram[p * kPage + i] != 0;
    EXPECT_EQ(touched, p >= 16 && p < 32) << p;
  }
}

// Ops (all writing) of `s` on one vCPU over `pages` zero pages: how many
// ops wrote each page (a write leaves a nonzero word; a page's count is its
// nonzero words, which undercounts only when two ops hit one word).
std::vector<int> WritesPerPage(WorkloadSpec s, uint64_t pages, uint64_t ops) {
  s.write_fraction = 1;
  std::vector<uint8_t> ram(pages * kPage, 0);
  GuestProgram p(s, ram.data(), pages, kPage, 0, 1);
  uint64_t acc = 0;
  for (uint64_t i = 0; i < ops; ++i) acc = p.Step(i, acc);
  std::vector<int> writes(pages, 0);
  const auto* words = reinterpret_cast<const uint64_t*>(ram.data());
  for (uint64_t w = 0; w < pages * kPage / 8; ++w) writes[w / (kPage / 8)] += words[w] != 0;
  return writes;
}

int PagesTouched(WorkloadKind kind, uint64_t ops) {
  WorkloadSpec s;
  s.kind = kind;
  int touched = 0;
  for (int w : WritesPerPage(s, 1024, ops)) touched += w > 0;
  return touched;
}

TEST(Workload, ZipfConcentratesOnAHotSet) {
  // 2000 ops over 1024 pages: uniform touches about 1 - e^-2 (86%) of them;
  // Zipf(1) keeps returning to its hot set and touches far fewer.
  int uniform = PagesTouched(WorkloadKind::kUniform, 2000);
  int zipf = PagesTouched(WorkloadKind::kZipf, 2000);
  EXPECT_GT(uniform, 800);
  EXPECT_LT(zipf, uniform * 3 / 4);
  EXPECT_GT(zipf, 100);
}

TEST(Workload, HotsetSendsItsShareToItsHotSet) {
  // 1000 pages, a hot set of 10% (100 pages) taking 90% of the ops, the
  // rest uniform over all pages: the 100 most written pages get about
  // 90% + 10% * 10% = 91% of the writes (45 per hot page, so few land on a
  // word already written), and the cold pages get the other 500.
  WorkloadSpec s;
  s.kind = WorkloadKind::kHotset;
  constexpr uint64_t kPages = 1000, kOps = 5000;
  std::vector<int> writes = WritesPerPage(s, kPages, kOps);
  std::sort(writes.begin(), writes.end(), std::greater<int>());
  int hot = 0, total = 0, touched = 0;
  for (size_t i = 0; i < writes.size(); ++i) {
    if (i < kPages / 10) hot += writes[i];
    total += writes[i];
    touched += writes[i] > 0;
  }
  EXPECT_NEAR(static_cast<double>(hot) / total, 0.91, 0.02);
  // About 1 - e^-0.5 = 39% of the 900 cold pages get a write.
  EXPECT_GT(touched, 100 + 250);
  // The hot set is spread over the region, not its first 10%.
  std::vector<int> by_page = WritesPerPage(s, kPages, kOps);
  int first_tenth = 0;
  for (uint64_t i = 0; i < kPages / 10; ++i) first_tenth += by_page[i];
  EXPECT_LT(first_tenth, total / 4);
  // Other fractions take effect: all ops to a hot set of 1%.
  s.hot_fraction = 0.01;
  s.hot_access_fraction = 1;
  touched = 0;
  for (int w : WritesPerPage(s, kPages, kOps)) touched += w > 0;
  EXPECT_EQ(touched, 10);
}

TEST(Workload, PacedKindsHaveIntervals) {
  WorkloadSpec s;
  s.kind = WorkloadKind::kDirtyRate;
  s.dirty_bytes_per_sec = 16 << 20;
  EXPECT_EQ(OpIntervalNanos(s, kPage), 1'000'000'000LL / 4096);
  s.kind = WorkloadKind::kIdle;
  EXPECT_EQ(OpIntervalNanos(s, kPage), 1'000'000);
  s.kind = WorkloadKind::kUniform;
  EXPECT_EQ(OpIntervalNanos(s, kPage), 0);
}

}  // namespace
}  // namespace ferry::vmm
