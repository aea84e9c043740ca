// VmRegistry: admission limits (VM count, memory), reservations for VMs
// arriving or being created, and the reasons a reservation is refused;
// what a snapshot excludes, and a lazily restored VM's watch and teardown.
#include "migration/agent/vm_registry.h"

#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using Refusal = VmRegistry::Refusal;

constexpr uint64_t kGiB = 1ull << 30;

std::shared_ptr<HostedVm> Vm(const std::string& name) {
  auto vm = std::make_shared<HostedVm>();
  vm->name = name;
  return vm;
}

TEST(VmRegistryTest, ReservesUntilTheVmIsAdded) {
  VmRegistry r({.max_vms = 4, .max_memory = 4 * kGiB});
  EXPECT_EQ(r.Reserve("web", kGiB), Refusal::kNone);
  EXPECT_TRUE(r.IsReserved("web"));
  EXPECT_EQ(r.MemoryInUse(), kGiB);
  // Reserved is not yet hosted: lookups say it is arriving.
  EXPECT_THAT(r.Find("web"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("arriving")));
  r.Add("web", kGiB, Vm("web"));
  EXPECT_FALSE(r.IsReserved("web"));
  EXPECT_EQ(r.MemoryInUse(), kGiB);
  EXPECT_EQ(r.count(), 1);
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<HostedVm> found, r.Find("web"));
  EXPECT_EQ(found->name, "web");
}

// A preflight check asks what Reserve would say, and reserves nothing.
TEST(VmRegistryTest, AReservationSaysWhatItIsFor) {
  VmRegistry r({.max_vms = 4, .max_memory = 4 * kGiB});
  EXPECT_EQ(r.Reserve("copy", kGiB, "is being restored from /srv/snap"), Refusal::kNone);
  EXPECT_THAT(r.Find("copy"), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("'copy' is being restored from /srv/snap")));
  EXPECT_EQ(r.MemoryInUse(), kGiB);
  EXPECT_EQ(r.Reserve("copy", kGiB), Refusal::kNameTaken);
}

TEST(VmRegistryTest, WouldRefuseAnswersAsReserveWithoutReserving) {
  VmRegistry r({.max_vms = 2, .max_memory = 2 * kGiB});
  EXPECT_EQ(r.WouldRefuse("web", kGiB), Refusal::kNone);
  EXPECT_FALSE(r.IsReserved("web"));
  EXPECT_EQ(r.count(), 0);
  EXPECT_EQ(r.MemoryInUse(), 0u);
  EXPECT_EQ(r.WouldRefuse("web", 3 * kGiB), Refusal::kMemoryLimit);
  ASSERT_EQ(r.Reserve("web", kGiB), Refusal::kNone);
  EXPECT_EQ(r.WouldRefuse("web", kGiB), Refusal::kNameTaken);
  ASSERT_EQ(r.Reserve("db", kGiB), Refusal::kNone);
  EXPECT_EQ(r.WouldRefuse("cache", 1), Refusal::kVmLimit);
}

TEST(VmRegistryTest, RefusesATakenName) {
  VmRegistry r({.max_vms = 4, .max_memory = 4 * kGiB});
  r.Add("web", kGiB, Vm("web"));
  EXPECT_EQ(r.Reserve("web", kGiB), Refusal::kNameTaken);
  ASSERT_EQ(r.Reserve("db", kGiB), Refusal::kNone);
  EXPECT_EQ(r.Reserve("db", kGiB), Refusal::kNameTaken);  // reserved counts too
}

TEST(VmRegistryTest, RefusesPastTheVmLimitCountingReservations) {
  VmRegistry r({.max_vms = 2, .max_memory = 64 * kGiB});
  r.Add("a", kGiB, Vm("a"));
  ASSERT_EQ(r.Reserve("b", kGiB), Refusal::kNone);
  EXPECT_EQ(r.Reserve("c", kGiB), Refusal::kVmLimit);
  r.Unreserve("b");
  EXPECT_EQ(r.Reserve("c", kGiB), Refusal::kNone);
}

