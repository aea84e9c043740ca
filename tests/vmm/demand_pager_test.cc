#include "vmm/demand_pager.h"

#include <atomic>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/fault_injecting_page_source.h"

namespace ferry::vmm {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 64;

std::unique_ptr<GuestMemory> Memory() {
  return std::move(GuestMemory::Create(*MemoryMap::ForSize(kPages * kPage, kPage))).value();
}

// An image whose page p holds the byte p + 1, and page 5 is zero.
std::unique_ptr<GuestMemory> Image() {
  auto image = Memory();
  for (uint64_t p = 0; p < kPages; ++p)
    if (p != 5) std::memset(image->host() + p * kPage, static_cast<int>(p + 1), kPage);
  return image;
}

class DemandPagerTest : public ::testing::TestWithParam<FaultMode> {};

TEST_P(DemandPagerTest, AllPagesStartMissingAndResolveFromTheSource) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  EXPECT_EQ(pager->missing_pages(), kPages);
  ASSERT_OK(pager->ResolveFault({3 * kPage + 100, kPage, kFaultRead, MonotonicNowNanos()}));
  ASSERT_OK(pager->ResolveFault({5 * kPage, kPage, kFaultRead, 0}));
  ASSERT_OK(pager->ResolveFault({3 * kPage, kPage, kFaultWrite, 0}));  // already present
  EXPECT_EQ(pager->missing_pages(), kPages - 2);
  EXPECT_TRUE(pager->IsPresent(3));
  EXPECT_EQ(mem->host()[3 * kPage + 7], 4);
  EXPECT_EQ(mem->host()[5 * kPage + 7], 0);
  DemandPagerStats s = pager->Stats();
  EXPECT_EQ(s.faults, 3u);
  EXPECT_EQ(s.pages_installed, 2u);
  EXPECT_EQ(s.zero_pages, 1u);
  EXPECT_EQ(s.fault_latency.total, 1u);
  // Stages of the fetched faults: both installed; only the first had a
  // trap time.
  EXPECT_EQ(s.trap_latency.total, 1u);
  EXPECT_EQ(s.install_latency.total, 2u);
}

TEST_P(DemandPagerTest, BadAddressesGiveClearErrorsAndChangeNothing) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  EXPECT_THAT(pager->ResolveFault({kPages * kPage, kPage, kFaultRead, 0}),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("not inside one RAM slot")));
  std::vector<uint8_t> data(2 * kPage, 9);
  EXPECT_THAT(pager->InstallPages((kPages - 1) * kPage, data.data(), 2),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(pager->InstallPages(100, data.data(), 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("aligned")));
  EXPECT_THAT(pager->Discard(kPages * kPage, 1), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(pager->missing_pages(), kPages);
  ASSERT_OK_AND_ASSIGN(auto present, mem->PresentPages());
  EXPECT_EQ(std::count(present.begin(), present.end(), true), 0);
}

TEST_P(DemandPagerTest, SourceErrorsPropagateAndLeaveThePageMissing) {
  FaultInjectingPageSource source;
  source.FailAll(absl::UnavailableError("source host unreachable"));
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  EXPECT_THAT(pager->ResolveFault({0, kPage, kFaultRead, 0}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("unreachable")));
  EXPECT_FALSE(pager->IsPresent(0));
  EXPECT_EQ(pager->missing_pages(), kPages);
}

TEST_P(DemandPagerTest, AFaultRetriedAfterATransientFailureResolves) {
  auto image = Image();
  InMemoryPageSource image_source(image.get());
  FaultInjectingPageSource source(&image_source);
  source.FailNext(1, absl::UnavailableError("link down"));
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  EXPECT_THAT(pager->ResolveFault({2 * kPage, kPage, kFaultRead, 0}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("link down")));
  EXPECT_FALSE(pager->IsPresent(2));
  ASSERT_OK(pager->ResolveFault({2 * kPage, kPage, kFaultRead, 0}));
  EXPECT_EQ(mem->host()[2 * kPage], 3);
  EXPECT_EQ(source.fetches(), 2u);
  EXPECT_EQ(source.failures(), 1u);
}

// Records the batches it is asked for; serves from an image.
class RecordingSource final : public PageSource {
 public:
  explicit RecordingSource(const GuestMemory* image) : inner_(image) {}
  absl::StatusOr<FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t> out) override {
    return inner_.Fetch(gpa, out);
  }
  absl::Status FetchRuns(absl::Span<const PageRunRequest> runs, uint32_t page_size,
                         const PageArrivedFn& arrived) override {
    batches.emplace_back(runs.begin(), runs.end());
    return PageSource::FetchRuns(runs, page_size, arrived);
  }
  std::vector<std::vector<PageRunRequest>> batches;

 private:
  InMemoryPageSource inner_;
};

