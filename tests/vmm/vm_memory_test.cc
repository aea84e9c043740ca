// Vm::ChangeMemory on software vCPUs: changes while the guest runs, pins and
// refusals, and a property test of random transaction sequences against a
// model of the map, with the digest compared to a replay.
#include <algorithm>
#include <random>
#include <thread>

#include "base/eventually.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/fault_injecting_page_source.h"
#include "vmm/vm.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

VmConfig Config(WorkloadKind kind) {
  VmConfig c;
  c.memory_bytes = 16 * kMiB;
  c.max_memory_bytes = 64 * kMiB;
  c.vcpus = 2;
  c.workload.kind = kind;
  c.workload.ops_per_vcpu = 0;  // until stopped
  c.workload.seed = 11;
  c.workload.zero_fraction = 0.25;
  c.workload.dirty_bytes_per_sec = 512ull << 20;  // dirty-rate: 131072 ops/s
  return c;
}

std::vector<uint64_t> Ops(const Vm& vm) {
  std::vector<uint64_t> ops;
  for (const VcpuStats& s : vm.Stats().vcpus) ops.push_back(s.counters.ops);
  return ops;
}

void WaitForOps(const Vm& vm, uint64_t more) {
  const uint64_t target = vm.Stats().total_ops + more;
  EXPECT_TRUE(Eventually([&] { return vm.Stats().total_ops >= target; }, absl::Seconds(60)));
}

void ExpectDigestEqualsReplay(Vm& vm) {
  ASSERT_OK(vm.Pause());
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm.Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want,
                       ReferenceDigest(vm.config(), Ops(vm), vm.MemoryHistory()));
  ASSERT_EQ(got.page_hashes.size(), want.page_hashes.size());
  EXPECT_EQ(got.digest, want.digest)
      << DifferingPages(got, want).size() << " pages differ from the replay";
}

class VmMemoryTest : public ::testing::TestWithParam<WorkloadKind> {};

TEST_P(VmMemoryTest, GrowAddShrinkRemoveWhileTheGuestRuns) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(Config(GetParam())));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  WaitForOps(*vm, 20000);
  const std::vector<std::vector<MemoryChange>> steps = {
      {MemoryChange::Resize("ram", 32 * kMiB)},
      {MemoryChange::Add("dimm0", kGiB, 8 * kMiB)},
      {MemoryChange::Resize("ram", 8 * kMiB), MemoryChange::Resize("dimm0", 16 * kMiB)},
      {MemoryChange::Remove("dimm0")},
      {MemoryChange::Resize("ram", 24 * kMiB)},
  };
  for (const auto& step : steps) {
    ASSERT_OK_AND_ASSIGN(MemoryChangeResult r, vm->ChangeMemory(MemoryTransaction{step}));
    EXPECT_EQ(r.memory_bytes, vm->memory().size());
    EXPECT_GT(r.held_off_ns, 0);
    WaitForOps(*vm, 20000);  // the guest goes on, over the new map
    ASSERT_OK(vm->Health());
  }
  EXPECT_EQ(vm->memory().size(), 24 * kMiB);
  EXPECT_EQ(vm->MemoryHistory().size(), steps.size());
  ExpectDigestEqualsReplay(*vm);
  vm->Stop();
}

INSTANTIATE_TEST_SUITE_P(Workloads, VmMemoryTest,
                         ::testing::Values(WorkloadKind::kSequential, WorkloadKind::kUniform,
                                           WorkloadKind::kHotset, WorkloadKind::kDirtyRate),
                         [](const auto& info) {
                           std::string name = WorkloadKindName(info.param);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(VmMemory, ARefusedTransactionChangesNothingAndTheGuestGoesOn) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(Config(WorkloadKind::kUniform)));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  WaitForOps(*vm, 1000);
  EXPECT_THAT(vm->ChangeMemory({{MemoryChange::Resize("ram", 32 * kMiB),
                                 MemoryChange::Add("bad", 8 * kMiB, kMiB)}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("change 2")));
  EXPECT_THAT(vm->ChangeMemory({{MemoryChange::Resize("ram", 128 * kMiB)}}),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("maximum is 64 MiB")));
  EXPECT_EQ(vm->memory().size(), 16 * kMiB);
  EXPECT_TRUE(vm->MemoryHistory().empty());
  WaitForOps(*vm, 1000);
  ExpectDigestEqualsReplay(*vm);
  vm->Stop();
}