TEST(VmRegistryTest, RefusesPastTheMemoryLimitCountingReservations) {
  VmRegistry r({.max_vms = 8, .max_memory = 3 * kGiB});
  r.Add("a", kGiB, Vm("a"));
  ASSERT_EQ(r.Reserve("b", kGiB), Refusal::kNone);
  EXPECT_EQ(r.Reserve("c", 2 * kGiB), Refusal::kMemoryLimit);
  EXPECT_EQ(r.Reserve("c", kGiB), Refusal::kNone);  // exactly at the limit
  ASSERT_NE(r.Remove("a"), nullptr);
  EXPECT_EQ(r.MemoryInUse(), 2 * kGiB);
  EXPECT_EQ(r.Remove("a"), nullptr);
}

TEST(VmRegistryTest, RefusalsAreWordedForTheirAudience) {
  VmRegistry r({.max_vms = 2, .max_memory = 2 * kGiB});
  EXPECT_OK(r.RefusalStatus(Refusal::kNone, "web", kGiB, false));
  EXPECT_THAT(r.RefusalStatus(Refusal::kNameTaken, "web", kGiB, false),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already exists")));
  EXPECT_THAT(r.RefusalStatus(Refusal::kNameTaken, "web", kGiB, true),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("the destination")));
  EXPECT_THAT(r.RefusalStatus(Refusal::kVmLimit, "web", kGiB, false),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max-vms")));
  EXPECT_THAT(r.RefusalStatus(Refusal::kMemoryLimit, "web", kGiB, false),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max-memory")));
  EXPECT_THAT(r.RefusalStatus(Refusal::kMemoryLimit, "web", kGiB, true),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("memory limit")));
}

TEST(VmRegistryTest, UnknownNameIsNotFound) {
  VmRegistry r({});
  EXPECT_THAT(r.Find("nope"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST(VmRegistryTest, TakeAllEmptiesTheRegistry) {
  VmRegistry r({});
  r.Add("a", kGiB, Vm("a"));
  r.Add("b", kGiB, Vm("b"));
  ASSERT_EQ(r.Reserve("c", kGiB), Refusal::kNone);
  EXPECT_EQ(r.TakeAll().size(), 2u);
  EXPECT_EQ(r.count(), 0);
  EXPECT_EQ(r.MemoryInUse(), 0u);
}

TEST(VmRegistryTest, CanMigrateSaysWhyNot) {
  HostedVm vm;
  vm.name = "web";
  EXPECT_OK(CanMigrate(vm));
  vm.migration_id = "mig-1";
  EXPECT_THAT(CanMigrate(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("already being migrated (mig-1)")));
  vm.migration_id.clear();
  vm.held_by = "mig-0";
  vm.held_reason = "stream broke";
  EXPECT_THAT(CanMigrate(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--force")));
}

TEST(VmRegistryTest, ASnapshotExcludesMigratingAndAnotherSnapshot) {
  HostedVm vm;
  vm.name = "web";
  EXPECT_OK(CanSnapshot(vm));
  vm.snapshot_to = "/srv/snap/web-1";
  EXPECT_THAT(CanMigrate(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("being snapshotted (to /srv/snap/web-1)")));
  EXPECT_THAT(CanSnapshot(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("already being snapshotted")));
  vm.snapshot_to.clear();
  vm.verifying = 1;
  EXPECT_THAT(CanSnapshot(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("being verified")));
  vm.verifying = 0;
  vm.migration_id = "mig-1";
  EXPECT_THAT(CanSnapshot(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("being migrated (mig-1)")));
}

TEST(VmRegistryTest, AFailedVmIsNeitherMigratedNorSnapshotted) {
  HostedVm vm;
  vm.name = "web";
  vmm::VmConfig c;
  c.memory_bytes = 4ull << 20;
  c.vcpus = 1;
  c.workload.kind = vmm::WorkloadKind::kIdle;
  ASSERT_OK_AND_ASSIGN(vm.vm, vmm::Vm::Create(c));
  ASSERT_OK(vm.vm->LoadInitialMemory());
  ASSERT_OK(vm.vm->Start());
  EXPECT_OK(CanMigrate(vm));
  EXPECT_OK(CanSnapshot(vm));
  vm.vm->Fail(absl::DataLossError("page 7 does not match its checksum"));
  EXPECT_THAT(CanMigrate(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("failed (page 7 does not match")));
  EXPECT_THAT(CanSnapshot(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("failed (page 7 does not match")));
  vm.vm->Stop();
}

// A VM's memory grows only within the limit, counting everything else
// hosted and reserved; a shrink always fits; what is counted follows.
TEST(VmRegistryTest, AGrowIsAdmittedAgainstTheMemoryLimit) {
  VmRegistry r({.max_vms = 8, .max_memory = 4 * kGiB});
  r.Add("web", kGiB, Vm("web"));
  ASSERT_EQ(r.Reserve("db", kGiB), Refusal::kNone);
  EXPECT_OK(r.Resize("web", 2 * kGiB));
  EXPECT_EQ(r.MemoryOf("web"), 2 * kGiB);
  EXPECT_EQ(r.MemoryInUse(), 3 * kGiB);
  EXPECT_THAT(r.Resize("web", 3 * kGiB + 1),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max-memory")));
  EXPECT_EQ(r.MemoryOf("web"), 2 * kGiB);  // a refused grow changes nothing
  EXPECT_OK(r.Resize("web", 3 * kGiB));    // exactly at the limit
  EXPECT_OK(r.Resize("web", kGiB / 2));    // a shrink gives memory back
  EXPECT_EQ(r.MemoryInUse(), kGiB + kGiB / 2);
  // The reservation it freed room for can now be taken by another.
  EXPECT_EQ(r.Reserve("cache", 2 * kGiB), Refusal::kNone);
  // Only a hosted VM is resized.
  EXPECT_THAT(r.Resize("db", kGiB), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(r.Resize("nope", kGiB), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(r.MemoryOf("nope"), 0u);
}

// A memory change excludes migrating, snapshotting and another change; a
// VM being migrated, snapshotted, verified or held is not changed.
TEST(VmRegistryTest, AMemoryChangeExcludesTheOthers) {
  HostedVm vm;
  vm.name = "web";
  EXPECT_OK(CanChangeMemory(vm));
  vm.changing_memory = true;
  EXPECT_THAT(CanChangeMemory(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("another memory change")));
  EXPECT_THAT(CanMigrate(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("changing its memory")));
  EXPECT_THAT(CanSnapshot(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("changing its memory")));
  vm.changing_memory = false;
  vm.migration_id = "mig-1";
  EXPECT_THAT(CanChangeMemory(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("being migrated (mig-1)")));
  vm.migration_id.clear();
  vm.snapshot_to = "/srv/snap/web-1";
  EXPECT_THAT(CanChangeMemory(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            HasSubstr("being snapshotted (to /srv/snap/web-1)")));
  vm.snapshot_to.clear();
  vm.verifying = 1;
  EXPECT_THAT(CanChangeMemory(vm),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("being verified")));
  vm.verifying = 0;
  vm.held_by = "mig-0";
  EXPECT_THAT(CanChangeMemory(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            HasSubstr("held paused by migration mig-0")));
}

// A VM whose memory map changed migrates and is snapshotted, with up to 256
// changes (each travels with it and is replayed); more are refused, saying
// how many.
TEST(VmRegistryTest, AVmWhoseMapChangedMigratesAndIsSnapshottedUpTo256Changes) {
  HostedVm vm;
  vm.name = "web";
  vmm::VmConfig c;
  c.memory_bytes = 8ull << 20;
  c.max_memory_bytes = 32ull << 20;
  c.vcpus = 1;
  c.workload.kind = vmm::WorkloadKind::kIdle;
  ASSERT_OK_AND_ASSIGN(vm.vm, vmm::Vm::Create(c));
  ASSERT_OK(vm.vm->LoadInitialMemory());
  ASSERT_OK(vm.vm->Start());
  EXPECT_OK(CanMigrate(vm));
  EXPECT_OK(CanSnapshot(vm));
  vmm::MemoryTransaction t;
  t.changes.push_back(vmm::MemoryChange::Resize("ram", 16ull << 20));
  ASSERT_OK(vm.vm->ChangeMemory(t).status());
  // Its regions and history travel in the Hello (up to 256 changes).
  EXPECT_OK(CanMigrate(vm));
  EXPECT_OK(CanSnapshot(vm));
  for (int i = 0; i < 256; ++i) {
    t.changes[0] = vmm::MemoryChange::Resize("ram", (i % 2 ? 16ull : 8ull) << 20);
    ASSERT_OK(vm.vm->ChangeMemory(t).status());
  }
  EXPECT_THAT(CanMigrate(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("changed 257 times: a migration carries at "
                                                 "most 256")));
  EXPECT_THAT(CanSnapshot(vm), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("changed 257 times: a snapshot holds at most "
                                                  "256")));
  // A change is never a reason to refuse another.
  EXPECT_OK(CanChangeMemory(vm));
  vm.vm->Stop();
}

// A lazily restored VM: not whole while it fills (no migration, no
// snapshot), its watch reports the fill's end once, and a HostedVm
// destroyed mid-fill stops the reader before the VM goes.
class RestoredVmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp ? tmp : "/tmp", "/snap-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    vmm::VmConfig c;
    c.memory_bytes = 32ull << 20;
    c.vcpus = 2;
    c.workload.kind = vmm::WorkloadKind::kUniform;
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<vmm::Vm> vm, vmm::Vm::Create(c));
    ASSERT_OK(vm->LoadInitialMemory());
    ASSERT_OK(vm->Start());
    ASSERT_OK(vm->Pause());
    ASSERT_OK(snapshot::WriteSnapshot(*vm, "web", dir_).status());
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<snapshot::Snapshot> snap, snapshot::Snapshot::Open(dir_));
    snapshot_ = std::move(snap);
  }

  // A HostedVm lazily restored from the snapshot, running.
  std::shared_ptr<HostedVm> Restore() {
    auto e = Vm("web-copy");
    e->restored_from = dir_;
    e->restore_mode = "lazy";
    auto lazy = snapshot::LazyRestore::Start(snapshot_, vmm::FaultMode::kExit, &e->vm);
    EXPECT_OK(lazy.status());
    if (lazy.ok()) e->lazy_restore = *std::move(lazy);
    return e;
  }

  std::string dir_;
  std::shared_ptr<const snapshot::Snapshot> snapshot_;
};

TEST_F(RestoredVmTest, TheWatchReportsTheFillOnceAndTheVmIsWholeAfter) {
  std::shared_ptr<HostedVm> e = Restore();
  ASSERT_NE(e->lazy_restore, nullptr);
  absl::Mutex mu;
  int calls = 0;
  absl::Status got = absl::UnknownError("not called");
  e->WatchRestore([&](const absl::Status& s) {
    absl::MutexLock lock(&mu);
    ++calls;
    got = s;
  });
  {
    absl::MutexLock lock(&mu);
    auto called = [&] { return calls > 0; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&called), absl::Seconds(120)));
  }
  EXPECT_OK(got);
  EXPECT_FALSE(e->Filling());
  EXPECT_OK(CanMigrate(*e));
  EXPECT_OK(CanSnapshot(*e));
  e->EndRestoreWatch();
  e->EndRestoreWatch();  // idempotent
  absl::MutexLock lock(&mu);
  EXPECT_EQ(calls, 1);
}

TEST_F(RestoredVmTest, AVmDestroyedWhileItFillsStopsItsReaderFirst) {
  for (int i = 0; i < 3; ++i) {
    std::shared_ptr<HostedVm> e = Restore();
    ASSERT_NE(e->lazy_restore, nullptr);
    if (e->Filling()) {
      EXPECT_THAT(CanSnapshot(*e), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            HasSubstr("still being restored")));
      EXPECT_THAT(CanChangeMemory(*e), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                HasSubstr("still being restored")));
    }
    e->WatchRestore([](const absl::Status&) {});
    e.reset();  // the watch, the reader, then the VM: no crash, no hang
  }
}

}  // namespace
}  // namespace ferry::agent