TEST_P(DemandPagerTest, ABatchOfFaultsFetchesEachMissingPageOnceInRuns) {
  auto image = Image();
  RecordingSource source(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  ASSERT_OK(pager->InstallPages(0, image->host(), 1));  // page 0 is present already
  const int64_t t = MonotonicNowNanos();
  std::vector<MemoryFault> faults;
  for (uint64_t p : {3, 4, 3, 5, 10, 4, 0})
    faults.push_back({p * kPage, kPage, kFaultRead, t});
  ASSERT_OK(pager->ResolveFaults(faults));
  ASSERT_EQ(source.batches.size(), 1u);
  const std::vector<PageRunRequest>& runs = source.batches[0];
  ASSERT_EQ(runs.size(), 2u) << "pages 3-5 in one run, 10 in another, 0 not at all";
  EXPECT_EQ(runs[0].gpa, 3 * kPage);
  EXPECT_EQ(runs[0].count, 3u);
  EXPECT_EQ(runs[1].gpa, 10 * kPage);
  EXPECT_EQ(runs[1].count, 1u);
  for (uint64_t p : {3, 4, 5, 10}) {
    EXPECT_TRUE(pager->IsPresent(p));
    EXPECT_EQ(mem->host()[p * kPage + 9], image->host()[p * kPage + 9]);
  }
  DemandPagerStats st = pager->Stats();
  EXPECT_EQ(st.faults, 7u);
  EXPECT_EQ(st.pages_installed, 5u);  // page 0 before, then four
  EXPECT_EQ(st.fault_latency.total, 7u) << "one latency per fault, duplicates too";
  EXPECT_EQ(pager->missing_pages(), kPages - 5);
}

// A source whose every fetch first runs `meanwhile` (another path resolving
// the page while the fetch is under way), then fails as a source that has
// stopped serving does.
class ClosingSource final : public PageSource {
 public:
  absl::StatusOr<FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t>) override {
    ++fetches;
    if (meanwhile) meanwhile(gpa);
    return absl::UnavailableError("the source closed the fetch channel");
  }
  std::function<void(uint64_t gpa)> meanwhile;
  int fetches = 0;
};

// The push sends a faulting page as a zero page while its fetch is under
// way; nothing is missing any more, the memory leaves userfault mode and the
// source stops serving (the end of a postcopy migration). The fault is
// resolved: the page reads as zeros, and the VM does not fail.
TEST_P(DemandPagerTest, AFetchFailingAfterThePushSentThePageAsZeroResolves) {
  auto image = Image();
  for (bool finish : {false, true}) {
    SCOPED_TRACE(finish ? "the memory left userfault mode" : "still in userfault mode");
    ClosingSource source;
    auto mem = Memory();
    ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
    for (uint64_t p = 0; p < kPages; ++p)
      if (p != 7) ASSERT_OK(pager->InstallPages(p * kPage, image->host() + p * kPage, 1));
    source.meanwhile = [&](uint64_t gpa) {
      ASSERT_OK(pager->MarkZeroPages(gpa, 1));
      if (finish) ASSERT_OK(pager->Finish());
    };
    ASSERT_OK(pager->ResolveFault({7 * kPage, kPage, kFaultWrite, 0}));
    EXPECT_EQ(source.fetches, 1);
    EXPECT_EQ(pager->missing_pages(), 0u);
    EXPECT_EQ(mem->host()[7 * kPage + 5], 0);
    EXPECT_EQ(mem->host()[8 * kPage + 5], 9);
  }
  // A page nobody resolved stays the source's failure.
  ClosingSource source;
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  EXPECT_THAT(pager->ResolveFault({7 * kPage, kPage, kFaultRead, 0}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed")));
  EXPECT_FALSE(pager->IsPresent(7));
  EXPECT_FALSE(pager->IsKnownZero(7));
}

// The same race for a batch (blocking mode's handler): pages sent as zero
// pages meanwhile resolve; one nobody sent fails the batch.
TEST_P(DemandPagerTest, ABatchWhoseFetchFailsResolvesThePagesSentAsZeroMeanwhile) {
  ClosingSource source;
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  source.meanwhile = [&](uint64_t) {
    ASSERT_OK(pager->MarkZeroPages(3 * kPage, 2));
    ASSERT_OK(pager->MarkZeroPages(9 * kPage, 1));
  };
  const int64_t t = MonotonicNowNanos();
  std::vector<MemoryFault> faults;
  for (uint64_t p : {3, 4, 9, 4}) faults.push_back({p * kPage, kPage, kFaultRead, t});
  ASSERT_OK(pager->ResolveFaults(faults));
  for (uint64_t p : {3, 4, 9}) EXPECT_TRUE(pager->IsPresent(p)) << p;
  EXPECT_EQ(pager->Stats().fault_latency.total, 4u) << "each fault's wait is counted";
  faults.push_back({12 * kPage, kPage, kFaultRead, t});  // never sent
  EXPECT_THAT(pager->ResolveFaults(faults),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed")));
  EXPECT_FALSE(pager->IsPresent(12));
}

// Pages known zero become present while missing_pages() is read: a page
// held all along (known zero, then present) is never counted missing.
TEST(DemandPager, MissingPagesNeverCountsAHeldPageWhileItBecomesPresent) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {FaultMode::kExit, 1}));
  // Odd phase: every page is held (known zero or present) for the whole
  // phase; a scan that starts and ends in one odd phase must find none
  // missing.
  std::atomic<uint64_t> phase{0};
  std::atomic<bool> done{false};
  std::atomic<uint64_t> scans{0}, wrong{0};
  std::thread reader([&] {
    while (!done.load()) {
      const uint64_t before = phase.load();
      const uint64_t missing = pager->missing_pages();
      if (before % 2 == 1 && phase.load() == before) {
        ++scans;
        if (missing != 0) ++wrong;
      }
    }
  });
  for (uint64_t round = 0; round < 200; ++round) {
    phase.store(2 * round);
    ASSERT_OK(pager->Discard(0, kPages));  // no vCPU runs here
    ASSERT_OK(pager->MarkZeroPages(0, kPages));
    phase.store(2 * round + 1);
    for (uint64_t p = 0; p < kPages; ++p)
      ASSERT_OK(pager->InstallPages(p * kPage, image->host() + p * kPage, 1));
  }
  done.store(true);
  reader.join();
  EXPECT_EQ(wrong.load(), 0u) << "of " << scans.load() << " scans";
}

