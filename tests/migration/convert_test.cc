// convert: the VMM's memory regions as ferry.v1.MemoryRegion protos.
#include "migration/convert.h"

#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

TEST(ConvertTest, RegionsBecomeProtos) {
  google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion> out;
  RegionsToProto({{"dimm0", kGiB, 64 * kMiB}, {"ram", 0, 128 * kMiB}}, &out);
  ASSERT_EQ(out.size(), 2);
  EXPECT_EQ(out[0].name(), "dimm0");
  EXPECT_EQ(out[0].gpa(), kGiB);
  EXPECT_EQ(out[0].size(), 64 * kMiB);
  EXPECT_EQ(out[1].name(), "ram");
}

// Appended: what `out` already holds stays in front.
TEST(ConvertTest, RegionsAreAppended) {
  google::protobuf::RepeatedPtrField<ferry::v1::MemoryRegion> out;
  RegionsToProto({{"ram", 0, 64 * kMiB}}, &out);
  RegionsToProto({{"dimm0", kGiB, 64 * kMiB}}, &out);
  ASSERT_EQ(out.size(), 2);
  EXPECT_EQ(out[0].name(), "ram");
  EXPECT_EQ(out[1].name(), "dimm0");
}

}  // namespace
}  // namespace ferry::migration
