#include "vmm/dirty_log.h"

#include <set>
#include <thread>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/vm.h"

namespace ferry::vmm {
namespace {

constexpr uint32_t kPage = 4096;

std::unique_ptr<GuestMemory> Memory(uint64_t pages) {
  return std::move(GuestMemory::Create(*MemoryMap::ForSize(pages * kPage, kPage))).value();
}

TEST(DirtyLog, ReportsExactlyTheWrittenPages) {
  constexpr uint64_t kPages = 4096;
  auto mem = Memory(kPages);
  WorkloadSpec spec;
  spec.zero_fraction = 0.3;  // some pages are holes: their first write counts too
  FillInitialPages(spec, mem->host(), kPage, 0, kPages);
  ASSERT_OK_AND_ASSIGN(auto log, UffdDirtyLog::Start(mem.get()));
  std::vector<uint64_t> pages;
  ASSERT_OK(log->Collect(&pages));
  EXPECT_TRUE(pages.empty());

  std::set<uint64_t> written;
  volatile uint64_t sink = 0;
  for (uint64_t p = 0; p < kPages; ++p) {
    uint64_t h = Mix64(p);
    if (h % 3 == 0) {
      mem->host()[p * kPage + h % kPage] ^= 0x5a;
      written.insert(p);
    } else if (h % 3 == 1) {
      sink += mem->host()[p * kPage + h % kPage];  // read only: never reported
    }
  }
  ASSERT_OK(log->Collect(&pages));
  EXPECT_EQ(std::set<uint64_t>(pages.begin(), pages.end()), written);
  EXPECT_EQ(pages.size(), written.size()) << "a page was reported twice";
  ASSERT_OK(log->Collect(&pages));
  EXPECT_TRUE(pages.empty()) << "pages were not re-protected";
}

TEST(DirtyLog, TracksARunningVmWithoutLosingWrites) {
  VmConfig c;
  c.memory_bytes = 16 << 20;
  c.vcpus = 2;
  c.workload.kind = WorkloadKind::kUniform;
  c.workload.write_fraction = 0.5;
  c.workload.ops_per_vcpu = 200000;
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(c));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK_AND_ASSIGN(MemoryDigest before, vm->Digest());
  ASSERT_OK_AND_ASSIGN(auto log, UffdDirtyLog::Start(&vm->memory()));
  ASSERT_OK(vm->Start());
  // Collect while the vCPUs run; every page whose content changed must
  // appear in some round.
  std::set<uint64_t> dirty;
  std::vector<uint64_t> pages;
  for (int round = 0; round < 20; ++round) {
    ASSERT_OK(log->Collect(&pages));
    dirty.insert(pages.begin(), pages.end());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_OK(vm->WaitUntilHalted(absl::Seconds(60)));
  ASSERT_OK(log->Collect(&pages));
  dirty.insert(pages.begin(), pages.end());
  ASSERT_OK_AND_ASSIGN(MemoryDigest after, vm->Digest());
  for (uint64_t p : DifferingPages(before, after))
    EXPECT_TRUE(dirty.count(p)) << "page " << p << " changed but was never reported";
  EXPECT_FALSE(dirty.empty());
}

TEST(DirtyLog, ReadOnlyWorkloadDirtiesNothing) {
  VmConfig c;
  c.memory_bytes = 8 << 20;
  c.vcpus = 2;
  c.workload.kind = WorkloadKind::kUniform;
  c.workload.write_fraction = 0;
  c.workload.ops_per_vcpu = 100000;
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(c));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK_AND_ASSIGN(auto log, UffdDirtyLog::Start(&vm->memory()));
  ASSERT_OK(vm->Start());
  ASSERT_OK(vm->WaitUntilHalted(absl::Seconds(60)));
  std::vector<uint64_t> pages;
  ASSERT_OK(log->Collect(&pages));
  EXPECT_TRUE(pages.empty()) << pages.size() << " pages reported for reads";
}

}  // namespace
}  // namespace ferry::vmm
