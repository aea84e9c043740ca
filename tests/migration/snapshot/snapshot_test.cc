#include "migration/snapshot/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/eventually.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/snapshot/snapshot_io.h"
#include "vmm/digest.h"

namespace ferry::snapshot {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using vmm::FaultMode;
using vmm::MemoryDigest;
using vmm::Vm;
using vmm::VmConfig;

constexpr uint64_t kMemory = 16ull << 20;  // 4096 pages

VmConfig Config() {
  VmConfig c;
  c.memory_bytes = kMemory;
  c.vcpus = 2;
  c.workload.kind = vmm::WorkloadKind::kUniform;
  c.workload.ops_per_vcpu = 0;  // runs until stopped
  c.workload.seed = 11;
  c.workload.zero_fraction = 0.25;
  c.workload.write_fraction = 1;  // every op changes memory
  return c;
}

std::vector<uint64_t> OpsOf(const Vm& vm) {
  std::vector<uint64_t> ops;
  for (const vmm::VcpuStats& v : vm.Stats().vcpus) ops.push_back(v.counters.ops);
  return ops;
}

// Runs `vm` until every vCPU did at least `more` ops beyond `from`.
void RunFor(Vm& vm, const std::vector<uint64_t>& from, uint64_t more) {
  ASSERT_TRUE(Eventually([&] {
    std::vector<uint64_t> now = OpsOf(vm);
    for (size_t i = 0; i < now.size(); ++i)
      if (now[i] < from[i] + more) return false;
    return true;
  })) << "the vCPUs made no progress";
}

// The VM's memory equals a replay of its op stream to its per-vCPU counts:
// what it would hold had it never been snapshotted.
void ExpectReplayDigest(Vm& vm) {
  const std::vector<uint64_t> ops = OpsOf(vm);
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, vm.Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, vmm::ReferenceDigest(vm.config(), ops));
  EXPECT_EQ(got.digest, want.digest) << vmm::DifferingPages(got, want).size() << " pages differ";
}