TEST_P(DemandPagerTest, InstallDiscardAndFinish) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  ASSERT_OK(pager->InstallPages(0, image->host(), kPages / 2));
  ASSERT_OK(pager->InstallZeroPages(kPages / 2 * kPage, kPages / 2));
  EXPECT_EQ(pager->missing_pages(), 0u);
  // A second install of a present page keeps the first (EEXIST).
  std::vector<uint8_t> other(kPage, 0xee);
  ASSERT_OK(pager->InstallPages(kPage, other.data(), 1));
  EXPECT_EQ(mem->host()[kPage], 2);
  EXPECT_EQ(pager->Stats().already_present, 1u);

  ASSERT_OK(pager->Discard(kPage, 2));
  EXPECT_EQ(pager->missing_pages(), 2u);
  EXPECT_THAT(pager->Finish(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("2 pages are still missing")));
  ASSERT_OK(pager->ResolveFault({kPage, kPage, kFaultRead, 0}));
  ASSERT_OK(pager->ResolveFault({2 * kPage, kPage, kFaultRead, 0}));
  EXPECT_EQ(mem->host()[2 * kPage], 3);
  ASSERT_OK(pager->Finish());
}

TEST_P(DemandPagerTest, PrecopyWritesOverwriteEarlierRounds) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, {GetParam(), 1}));
  std::vector<uint8_t> v1(4 * kPage, 1), v2(4 * kPage, 2);
  ASSERT_OK(pager->WritePages(0, v1.data(), 2));          // round 0: pages 0, 1
  ASSERT_OK(pager->WritePages(kPage, v2.data(), 3));      // round 1: pages 1, 2, 3
  ASSERT_OK(pager->WriteZeroPages(0, 1));                 // page 0 became zero
  // Page 0 is freed again and known zero (a fault resolves it locally).
  EXPECT_TRUE(pager->IsKnownZero(0));
  EXPECT_FALSE(pager->IsPresent(0));
  ASSERT_OK_AND_ASSIGN(uint64_t allocated, mem->AllocatedBytes());
  EXPECT_EQ(allocated, 3 * kPage);
  EXPECT_EQ(mem->host()[kPage], 2) << "a re-sent page must replace the stale copy";
  EXPECT_EQ(mem->host()[3 * kPage + 9], 2);
  EXPECT_EQ(pager->missing_pages(), kPages - 4);
  EXPECT_THAT(pager->WritePages(kPages * kPage, v1.data(), 1),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_P(DemandPagerTest, FaultRacingThePushInstallsEachPageOnce) {
  // For every page, a "push" thread installs it while a "vCPU" thread
  // resolves a fault on it, at the same moment. Each page must end up
  // installed exactly once, with the right content.
  auto image = Image();
  auto source = std::make_shared<InMemoryPageSource>(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager,
                       DemandPager::Create(mem.get(), source.get(), {GetParam(), 1}));
  std::atomic<uint64_t> go{0};
  std::atomic<int> errors{0};
  std::thread pusher([&] {
    for (uint64_t p = 0; p < kPages; ++p) {
      while (go.load() <= p) {
      }
      if (!pager->InstallPages(p * kPage, image->host() + p * kPage, 1).ok()) ++errors;
    }
  });
  for (uint64_t p = 0; p < kPages; ++p) {
    go.store(p + 1);
    if (!pager->ResolveFault({p * kPage, kPage, kFaultRead, 0}).ok()) ++errors;
  }
  pusher.join();
  EXPECT_EQ(errors.load(), 0);
  DemandPagerStats s = pager->Stats();
  EXPECT_EQ(s.pages_installed, kPages) << "a page was installed twice";
  EXPECT_EQ(pager->missing_pages(), 0u);
  for (uint64_t p = 0; p < kPages; ++p)
    ASSERT_EQ(std::memcmp(mem->host() + p * kPage, image->host() + p * kPage, kPage), 0) << p;
}

TEST(DemandPager, RejectsMemoryThatAlreadyHasPages) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  EXPECT_THAT(DemandPager::Create(image.get(), &source, {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("empty guest memory")));
}

TEST(DemandPager, BlockingModeHandlerResolvesASleepingThread) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  auto mem = Memory();
  ASSERT_OK_AND_ASSIGN(auto pager,
                       DemandPager::Create(mem.get(), &source, {FaultMode::kBlocking, 2}));
  std::vector<std::thread> readers;
  std::vector<int> seen(8, -1);
  for (int i = 0; i < 8; ++i)
    readers.emplace_back([&, i] { seen[i] = mem->host()[(10 + i) * kPage + 1]; });
  for (auto& t : readers) t.join();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(seen[i], 11 + i);
  EXPECT_EQ(pager->Stats().faults, 8u);
  EXPECT_EQ(pager->missing_pages(), kPages - 8);
}

