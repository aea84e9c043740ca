#include "sys/userfaultfd.h"

#include <poll.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "sys/kernel_abi.h"
#include "sys/memfd.h"

namespace ferry::sys {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kPage = 4096;

TEST(Userfaultfd, ProbeReportsTheFeaturesFerryNeeds) {
  ASSERT_OK_AND_ASSIGN(uint64_t f, Userfaultfd::ProbeFeatures());
  EXPECT_TRUE(f & UFFD_FEATURE_SIGBUS);
  EXPECT_TRUE(f & UFFD_FEATURE_MISSING_SHMEM);
  EXPECT_TRUE(f & abi::kUffdFeatureWpAsync);
}

TEST(Userfaultfd, MissingFeatureIsNamedWithItsKernelVersion) {
  EXPECT_EQ(Userfaultfd::FeatureName(abi::kUffdFeatureWpAsync), "WP_ASYNC");
  EXPECT_STREQ(Userfaultfd::FeatureSince(abi::kUffdFeatureWpAsync), "6.7");
  // Bit 62 is no feature any kernel has.
  EXPECT_THAT(Userfaultfd::Open(1ull << 62),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("userfaultfd feature"), HasSubstr("this kernel is"))));
}

TEST(Userfaultfd, BadRegistrationsGiveClearErrors) {
  ASSERT_OK_AND_ASSIGN(Userfaultfd uffd, Userfaultfd::Open(UFFD_FEATURE_MISSING_SHMEM));
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 4 * kPage, kPage));
  EXPECT_THAT(uffd.Register(m.data() + 1, kPage, UFFDIO_REGISTER_MODE_MISSING),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not aligned")));
  EXPECT_THAT(uffd.Register(m.data(), 0, UFFDIO_REGISTER_MODE_MISSING),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Unmapped memory cannot be registered.
  void* hole = mmap(nullptr, kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  munmap(hole, kPage);
  EXPECT_THAT(uffd.Register(hole, kPage, UFFDIO_REGISTER_MODE_MISSING),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UFFDIO_REGISTER")));
  // A range can belong to one userfaultfd only.
  ASSERT_OK(uffd.Register(m.data(), m.size(), UFFDIO_REGISTER_MODE_MISSING).status());
  ASSERT_OK_AND_ASSIGN(Userfaultfd other, Userfaultfd::Open(UFFD_FEATURE_MISSING_SHMEM));
  EXPECT_THAT(other.Register(m.data(), m.size(), UFFDIO_REGISTER_MODE_MISSING),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("no other userfaultfd")));
}

TEST(Userfaultfd, CopyInstallsAndCountsPagesAlreadyPresent) {
  ASSERT_OK_AND_ASSIGN(Userfaultfd uffd, Userfaultfd::Open(UFFD_FEATURE_MISSING_SHMEM));
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 8 * kPage, kPage));
  ASSERT_OK_AND_ASSIGN(uint64_t ioctls,
                       uffd.Register(m.data(), m.size(), UFFDIO_REGISTER_MODE_MISSING));
  EXPECT_TRUE(ioctls & (1ull << _UFFDIO_COPY));
  std::vector<uint8_t> src(8 * kPage);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i / kPage + 1);

  ASSERT_OK_AND_ASSIGN(InstallResult r, uffd.Copy(m.data() + 2 * kPage, src.data(), kPage));
  EXPECT_EQ(r.installed, kPage);
  EXPECT_EQ(r.already_present, 0u);
  // A batch over a range whose page 2 is present installs the rest.
  ASSERT_OK_AND_ASSIGN(r, uffd.Copy(m.data(), src.data(), 8 * kPage));
  EXPECT_EQ(r.installed, 7 * kPage);
  EXPECT_EQ(r.already_present, kPage);
  // The first install wins: page 2 keeps the content of its own Copy().
  for (size_t p = 0; p < 8; ++p)
    EXPECT_EQ(m.data()[p * kPage + 7], p == 2 ? 1 : p + 1) << p;
}

TEST(Userfaultfd, ZeroPageInstallsZeros) {
  ASSERT_OK_AND_ASSIGN(Userfaultfd uffd, Userfaultfd::Open(UFFD_FEATURE_MISSING_SHMEM));
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 4 * kPage, kPage));
  ASSERT_OK(uffd.Register(m.data(), m.size(), UFFDIO_REGISTER_MODE_MISSING).status());
  ASSERT_OK_AND_ASSIGN(InstallResult r, uffd.ZeroPage(m.data(), 2 * kPage));
  EXPECT_EQ(r.installed, 2 * kPage);
  ASSERT_OK_AND_ASSIGN(r, uffd.ZeroPage(m.data(), kPage));
  EXPECT_EQ(r.already_present, kPage);
  EXPECT_EQ(m.data()[kPage + 5], 0);
  EXPECT_THAT(uffd.ZeroPage(m.data() + 3, kPage),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Userfaultfd, BlockedFaultIsReportedAndWokenByCopy) {
  ASSERT_OK_AND_ASSIGN(Userfaultfd uffd, Userfaultfd::Open(UFFD_FEATURE_MISSING_SHMEM |
                                                           UFFD_FEATURE_THREAD_ID));
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 4 * kPage, kPage));
  ASSERT_OK(uffd.Register(m.data(), m.size(), UFFDIO_REGISTER_MODE_MISSING).status());
  std::atomic<int> seen{-1};
  std::thread toucher([&] { seen = m.data()[kPage + 100]; });

  pollfd pfd{uffd.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 5000), 1);
  uffd_msg msg[4];
  ASSERT_OK_AND_ASSIGN(size_t n, uffd.ReadEvents(msg, 4));
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(msg[0].event, UFFD_EVENT_PAGEFAULT);
  EXPECT_EQ(msg[0].arg.pagefault.address & ~(kPage - 1),
            reinterpret_cast<uint64_t>(m.data() + kPage));
  EXPECT_FALSE(msg[0].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
  EXPECT_GT(msg[0].arg.pagefault.feat.ptid, 0u);
  EXPECT_EQ(seen.load(), -1);  // still asleep in the kernel

  std::vector<uint8_t> page(kPage, 42);
  ASSERT_OK(uffd.Copy(m.data() + kPage, page.data(), kPage).status());
  toucher.join();
  EXPECT_EQ(seen.load(), 42);
  ASSERT_OK_AND_ASSIGN(n, uffd.ReadEvents(msg, 4));
  EXPECT_EQ(n, 0u);
}

TEST(Userfaultfd, WriteProtectWithoutAsyncReportsWriteFaults) {
  ASSERT_OK_AND_ASSIGN(Userfaultfd uffd, Userfaultfd::Open(0));
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", 2 * kPage, kPage));
  std::memset(m.data(), 1, m.size());
  ASSERT_OK(uffd.Register(m.data(), m.size(), UFFDIO_REGISTER_MODE_WP).status());
  ASSERT_OK(uffd.WriteProtect(m.data(), m.size(), true));
  std::thread writer([&] { m.data()[10] = 2; });
  pollfd pfd{uffd.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 5000), 1);
  uffd_msg msg;
  ASSERT_OK_AND_ASSIGN(size_t n, uffd.ReadEvents(&msg, 1));
  ASSERT_EQ(n, 1u);
  EXPECT_TRUE(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP);
  ASSERT_OK(uffd.WriteProtect(m.data(), kPage, false));  // also wakes
  writer.join();
  EXPECT_EQ(m.data()[10], 2);
  ASSERT_OK(uffd.Unregister(m.data(), m.size()));
}

}  // namespace
}  // namespace ferry::sys