TEST(VmMemory, APinOrADirtyLogHoldsTheMapStill) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(Config(WorkloadKind::kUniform)));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  const MemoryTransaction grow{{MemoryChange::Resize("ram", 32 * kMiB)}};
  {
    MemoryMapPin pin = vm->PinMemoryMap("a snapshot is written");
    EXPECT_THAT(vm->ChangeMemory(grow), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                 HasSubstr("while a snapshot is written")));
  }
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<DirtyLog> log, vm->StartDirtyLog());
    EXPECT_THAT(vm->ChangeMemory(grow), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                 HasSubstr("dirty pages are tracked")));
  }
  EXPECT_OK(vm->ChangeMemory(grow).status());  // both gone
  vm->Stop();
  EXPECT_THAT(vm->ChangeMemory({{MemoryChange::Resize("ram", 16 * kMiB)}}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// A vCPU that failed (here on a fetch error, before the rest of memory
// arrived) leaves the VM unable to run: its map does not change either.
TEST(VmMemory, AVmWithAFailedVcpuRefusesAChange) {
  VmConfig config = Config(WorkloadKind::kUniform);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> image, Vm::Create(config));
  ASSERT_OK(image->LoadInitialMemory());
  InMemoryPageSource image_source(&image->memory());
  auto source = std::make_shared<FaultInjectingPageSource>(&image_source);
  source->FailAll(absl::UnavailableError("the source closed the fetch channel"));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(config));
  ASSERT_OK(vm->EnableDemandPaging(source, {FaultMode::kExit, 1}));
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(Eventually([&] { return !vm->Health().ok(); }, absl::Seconds(60)));
  source->Heal();
  const uint32_t ps = vm->memory().page_size();
  for (uint64_t p = 0; p < vm->memory().num_pages(); ++p)
    if (!vm->pager()->IsPresent(p))
      ASSERT_OK(vm->pager()->ResolveFault({p * ps, ps, kFaultRead, 0}));
  ASSERT_OK(vm->FinishDemandPaging());
  EXPECT_THAT(vm->ChangeMemory({{MemoryChange::Resize("ram", 32 * kMiB)}}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("failed: vcpu "), HasSubstr("resolving the fault"))));
  EXPECT_EQ(vm->memory().size(), 16 * kMiB);
  EXPECT_TRUE(vm->MemoryHistory().empty());
  vm->Stop();
}

// A VM that arrived by demand paging grows once every page is in: the
// pager, finished, counts nothing missing past what it tracked, and the
// digest follows the replay.
TEST(VmMemory, AVmThatWasDemandPagedGrowsAfterItFinished) {
  VmConfig config = Config(WorkloadKind::kUniform);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> image, Vm::Create(config));
  ASSERT_OK(image->LoadInitialMemory());
  auto source = std::make_shared<InMemoryPageSource>(&image->memory());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(config));
  ASSERT_OK(vm->EnableDemandPaging(source, {FaultMode::kExit, 1}));
  ASSERT_OK(vm->Start());
  const uint32_t ps = vm->memory().page_size();
  for (uint64_t p = 0; p < vm->memory().num_pages(); ++p)
    if (!vm->pager()->IsPresent(p))
      ASSERT_OK(vm->pager()->ResolveFault({p * ps, ps, kFaultRead, 0}));
  ASSERT_OK(vm->FinishDemandPaging());
  ASSERT_OK(vm->ChangeMemory({{MemoryChange::Resize("ram", 48 * kMiB),
                               MemoryChange::Add("dimm0", kGiB, 8 * kMiB)}})
                .status());
  EXPECT_EQ(vm->pager()->missing_pages(), 0u);
  EXPECT_EQ(vm->pager()->known_zero_pages(), 0u);
  EXPECT_THAT(vm->pager()->ResolveFault({kGiB, ps, kFaultRead, 0}),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("tracks")));
  WaitForOps(*vm, 1000);
  ExpectDigestEqualsReplay(*vm);
  vm->Stop();
}