// Serves from an image after a delay: a slow link.
class SlowSource final : public PageSource {
 public:
  SlowSource(const GuestMemory* image, absl::Duration delay) : inner_(image), delay_(delay) {}
  absl::StatusOr<FetchedPage> Fetch(uint64_t gpa, absl::Span<uint8_t> out) override {
    absl::SleepFor(delay_);
    return inner_.Fetch(gpa, out);
  }

 private:
  InMemoryPageSource inner_;
  absl::Duration delay_;
};

// Blocktime is the vCPUs' wait, per vCPU: in exit mode the fault names its
// vCPU; in blocking mode the faulting thread does (RegisterVcpuThread).
TEST_P(DemandPagerTest, BlocktimeIsCountedPerVcpu) {
  auto image = Image();
  SlowSource source(image.get(), absl::Milliseconds(20));
  auto mem = Memory();
  DemandPagerOptions options{GetParam(), 1};
  options.vcpus = 3;
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, options));
  std::thread vcpu1([&] {
    pager->RegisterVcpuThread(1);
    if (GetParam() == FaultMode::kExit) {
      MemoryFault f{7 * kPage, kPage, kFaultRead, MonotonicNowNanos()};
      f.vcpu = 1;
      ASSERT_OK(pager->ResolveFault(f));
      // The same wait reported twice (a duplicate event) counts once.
      f.time_ns = MonotonicNowNanos() - 1'000'000;
      MemoryFault dup = f;
      ASSERT_OK(pager->ResolveFault(dup));
    } else {
      EXPECT_EQ(mem->host()[7 * kPage], 8);  // sleeps in the kernel on the fault
    }
  });
  vcpu1.join();
  DemandPagerStats s = pager->Stats();
  ASSERT_EQ(s.blocked_ns_per_vcpu.size(), 3u);
  EXPECT_EQ(s.blocked_ns_per_vcpu[0], 0u);
  EXPECT_GE(s.blocked_ns_per_vcpu[1], 20'000'000u);
  EXPECT_LT(s.blocked_ns_per_vcpu[1], 2'000'000'000u);
  EXPECT_EQ(s.blocked_ns_per_vcpu[2], 0u);
  EXPECT_EQ(s.blocked_ns, s.blocked_ns_per_vcpu[1]);
  // A fault no vCPU is known for counts in the total only.
  ASSERT_OK(pager->ResolveFault({9 * kPage, kPage, kFaultRead, MonotonicNowNanos()}));
  DemandPagerStats t = pager->Stats();
  EXPECT_EQ(t.blocked_ns_per_vcpu[1], s.blocked_ns_per_vcpu[1]);
  EXPECT_GE(t.blocked_ns, s.blocked_ns + 20'000'000u);
}

