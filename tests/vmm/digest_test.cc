#include "vmm/digest.h"

#include <cstring>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/guest_memory.h"

namespace ferry::vmm {
namespace {

constexpr uint32_t kPage = 4096;

std::unique_ptr<GuestMemory> Memory(uint64_t pages) {
  auto map = MemoryMap::ForSize(pages * kPage, kPage);
  auto mem = GuestMemory::Create(*map);
  return std::move(mem).value();
}

TEST(Digest, OneFlippedBitChangesThePageAndTheDigest) {
  auto a = Memory(64), b = Memory(64);
  for (uint64_t i = 0; i < 64 * kPage; ++i) a->host()[i] = b->host()[i] = i * 7;
  ASSERT_OK_AND_ASSIGN(MemoryDigest da, DigestMemory(*a));
  ASSERT_OK_AND_ASSIGN(MemoryDigest db, DigestMemory(*b));
  EXPECT_EQ(da.digest, db.digest);
  b->host()[33 * kPage + 4095] ^= 1;
  ASSERT_OK_AND_ASSIGN(db, DigestMemory(*b));
  EXPECT_NE(da.digest, db.digest);
  EXPECT_EQ(DifferingPages(da, db), std::vector<uint64_t>{33});
}

TEST(Digest, HolesHashAsZeroPagesWithoutBeingTouched) {
  auto a = Memory(16), b = Memory(16);
  std::memset(a->host(), 0, 16 * kPage);  // present, zero-filled
  ASSERT_OK_AND_ASSIGN(auto present, b->PresentPages());
  EXPECT_EQ(std::count(present.begin(), present.end(), true), 0);
  ASSERT_OK_AND_ASSIGN(MemoryDigest da, DigestMemory(*a));
  ASSERT_OK_AND_ASSIGN(MemoryDigest db, DigestMemory(*b));
  EXPECT_EQ(da.digest, db.digest);
  ASSERT_OK_AND_ASSIGN(present, b->PresentPages());
  EXPECT_EQ(std::count(present.begin(), present.end(), true), 0) << "digest allocated pages";
}

TEST(Digest, PageOrderMatters) {
  auto a = Memory(2), b = Memory(2);
  std::memset(a->host(), 1, kPage);
  std::memset(b->host() + kPage, 1, kPage);
  ASSERT_OK_AND_ASSIGN(MemoryDigest da, DigestMemory(*a));
  ASSERT_OK_AND_ASSIGN(MemoryDigest db, DigestMemory(*b));
  EXPECT_NE(da.digest, db.digest);
}

}  // namespace
}  // namespace ferry::vmm