TEST(VmMemory, APausedVmChangesWithoutRunningAndResumesOnTheNewMap) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(Config(WorkloadKind::kSequential)));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  WaitForOps(*vm, 5000);
  ASSERT_OK(vm->Pause());
  const std::vector<uint64_t> before = Ops(*vm);
  ASSERT_OK_AND_ASSIGN(MemoryChangeResult r,
                       vm->ChangeMemory({{MemoryChange::Add("dimm0", 64 * kMiB, 4 * kMiB)}}));
  EXPECT_EQ(r.held_off_ns, 0);
  EXPECT_EQ(Ops(*vm), before);
  EXPECT_TRUE(vm->paused());
  ASSERT_OK(vm->Resume());
  WaitForOps(*vm, 5000);
  ExpectDigestEqualsReplay(*vm);
  vm->Stop();
}

// What a migration does with a VM whose map changed: a second VM built with
// the first's regions and history, its memory and vCPU state copied over,
// runs on and still matches the replay from the creation size.
TEST(VmMemory, AVmBuiltFromRegionsAndHistoryGoesOnAndReplays) {
  VmConfig config = Config(WorkloadKind::kUniform);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> a, Vm::Create(config));
  ASSERT_OK(a->LoadInitialMemory());
  ASSERT_OK(a->Start());
  WaitForOps(*a, 5000);
  ASSERT_OK(a->ChangeMemory({{MemoryChange::Resize("ram", 24 * kMiB),
                              MemoryChange::Add("dimm0", kGiB, 8 * kMiB)}})
                .status());
  WaitForOps(*a, 5000);
  ASSERT_OK(a->Pause());
  VmConfig moved = config;
  moved.regions = a->memory().map().regions();
  moved.history = a->MemoryHistory();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> b, Vm::Create(moved));
  EXPECT_EQ(b->MemoryHistory().size(), 1u);
  EXPECT_THAT(b->LoadInitialMemory(), StatusIs(absl::StatusCode::kFailedPrecondition));
  std::vector<uint8_t> all(a->memory().size());
  ASSERT_OK(a->memory().Read(0, all.data(), all.size()));
  ASSERT_OK(b->memory().Load(0, all.data(), all.size()));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> states, a->SaveVcpuStates());
  ASSERT_OK(b->RestoreVcpuStates(states));
  a->Stop();
  ASSERT_OK(b->Start());
  WaitForOps(*b, 5000);
  ASSERT_OK(b->ChangeMemory({{MemoryChange::Remove("dimm0")}}).status());
  WaitForOps(*b, 5000);
  ExpectDigestEqualsReplay(*b);
  b->Stop();
  // Regions the history does not lead to are refused.
  VmConfig wrong = moved;
  wrong.regions = {{kMainRegion, 0, 24 * kMiB}};
  EXPECT_THAT(Vm::Create(wrong), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("not the map the memory history leads to")));
  wrong.regions.clear();
  EXPECT_THAT(Vm::Create(wrong),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs the regions")));
}

