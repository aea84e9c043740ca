#include "sys/pagemap_scan.h"

#include <cstring>
#include <vector>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "sys/memfd.h"
#include "sys/userfaultfd.h"

namespace ferry::sys {
namespace {

constexpr size_t kPage = 4096;

std::vector<size_t> Pages(const std::vector<PageRange>& ranges, const uint8_t* base) {
  std::vector<size_t> pages;
  for (const PageRange& r : ranges)
    for (uintptr_t a = r.start; a < r.end; a += kPage)
      pages.push_back((a - reinterpret_cast<uintptr_t>(base)) / kPage);
  return pages;
}

TEST(PagemapScan, TakeWrittenReturnsWrittenPagesOnceAndReprotects) {
  ASSERT_OK_AND_ASSIGN(Userfaultfd uffd,
                       Userfaultfd::Open(abi::kUffdFeatureWpAsync |
                                         abi::kUffdFeatureWpUnpopulated));
  constexpr size_t kPages = 2048;  // more than one vector's worth of regions
  ASSERT_OK_AND_ASSIGN(MemfdMapping m, MemfdMapping::Create("t", kPages * kPage, kPage));
  std::memset(m.data(), 7, m.size());
  ASSERT_OK(uffd.Register(m.data(), m.size(), UFFDIO_REGISTER_MODE_WP).status());
  ASSERT_OK(uffd.WriteProtect(m.data(), m.size(), true));
  ASSERT_OK_AND_ASSIGN(PagemapScan scan, PagemapScan::Open());

  std::vector<PageRange> written;
  ASSERT_OK(scan.TakeWritten(m.data(), m.size(), &written));
  EXPECT_TRUE(written.empty());

  // Every other page written (1024 separate regions), some only read.
  std::vector<size_t> expect;
  volatile uint64_t sink = 0;
  for (size_t p = 0; p < kPages; ++p) {
    if (p % 2 == 0) {
      m.data()[p * kPage + 1] = 9;
      expect.push_back(p);
    } else {
      sink += m.data()[p * kPage];
    }
  }
  ASSERT_OK(scan.TakeWritten(m.data(), m.size(), &written));
  EXPECT_EQ(Pages(written, m.data()), expect);

  written.clear();
  ASSERT_OK(scan.TakeWritten(m.data(), m.size(), &written));
  EXPECT_TRUE(written.empty()) << "pages were not re-protected";
  m.data()[5 * kPage] = 1;
  ASSERT_OK(scan.TakeWritten(m.data(), m.size(), &written));
  EXPECT_EQ(Pages(written, m.data()), std::vector<size_t>{5});
}

}  // namespace
}  // namespace ferry::sys
