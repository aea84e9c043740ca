// The project's own protobuf rule (proto/ferry_proto.bzl) generates working
// C++: a message survives the wire format, and an unknown enum value is
// kept as a number the receiver can reject.
#include "ferry/v1/vm.pb.h"
#include "gtest/gtest.h"

namespace {

TEST(VmProto, LayoutRoundTripsThroughTheWireFormat) {
  ferry::v1::VmLayout layout;
  layout.set_memory_bytes(5ull << 30);
  layout.set_page_size(4096);
  layout.set_vcpus(2);
  auto* low = layout.add_slots();
  low->set_gpa(0);
  low->set_size(3ull << 30);
  auto* high = layout.add_slots();
  high->set_gpa(4ull << 30);
  high->set_size(2ull << 30);
  high->set_offset(3ull << 30);
  layout.mutable_workload()->set_kind(ferry::v1::WORKLOAD_KIND_ZIPF);
  layout.mutable_workload()->set_zero_fraction(0.5);

  std::string wire = layout.SerializeAsString();
  ferry::v1::VmLayout back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.slots_size(), 2);
  EXPECT_EQ(back.slots(1).offset(), 3ull << 30);
  EXPECT_EQ(back.workload().kind(), ferry::v1::WORKLOAD_KIND_ZIPF);
  EXPECT_EQ(back.workload().zero_fraction(), 0.5);
}

TEST(VmProto, TruncatedBytesDoNotParse) {
  ferry::v1::VmLayout layout;
  layout.set_memory_bytes(1ull << 40);
  std::string wire = layout.SerializeAsString();
  ferry::v1::VmLayout back;
  EXPECT_FALSE(back.ParseFromString(wire.substr(0, wire.size() - 1)));
}

TEST(VmProto, UnspecifiedEnumIsZero) {
  ferry::v1::WorkloadSpec spec;
  EXPECT_EQ(spec.kind(), ferry::v1::WORKLOAD_KIND_UNSPECIFIED);
  EXPECT_EQ(static_cast<int>(ferry::v1::WORKLOAD_KIND_UNSPECIFIED), 0);
}

}  // namespace