TEST(VmMemory, AReplayRefusesAHistoryThatDoesNotFit) {
  VmConfig c = Config(WorkloadKind::kUniform);
  MemoryEpoch e{{}, {{kMainRegion, 0, 32 * kMiB}}, {10, 10}};
  EXPECT_THAT(ReferenceDigest(c, {5, 20}, {e}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vCPU 0")));
  e.ops_before = {1};
  EXPECT_THAT(ReferenceDigest(c, {5, 20}, {e}), StatusIs(absl::StatusCode::kInvalidArgument));
}

// The model: regions as intervals, with the main region split around the
// hole. A change is valid when the map it leaves has no overlap, nothing
// in the hole, and the size fits the limits.
struct ModelRegion {
  std::string name;
  uint64_t gpa, size;
};

bool ModelValid(const std::vector<ModelRegion>& regions, uint64_t max, uint64_t min) {
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  uint64_t total = 0;
  for (const ModelRegion& r : regions) {
    total += r.size;
    if (r.name == "ram") {
      spans.push_back({0, std::min<uint64_t>(r.size, kLowMemoryTop)});
      if (r.size > kLowMemoryTop)
        spans.push_back({kHighMemoryBase, kHighMemoryBase + r.size - kLowMemoryTop});
    } else {
      if (r.gpa < kHighMemoryBase && r.gpa + r.size > kLowMemoryTop) return false;
      spans.push_back({r.gpa, r.gpa + r.size});
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) return false;
  return total <= max && total >= min;
}

// Random transactions, valid or not, against a running guest; each is
// accepted exactly when the model says so and leaves the model's map; no
// guest access ever lands outside the map (a stray one would fault on the
// reservation's inaccessible pages and kill the test); the final digest is
// the replay's.
TEST(VmMemory, RandomTransactionsFollowTheModelAndReplay) {
  VmConfig config = Config(WorkloadKind::kUniform);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(config));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  std::mt19937_64 rng(1234);
  std::vector<ModelRegion> model = {{"ram", 0, 16 * kMiB}};
  const char* names[] = {"ram", "a", "b", "c"};
  const uint64_t gpas[] = {8 * kMiB, 16 * kMiB, 24 * kMiB, 32 * kMiB, kGiB, 3 * kGiB};
  int accepted = 0;
  for (int round = 0; round < 200; ++round) {
    MemoryTransaction t;
    std::vector<ModelRegion> next = model;
    bool valid = true;
    const int n = 1 + static_cast<int>(rng() % 3);
    std::vector<std::string> used;
    for (int i = 0; i < n; ++i) {
      const std::string name = names[rng() % 4];
      if (std::find(used.begin(), used.end(), name) != used.end()) valid = false;
      used.push_back(name);
      auto it = std::find_if(next.begin(), next.end(),
                             [&](const ModelRegion& r) { return r.name == name; });
      const uint64_t size = (1 + rng() % 8) * 2 * kMiB;
      if (it == next.end()) {
        const uint64_t gpa = gpas[rng() % 6];
        t.changes.push_back(MemoryChange::Add(name, gpa, size));
        next.push_back({name, gpa, size});
      } else if (name != "ram" && rng() % 3 == 0) {
        t.changes.push_back(MemoryChange::Remove(name));
        next.erase(it);
      } else {
        t.changes.push_back(MemoryChange::Resize(name, size));
        if (it->size == size) valid = false;
        it->size = size;
      }
      // Every step must be valid, not only the end.
      valid = valid && ModelValid(next, config.max_memory_bytes, 2 * 4096);
    }
    absl::StatusOr<MemoryChangeResult> r = vm->ChangeMemory(t);
    ASSERT_EQ(r.ok(), valid) << "round " << round << ": " << r.status();
    if (r.ok()) {
      model = next;
      ++accepted;
    }
    const MemoryMap& map = vm->memory().map();
    ASSERT_EQ(map.regions().size(), model.size());
    for (const ModelRegion& m : model) {
      const int j = map.FindRegion(m.name);
      ASSERT_GE(j, 0) << m.name;
      EXPECT_EQ(map.regions()[j].size, m.size);
      EXPECT_EQ(map.regions()[j].gpa, m.gpa);
    }
    if (round % 20 == 0) WaitForOps(*vm, 500);
  }
  EXPECT_GT(accepted, 20);
  ASSERT_OK(vm->Health());
  ExpectDigestEqualsReplay(*vm);
  vm->Stop();
}

}  // namespace
}  // namespace ferry::vmm
