// memory_change: ChangeVmMemoryRequest -> vmm::MemoryTransaction (bounds,
// the UNSPECIFIED kind, fields that do not belong to a kind), a
// supervisor's plan from GetVm's answer, and the maximum memory a VM gets.
#include "migration/agent/memory_change.h"

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

ferry::v1::MemoryChange Change(ferry::v1::MemoryChange::Kind kind, const std::string& region,
                               uint64_t gpa, uint64_t size) {
  ferry::v1::MemoryChange c;
  c.set_kind(kind);
  c.set_region(region);
  c.set_gpa(gpa);
  c.set_size(size);
  return c;
}

TEST(MemoryChangeTest, EachKindBecomesItsChangeInOrder) {
  ferry::v1::ChangeVmMemoryRequest r;
  r.set_name("web");
  *r.add_changes() = Change(ferry::v1::MemoryChange::KIND_RESIZE, "ram", 0, 128 * kMiB);
  *r.add_changes() = Change(ferry::v1::MemoryChange::KIND_ADD, "dimm0", kGiB, 64 * kMiB);
  *r.add_changes() = Change(ferry::v1::MemoryChange::KIND_REMOVE, "dimm1", 0, 0);
  ASSERT_OK_AND_ASSIGN(vmm::MemoryTransaction t, TransactionFromRequest(r));
  ASSERT_EQ(t.changes.size(), 3u);
  EXPECT_EQ(t.changes[0].kind, vmm::MemoryChange::Kind::kResize);
  EXPECT_EQ(t.changes[0].region, "ram");
  EXPECT_EQ(t.changes[0].size, 128 * kMiB);
  EXPECT_EQ(t.changes[1].kind, vmm::MemoryChange::Kind::kAdd);
  EXPECT_EQ(t.changes[1].gpa, kGiB);
  EXPECT_EQ(t.changes[1].size, 64 * kMiB);
  EXPECT_EQ(t.changes[2].kind, vmm::MemoryChange::Kind::kRemove);
  EXPECT_EQ(TransactionString(t),
            "resize ram to 128 MiB, add dimm0 (64 MiB at 0x40000000), remove dimm1");
}

TEST(MemoryChangeTest, MalformedRequestsAreRefusedNamingTheChange) {
  ferry::v1::ChangeVmMemoryRequest none;
  EXPECT_THAT(TransactionFromRequest(none),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no memory change given")));

  ferry::v1::ChangeVmMemoryRequest unspecified;
  *unspecified.add_changes() = Change(ferry::v1::MemoryChange::KIND_RESIZE, "ram", 0, 128 * kMiB);
  *unspecified.add_changes() =
      Change(ferry::v1::MemoryChange::KIND_UNSPECIFIED, "dimm0", 0, 64 * kMiB);
  EXPECT_THAT(TransactionFromRequest(unspecified),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("change 2 (region dimm0): the kind is unspecified")));

  ferry::v1::ChangeVmMemoryRequest unknown;
  *unknown.add_changes() =
      Change(static_cast<ferry::v1::MemoryChange::Kind>(9), "dimm0", 0, 64 * kMiB);
  EXPECT_THAT(TransactionFromRequest(unknown),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kind 9 is unknown")));

  ferry::v1::ChangeVmMemoryRequest moved;
  *moved.add_changes() = Change(ferry::v1::MemoryChange::KIND_RESIZE, "ram", kGiB, 128 * kMiB);
  EXPECT_THAT(TransactionFromRequest(moved),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("change 1 (resize ram to 128 MiB): a gpa is for an added")));

  ferry::v1::ChangeVmMemoryRequest sized;
  *sized.add_changes() = Change(ferry::v1::MemoryChange::KIND_REMOVE, "dimm0", 0, kMiB);
  EXPECT_THAT(TransactionFromRequest(sized),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a remove takes no size")));
}

TEST(MemoryChangeTest, PeerSuppliedSizesAreBoundedBeforeTheyAreEchoed) {
  ferry::v1::ChangeVmMemoryRequest many;
  for (int i = 0; i <= kMaxMemoryChanges; ++i)
    *many.add_changes() = Change(ferry::v1::MemoryChange::KIND_REMOVE, "dimm0", 0, 0);
  EXPECT_THAT(BoundMemoryChanges(many),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("65 memory changes")));
  EXPECT_THAT(TransactionFromRequest(many), StatusIs(absl::StatusCode::kInvalidArgument));
  many.mutable_changes()->RemoveLast();
  EXPECT_OK(BoundMemoryChanges(many));

  ferry::v1::ChangeVmMemoryRequest long_name;
  const std::string name(kMaxRegionNameBytes + 1, 'a');
  *long_name.add_changes() = Change(ferry::v1::MemoryChange::KIND_REMOVE, name, 0, 0);
  absl::Status s = BoundMemoryChanges(long_name);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          HasSubstr("change 1: the region name is 65 bytes, at most 64")));
  EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr(name)));
}