// KVM's exit mode without KVM: the bitmap the memslots would read. Every
// page starts with its bit set; each install path clears it after the page
// is present; discard and zero-writes set it again first; an exit for a
// page that is present installs nothing and leaves the bit clear; an exit
// outside RAM is refused and changes nothing. The userfaultfd backstop
// (blocking, one handler thread) serves a thread that touches a missing
// page directly.
bool ExitBit(const DemandPager& pager, uint64_t page) {
  return (pager.exit_bitmap()[page / 64].load() >> (page % 64)) & 1;
}

TEST(DemandPager, ExitBitmapFollowsEveryInstallPath) {
  auto image = Image();
  InMemoryPageSource source(image.get());
  auto mem = Memory();
  DemandPagerOptions options{FaultMode::kExit, 1};
  options.exit_bitmap = true;
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, options));
  ASSERT_NE(pager->exit_bitmap(), nullptr);
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_TRUE(ExitBit(*pager, p)) << p;

  // A vCPU's exit: fetched, installed, bit cleared.
  ASSERT_OK(pager->ResolveFault({3 * kPage, kPage, 0, MonotonicNowNanos()}));
  EXPECT_FALSE(ExitBit(*pager, 3));
  EXPECT_EQ(mem->host()[3 * kPage], 4);
  // Another exit for the same page (it raced the install): nothing twice.
  const uint64_t installed = pager->Stats().pages_installed;
  ASSERT_OK(pager->ResolveFault({3 * kPage, kPage, 0, MonotonicNowNanos()}));
  EXPECT_EQ(pager->Stats().pages_installed, installed);
  EXPECT_FALSE(ExitBit(*pager, 3));
  // Outside RAM: refused, nothing changes.
  EXPECT_THAT(pager->ResolveFault({kPages * kPage + 0x100000, kPage, 0, 0}),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(pager->Stats().pages_installed, installed);
  // The push: installs clear their bits.
  ASSERT_OK(pager->InstallPages(10 * kPage, image->host() + 10 * kPage, 4));
  for (uint64_t p = 10; p < 14; ++p) EXPECT_FALSE(ExitBit(*pager, p)) << p;
  ASSERT_OK(pager->InstallZeroPages(20 * kPage, 2));
  EXPECT_FALSE(ExitBit(*pager, 20));
  EXPECT_FALSE(ExitBit(*pager, 21));
  // Known-zero pages are not present: their bits stay set until touched.
  ASSERT_OK(pager->MarkZeroPages(30 * kPage, 1));
  EXPECT_TRUE(ExitBit(*pager, 30));
  ASSERT_OK(pager->ResolveFault({30 * kPage, kPage, 0, 0}));
  EXPECT_FALSE(ExitBit(*pager, 30));
  // Discard: missing again, bit set again.
  ASSERT_OK(pager->Discard(10 * kPage, 2));
  EXPECT_TRUE(ExitBit(*pager, 10));
  EXPECT_TRUE(ExitBit(*pager, 11));
  EXPECT_FALSE(ExitBit(*pager, 12));
  // The backstop: a thread that reads a missing page directly sleeps in the
  // kernel until the handler thread installs it (KVM's own accesses).
  std::thread reader([&] { EXPECT_EQ(mem->host()[40 * kPage + 1], 41); });
  reader.join();
  EXPECT_FALSE(ExitBit(*pager, 40));
  // Every bit is the complement of "present".
  for (uint64_t p = 0; p < kPages; ++p) EXPECT_EQ(ExitBit(*pager, p), !pager->IsPresent(p)) << p;
}

TEST(DemandPager, AnExitBitmapIsForExitMode) {
  auto mem = Memory();
  auto image = Image();
  InMemoryPageSource source(image.get());
  DemandPagerOptions options{FaultMode::kBlocking, 1};
  options.exit_bitmap = true;
  EXPECT_THAT(DemandPager::Create(mem.get(), &source, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exit mode")));
  DemandPagerOptions plain{FaultMode::kExit, 1};
  ASSERT_OK_AND_ASSIGN(auto pager, DemandPager::Create(mem.get(), &source, plain));
  EXPECT_EQ(pager->exit_bitmap(), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Modes, DemandPagerTest,
                         ::testing::Values(FaultMode::kExit, FaultMode::kBlocking),
                         [](const auto& info) { return FaultModeName(info.param); });

}  // namespace
}  // namespace ferry::vmm