std::string TempDir() {
  std::string t =
      absl::StrCat(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp", "/snapXXXXXX");
  EXPECT_NE(mkdtemp(t.data()), nullptr);
  return t;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteAllTo(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

class SnapshotTest : public ::testing::Test {
 protected:
  // A guest that ran, paused and written to dir_/snap.
  void SetUp() override {
    base_ = TempDir();
    dir_ = base_ + "/snap";
    ASSERT_OK_AND_ASSIGN(vm_, Vm::Create(Config()));
    ASSERT_OK(vm_->LoadInitialMemory());
    ASSERT_OK(vm_->Start());
    RunFor(*vm_, {0, 0}, 2000);
    ASSERT_OK(vm_->Pause());
    ASSERT_OK_AND_ASSIGN(summary_, WriteSnapshot(*vm_, "web", dir_));
    ops_ = OpsOf(*vm_);
  }

  std::string base_, dir_;
  std::unique_ptr<Vm> vm_;
  SnapshotSummary summary_;
  std::vector<uint64_t> ops_;
};

TEST_F(SnapshotTest, WritesOwnerOnlyFilesAndSkipsZeroPages) {
  ASSERT_OK_AND_ASSIGN(MemoryDigest d, vm_->Digest());
  EXPECT_EQ(summary_.memory_digest, d.digest);
  EXPECT_EQ(summary_.guest_ops, ops_[0] + ops_[1]);
  EXPECT_EQ(summary_.data_pages + summary_.zero_pages, kMemory / 4096);
  EXPECT_GT(summary_.zero_pages, 0u) << "a quarter of the initial pages are zero";
  struct stat st;
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  for (const char* f : {kManifestFile, kMemoryFile}) {
    ASSERT_EQ(stat(absl::StrCat(dir_, "/", f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  // Sparse: the memory file holds the data pages, not the holes.
  ASSERT_EQ(stat(absl::StrCat(dir_, "/", kMemoryFile).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kMemory);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, summary_.data_pages * 4096 + (64 << 10));
  ASSERT_OK_AND_ASSIGN(auto snap, Snapshot::Open(dir_));
  EXPECT_EQ(snap->manifest().vm_name(), "web");
  EXPECT_EQ(snap->vcpu_ops(), ops_);
}

TEST_F(SnapshotTest, EagerRestoreRunsOnFromTheSnapshot) {
  ASSERT_OK_AND_ASSIGN(auto snap, Snapshot::Open(dir_));
  ASSERT_OK_AND_ASSIGN(auto vm, RestoreEager(*snap));
  ASSERT_OK_AND_ASSIGN(MemoryDigest at_start, vm->Digest());
  EXPECT_EQ(at_start.digest, summary_.memory_digest) << "the snapshot's memory, whole";
  EXPECT_EQ(OpsOf(*vm), ops_) << "the vCPUs go on from where they were";
  ASSERT_OK(vm->Start());
  RunFor(*vm, ops_, 2000);
  ASSERT_OK(vm->Pause());
  ExpectReplayDigest(*vm);
}

class LazyRestoreTest : public SnapshotTest, public ::testing::WithParamInterface<FaultMode> {};

TEST_P(LazyRestoreTest, RunsAtOnceAndEndsWithTheNeverSnapshottedDigest) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Snapshot> snap, Snapshot::Open(dir_));
  std::unique_ptr<Vm> vm;
  ASSERT_OK_AND_ASSIGN(auto restore, LazyRestore::Start(snap, GetParam(), &vm));
  ASSERT_NE(vm, nullptr);
  RunFor(*vm, ops_, 2000);
  // Paused first (the reader fills a paused VM): the replay below is as
  // long as the guest ran, however long the fill takes on a loaded machine.
  ASSERT_OK(vm->Pause());
  ASSERT_OK(restore->Wait());
  const LazyRestoreStats st = restore->Stats();
  std::cout << vmm::FaultModeName(GetParam()) << ": " << st.pager.faults << " faults, "
            << st.pages_background << " pages by the background reader, " << st.zero_pages
            << " zero pages never read; running after " << (st.running_ns - st.started_ns) / 1000
            << " us, filled after " << (st.filled_ns - st.started_ns) / 1000 << " us\n";
  EXPECT_GT(st.filled_ns, st.running_ns);
  EXPECT_EQ(st.zero_pages, summary_.zero_pages);
  EXPECT_EQ(st.pager.faults > 0 || st.pages_background > 0, true);
  EXPECT_EQ(vm->pager()->missing_pages(), 0u);
  ExpectReplayDigest(*vm);
  restore.reset();  // before the VM (its contract)
}

INSTANTIATE_TEST_SUITE_P(BothFaultModes, LazyRestoreTest,
                         ::testing::Values(FaultMode::kExit, FaultMode::kBlocking),
                         [](const auto& info) { return vmm::FaultModeName(info.param); });

// A VM whose memory map changed (grown, a region added, then shrunk) is
// written as format version 2 with its regions and history; restored
// eagerly and lazily it has the same map, its memory whole, and runs on to
// the digest of a replay through every change.
TEST(ChangedMapSnapshot, RestoresTheSameMapAndReplaysItsChanges) {
  const std::string dir = TempDir() + "/snap";
  VmConfig c = Config();
  c.max_memory_bytes = 64ull << 20;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> vm, Vm::Create(c));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  RunFor(*vm, {0, 0}, 1000);
  ASSERT_OK(vm->ChangeMemory({{vmm::MemoryChange::Resize("ram", 24ull << 20),
                               vmm::MemoryChange::Add("dimm0", 1ull << 30, 8ull << 20)}})
                .status());
  RunFor(*vm, OpsOf(*vm), 1000);
  ASSERT_OK(vm->ChangeMemory({{vmm::MemoryChange::Resize("dimm0", 4ull << 20)}}).status());
  RunFor(*vm, OpsOf(*vm), 1000);
  ASSERT_OK(vm->Pause());
  ASSERT_OK_AND_ASSIGN(SnapshotSummary summary, WriteSnapshot(*vm, "web", dir));
  const std::vector<uint64_t> ops = OpsOf(*vm);
  EXPECT_EQ(summary.memory_bytes, 28ull << 20);
  EXPECT_EQ(ReadAll(dir + "/" + kManifestFile)[8], kSnapshotFormatVersionChangedMap);
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Snapshot> snap, Snapshot::Open(dir));
  EXPECT_EQ(snap->num_pages(), (28ull << 20) / 4096);
  EXPECT_EQ(snap->config().history.size(), 2u);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Vm> eager, RestoreEager(*snap));
  EXPECT_EQ(eager->memory().map().RegionsString(), vm->memory().map().RegionsString());
  ASSERT_OK_AND_ASSIGN(MemoryDigest at_start, eager->Digest());
  EXPECT_EQ(at_start.digest, summary.memory_digest);
  ASSERT_OK(eager->Start());
  RunFor(*eager, ops, 1000);
  ASSERT_OK(eager->Pause());
  ASSERT_OK_AND_ASSIGN(MemoryDigest got, eager->Digest());
  ASSERT_OK_AND_ASSIGN(MemoryDigest want, vmm::ReferenceDigest(eager->config(), OpsOf(*eager),
                                                               eager->MemoryHistory()));
  EXPECT_EQ(got.digest, want.digest) << vmm::DifferingPages(got, want).size() << " pages differ";

  std::unique_ptr<Vm> lazy;
  ASSERT_OK_AND_ASSIGN(auto restore, LazyRestore::Start(snap, FaultMode::kExit, &lazy));
  RunFor(*lazy, ops, 1000);
  ASSERT_OK(lazy->Pause());
  ASSERT_OK(restore->Wait());
  EXPECT_EQ(lazy->memory().map().RegionsString(), vm->memory().map().RegionsString());
  ASSERT_OK_AND_ASSIGN(got, lazy->Digest());
  ASSERT_OK_AND_ASSIGN(want,
                       vmm::ReferenceDigest(lazy->config(), OpsOf(*lazy), lazy->MemoryHistory()));
  EXPECT_EQ(got.digest, want.digest) << vmm::DifferingPages(got, want).size() << " pages differ";
  restore.reset();  // before the VM (its contract)
}

// An unchanged VM's snapshot stays format version 1 (readable by a Ferry
// that knows no other).
TEST_F(SnapshotTest, AnUnchangedVmIsWrittenAsVersionOne) {
  EXPECT_EQ(ReadAll(dir_ + "/" + kManifestFile)[8], kSnapshotFormatVersion);
}

TEST_F(SnapshotTest, ARunningVmOrAnExistingDirectoryIsRefused) {
  EXPECT_THAT(WriteSnapshot(*vm_, "web", dir_), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(WriteSnapshot(*vm_, "web", base_ + "/no/such/parent/snap"),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(vm_->Resume());
  EXPECT_THAT(WriteSnapshot(*vm_, "web", base_ + "/other"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("pause it first")));
  struct stat st;
  EXPECT_NE(stat((base_ + "/other").c_str(), &st), 0) << "nothing was created";
}

// Clones: eight lazy restores of one snapshot at once, each running on to
// a different point: each ends with the digest of its own replay (they
// share the file, never each other's writes).
TEST_F(SnapshotTest, EightClonesEachDivergeByTheirOwnWrites) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Snapshot> snap, Snapshot::Open(dir_));
  constexpr int kClones = 8;
  std::vector<std::unique_ptr<Vm>> vms(kClones);
  std::vector<std::unique_ptr<LazyRestore>> restores(kClones);
  for (int i = 0; i < kClones; ++i) {
    const FaultMode mode = i % 2 == 0 ? FaultMode::kExit : FaultMode::kBlocking;
    ASSERT_OK_AND_ASSIGN(restores[i], LazyRestore::Start(snap, mode, &vms[i]));
  }
  // Paused one after the other, each having run longer than the one before.
  std::vector<uint64_t> totals;
  for (int i = 0; i < kClones; ++i) {
    RunFor(*vms[i], ops_, 500 * (i + 1));
    ASSERT_OK(vms[i]->Pause());
    ASSERT_OK(restores[i]->Wait());
    totals.push_back(vms[i]->Stats().total_ops);
  }
  // The replays once every clone is paused (a replay is as long as its run).
  for (int i = 0; i < kClones; ++i) ExpectReplayDigest(*vms[i]);
  std::sort(totals.begin(), totals.end());
  EXPECT_EQ(std::unique(totals.begin(), totals.end()), totals.end())
      << "every clone stopped at its own point";
  for (auto& r : restores) r.reset();  // before the VMs
}

// A live snapshot: written while the guest runs (it keeps writing every
// op), then a short pause. The VM is left paused at the snapshot's point;
// the snapshot holds exactly its memory then, and a restore goes on from
// there to the never-snapshotted digest.
TEST(LiveSnapshot, WrittenWhileTheGuestWritesRestoresByDigest) {
  const std::string base = TempDir();
  ASSERT_OK_AND_ASSIGN(auto vm, Vm::Create(Config()));
  ASSERT_OK(vm->LoadInitialMemory());
  ASSERT_OK(vm->Start());
  RunFor(*vm, {0, 0}, 1000);
  const uint64_t before = vm->Stats().total_ops;
  ASSERT_OK_AND_ASSIGN(SnapshotSummary live,
                       WriteLiveSnapshot(*vm, "web", base + "/live", {.final_pages = 64}));
  EXPECT_TRUE(vm->paused());
  EXPECT_GT(live.guest_ops, before) << "the guest ran while its memory was written";
  EXPECT_GE(live.rounds, 2);
  EXPECT_GE(live.pages_written, live.data_pages);
  std::cout << "live: " << live.rounds << " rounds, " << live.pages_written
            << " pages written, paused " << live.paused_ns / 1000 << " us of "
            << live.write_ns / 1000 << " us\n";
  ASSERT_OK_AND_ASSIGN(MemoryDigest now, vm->Digest());
  EXPECT_EQ(now.digest, live.memory_digest);
  ExpectReplayDigest(*vm);
  ASSERT_OK(vm->Resume());  // the original runs on
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Snapshot> snap, Snapshot::Open(base + "/live"));
  EXPECT_TRUE(snap->manifest().live());
  std::unique_ptr<Vm> restored;
  ASSERT_OK_AND_ASSIGN(auto restore, LazyRestore::Start(snap, FaultMode::kExit, &restored));
  RunFor(*restored, snap->vcpu_ops(), 1000);
  ASSERT_OK(restored->Pause());
  ASSERT_OK(restore->Wait());
  ExpectReplayDigest(*restored);
  restore.reset();
  EXPECT_THAT(WriteLiveSnapshot(*restored, "web", base + "/paused"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("paused")));
}

// Every corruption is refused by Open() with its reason, before a VM exists.
TEST_F(SnapshotTest, EveryCorruptionOfTheManifestIsRefusedByName) {
  const std::string manifest_path = absl::StrCat(dir_, "/", kManifestFile);
  const std::string memory_path = absl::StrCat(dir_, "/", kMemoryFile);
  const std::string good = ReadAll(manifest_path);
  ASSERT_GT(good.size(), kManifestHeaderBytes);
  struct Case {
    std::string name;
    std::string bytes;
    absl::StatusCode code;
    std::string says;
  };
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  std::string version3 = good;  // 1 and 2 are read
  version3[8] = 3;
  std::string flipped = good;
  flipped[good.size() - 10] ^= 0x40;
  ferry::v1::SnapshotManifest m;
  ASSERT_TRUE(m.ParseFromString(good.substr(kManifestHeaderBytes)));
  ferry::v1::SnapshotManifest fewer_states = m;
  fewer_states.mutable_vcpu_states()->RemoveLast();
  ferry::v1::SnapshotManifest other_layout = m;
  other_layout.mutable_layout()->set_memory_bytes(kMemory * 2);
  ferry::v1::SnapshotManifest hole_with_data = m;
  for (uint64_t p = 0; p < kMemory / 4096; ++p) {
    if (!(static_cast<uint8_t>(m.data_bitmap()[p / 8]) >> (p % 8) & 1)) {
      hole_with_data.set_page_hashes(static_cast<int>(p), 12345);
      break;
    }
  }
  const std::vector<Case> cases = {
      {"empty", "", absl::StatusCode::kInvalidArgument, "not a Ferry snapshot"},
      {"bad magic", bad_magic, absl::StatusCode::kInvalidArgument, "magic"},
      {"truncated header", good.substr(0, 20), absl::StatusCode::kDataLoss, "truncated"},
      {"truncated manifest", good.substr(0, good.size() - 1), absl::StatusCode::kDataLoss,
       "truncated"},
      {"trailing bytes", good + "x", absl::StatusCode::kDataLoss, "trailing"},
      {"another version", version3, absl::StatusCode::kFailedPrecondition,
       "version 3; this ferry reads versions 1 and 2"},
      {"flipped bit", flipped, absl::StatusCode::kDataLoss, "checksum"},
      {"fewer vCPU states", EncodeManifestFile(fewer_states.SerializeAsString()),
       absl::StatusCode::kDataLoss, "vCPU states"},
      {"another layout", EncodeManifestFile(other_layout.SerializeAsString()),
       absl::StatusCode::kDataLoss, ""},
      {"a hole that is not zero", EncodeManifestFile(hole_with_data.SerializeAsString()),
       absl::StatusCode::kDataLoss, "not a zero page"},
  };
  for (const Case& c : cases) {
    WriteAllTo(manifest_path, c.bytes);
    EXPECT_THAT(Snapshot::Open(dir_), StatusIs(c.code, HasSubstr(c.says))) << c.name;
  }
  WriteAllTo(manifest_path, good);
  ASSERT_OK(Snapshot::Open(dir_).status());
  ASSERT_EQ(truncate(memory_path.c_str(), kMemory - 4096), 0);
  EXPECT_THAT(Snapshot::Open(dir_), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  ASSERT_EQ(unlink(manifest_path.c_str()), 0);
  EXPECT_THAT(Snapshot::Open(dir_), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Snapshot::Open(base_ + "/none"), StatusIs(absl::StatusCode::kNotFound));
}

// A corrupt page: the eager restore refuses it; the lazy one fails the VM
// when it reaches the page, loudly, and never installs it.
TEST_F(SnapshotTest, ACorruptPageIsNeverInstalled) {
  ASSERT_OK_AND_ASSIGN(auto snap, Snapshot::Open(dir_));
  uint64_t victim = 0;
  while (snap->IsZero(victim)) ++victim;
  {
    const std::string memory_path = absl::StrCat(dir_, "/", kMemoryFile);
    const int fd = open(memory_path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t b;
    ASSERT_EQ(pread(fd, &b, 1, victim * 4096 + 100), 1);
    b ^= 1;
    ASSERT_EQ(pwrite(fd, &b, 1, victim * 4096 + 100), 1);
    close(fd);
  }
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Snapshot> opened, Snapshot::Open(dir_));
  EXPECT_THAT(RestoreEager(*opened), StatusIs(absl::StatusCode::kDataLoss,
                                              HasSubstr(absl::StrCat("page ", victim, " of"))));
  std::unique_ptr<Vm> vm;
  ASSERT_OK_AND_ASSIGN(auto restore, LazyRestore::Start(opened, FaultMode::kExit, &vm));
  EXPECT_THAT(restore->Wait(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
  EXPECT_THAT(vm->Health(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_FALSE(vm->pager()->IsPresent(victim)) << "the page that did not check is not installed";
  for (vmm::VcpuRunState s : vm->States()) EXPECT_EQ(s, vmm::VcpuRunState::kFailed);
  restore.reset();
}

}  // namespace
}  // namespace ferry::snapshot