// A supervisor plans from what GetVm says, as the VM will.
TEST(MemoryChangeTest, APlanFromTheVmsDescription) {
  ferry::v1::Vm vm;
  vm.mutable_layout()->set_page_size(4096);
  vm.mutable_layout()->set_vcpus(2);
  vm.mutable_layout()->set_backend(ferry::v1::VM_BACKEND_SOFT);
  vm.set_max_memory_bytes(256 * kMiB);
  ferry::v1::MemoryRegion* ram = vm.add_regions();
  ram->set_name("ram");
  ram->set_size(64 * kMiB);
  vmm::MemoryTransaction t;
  t.changes.push_back(vmm::MemoryChange::Resize("ram", 128 * kMiB));
  t.changes.push_back(vmm::MemoryChange::Add("dimm0", kGiB, 64 * kMiB));
  EXPECT_THAT(PlannedMemoryBytes(vm, t), IsOkAndHolds(192 * kMiB));
  t.changes[1].size = 192 * kMiB;
  EXPECT_THAT(PlannedMemoryBytes(vm, t),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("maximum is 256 MiB")));
  t.changes = {vmm::MemoryChange::Remove("dimm9")};
  EXPECT_THAT(PlannedMemoryBytes(vm, t),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no region dimm9")));
}

TEST(MemoryChangeTest, TheMaximumMemoryIsBoundedByTheAgentsLimit) {
  // Asked for: as asked, within the limit.
  EXPECT_THAT(ResolveMaxMemory(64 * kMiB, 256 * kMiB, 64 * kGiB), IsOkAndHolds(256 * kMiB));
  EXPECT_THAT(ResolveMaxMemory(64 * kMiB, 128 * kGiB, 64 * kGiB),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max-memory")));
  EXPECT_THAT(ResolveMaxMemory(64 * kMiB, 32 * kMiB, 64 * kGiB),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("below the memory size")));
  EXPECT_THAT(ResolveMaxMemory(64 * kMiB, 64 * kMiB + 4096, 64 * kGiB),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiple of 2 MiB")));
  // The default: four times, capped at the limit, never below the memory.
  EXPECT_THAT(ResolveMaxMemory(64 * kMiB, 0, 64 * kGiB), IsOkAndHolds(256 * kMiB));
  EXPECT_THAT(ResolveMaxMemory(kGiB, 0, 2 * kGiB), IsOkAndHolds(2 * kGiB));
  EXPECT_THAT(ResolveMaxMemory(kGiB, 0, 2 * kGiB + 4096), IsOkAndHolds(2 * kGiB));
  EXPECT_THAT(ResolveMaxMemory(4 * kGiB, 0, 2 * kGiB), IsOkAndHolds(4 * kGiB));
  EXPECT_THAT(ResolveMaxMemory(512 * kMiB, 0, 2 * kGiB), IsOkAndHolds(2 * kGiB));
  // A size four times of which does not fit 64 bits is never multiplied.
  EXPECT_THAT(ResolveMaxMemory(1ull << 63, 0, 64 * kGiB), IsOkAndHolds(1ull << 63));
}

}  // namespace
}  // namespace ferry::agent
