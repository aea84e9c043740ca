// The firmware the VMM writes for a KVM guest, checked without KVM: the
// image is in place, a software walk of the page tables maps RAM offsets to
// where the memory map puts them and the firmware to kFirmwareVa, and each
// boot page carries its vCPU's op stream.
#include "vmm/kvm/firmware.h"

#include <cstring>
#include <vector>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "vmm/guest/guest_image.h"

namespace ferry::vmm::kvm {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

struct Built {
  std::vector<uint8_t> fw;
  FirmwareLayout layout;
};

Built Build(uint64_t ram, int vcpus, WorkloadSpec spec = {}) {
  Built b;
  b.fw.assign(guest::FirmwareBytes(vcpus), 0);
  auto map = MemoryMap::ForSize(ram, 4096);
  EXPECT_OK(map.status());
  auto layout = BuildFirmware(*map, spec, vcpus, absl::MakeSpan(b.fw));
  EXPECT_OK(layout.status());
  if (layout.ok()) b.layout = *layout;
  return b;
}

TEST(Firmware, TheImageSitsAtTheEntryPoint) {
  Built b = Build(16 << 20, 2);
  ASSERT_GT(guest::kImage_size, 16u);
  EXPECT_EQ(std::memcmp(b.fw.data(), guest::kImage, guest::kImage_size), 0);
  EXPECT_EQ(InitialRegs(0).rip, guest::kFirmwareVa);
}

TEST(Firmware, PageTablesMapRamLinearlyAcrossTheHole) {
  // 5 GiB: 3 GiB below the PC hole, 2 GiB from 4 GiB up.
  Built b = Build(5ull << 30, 1);
  auto va = [&](uint64_t v) { return TranslateVa(b.fw, b.layout, v); };
  EXPECT_THAT(va(0), ::ferry::testing::IsOkAndHolds(0u));
  EXPECT_THAT(va(0x12345678), ::ferry::testing::IsOkAndHolds(0x12345678u));
  EXPECT_THAT(va((3ull << 30) - 8), ::ferry::testing::IsOkAndHolds((3ull << 30) - 8));
  EXPECT_THAT(va((3ull << 30) + 4096), ::ferry::testing::IsOkAndHolds((4ull << 30) + 4096));
  EXPECT_THAT(va((5ull << 30) - 1), ::ferry::testing::IsOkAndHolds((6ull << 30) - 1));
  EXPECT_THAT(va(5ull << 30), StatusIs(absl::StatusCode::kNotFound));
}

TEST(Firmware, TheFirmwareIsMappedAtItsVirtualAddress) {
  Built b = Build(16 << 20, 3);
  EXPECT_THAT(TranslateVa(b.fw, b.layout, guest::kFirmwareVa),
              ::ferry::testing::IsOkAndHolds(guest::kFirmwareGpa));
  const kvm_regs r = InitialRegs(2);
  const uint64_t area = guest::kFirmwareVa + guest::kVcpuAreaOffset + 2 * guest::kVcpuAreaBytes;
  EXPECT_EQ(r.rdi, area);
  EXPECT_EQ(r.rsi, area + guest::kStatusPageOffset);
  EXPECT_EQ(r.rsp, area + guest::kVcpuAreaBytes);
  EXPECT_THAT(TranslateVa(b.fw, b.layout, r.rsp - 8),
              ::ferry::testing::IsOkAndHolds(guest::kFirmwareGpa + guest::kVcpuAreaOffset +
                                             3 * guest::kVcpuAreaBytes - 8));
  // The stack of the last vCPU is inside the firmware slot.
  EXPECT_LE(r.rsp - guest::kFirmwareVa, b.layout.size);
}

TEST(Firmware, BootPagesCarryEachVcpusOpStream) {
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kZipf;
  spec.seed = 42;
  spec.ops_per_vcpu = 1000;
  Built b = Build(64 << 20, 2, spec);
  for (int v = 0; v < 2; ++v) {
    guest::BootParams p;
    std::memcpy(&p, VcpuArea(absl::MakeSpan(b.fw), v).data(), sizeof(p));
    EXPECT_EQ(p.magic, guest::kBootMagic);
    EXPECT_EQ(p.vcpu, static_cast<uint64_t>(v));
    EXPECT_EQ(p.ops_limit, 1000u);
    const guest::OpParams want = MakeOpParams(spec, (64 << 20) / 4096, 4096, v, 2);
    EXPECT_EQ(std::memcmp(&p.ops, &want, sizeof(want)), 0);
    EXPECT_EQ(p.region_va, want.pages * v * 4096);
    EXPECT_EQ(p.paced, 0u);
  }
}

TEST(Firmware, TheSameLayoutGivesTheSameBytes) {
  Built a = Build(32 << 20, 2), b = Build(32 << 20, 2);
  EXPECT_EQ(a.fw, b.fw);
}

TEST(Firmware, RamNotAMultipleOf2MiBIsRefused) {
  std::vector<uint8_t> fw(guest::FirmwareBytes(1));
  auto map = MemoryMap::ForSize(3 << 20, 4096);
  ASSERT_OK(map.status());
  EXPECT_THAT(BuildFirmware(*map, {}, 1, absl::MakeSpan(fw)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 MiB")));
}

TEST(Firmware, LongModeSregs) {
  Built b = Build(16 << 20, 1);
  const kvm_sregs s = LongModeSregs(b.layout, kvm_sregs{});
  EXPECT_EQ(s.cr3, b.layout.pml4_gpa);
  EXPECT_TRUE(s.efer & (1 << 10)) << "long mode active";
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.cs.selector, 8);
}

// A memory map change rewrites the RAM tables, each vCPU's ops and region
// and bumps its map generation; the status page and the rest stay.
TEST(Firmware, AMapChangeRewritesTheRamTablesAndBootPages) {
  WorkloadSpec spec;
  spec.kind = WorkloadKind::kUniform;
  spec.ops_per_vcpu = 77;
  Built b = Build(64 << 20, 2, spec);
  guest::BootParams before;
  std::memcpy(&before, VcpuArea(absl::MakeSpan(b.fw), 1).data() + guest::kBootPageOffset,
              sizeof(before));
  std::memset(VcpuArea(absl::MakeSpan(b.fw), 1).data() + guest::kStatusPageOffset, 0x5a, 8);
  // ram shrinks to 32 MiB and a region at 1 GiB follows it in RAM offset space.
  ASSERT_OK_AND_ASSIGN(
      MemoryMap next,
      MemoryMap::FromRegions({{"ram", 0, 32 << 20}, {"dimm0", 1 << 30, 64 << 20}}, 4096));
  ASSERT_OK(UpdateFirmwareForMap(next, spec, 2, b.layout, absl::MakeSpan(b.fw)));
  auto va = [&](uint64_t v) { return TranslateVa(b.fw, b.layout, v); };
  EXPECT_THAT(va(0x1000), ::ferry::testing::IsOkAndHolds(0x1000u));
  EXPECT_THAT(va((32 << 20) + 8), ::ferry::testing::IsOkAndHolds((1u << 30) + 8));
  EXPECT_THAT(va((96 << 20) - 8), ::ferry::testing::IsOkAndHolds((1u << 30) + (64 << 20) - 8));
  EXPECT_THAT(va(96 << 20), StatusIs(absl::StatusCode::kNotFound));
  guest::BootParams after;
  std::memcpy(&after, VcpuArea(absl::MakeSpan(b.fw), 1).data() + guest::kBootPageOffset,
              sizeof(after));
  EXPECT_EQ(after.map_generation, before.map_generation + 1);
  EXPECT_EQ(after.ops_limit, 77u);
  EXPECT_EQ(after.magic, guest::kBootMagic);
  EXPECT_EQ(after.ops.pages, (96u << 20) / 4096 / 2);
  EXPECT_EQ(after.region_va, after.ops.pages * 4096);
  EXPECT_EQ(VcpuArea(absl::MakeSpan(b.fw), 1)[guest::kStatusPageOffset], 0x5a);
  // A map KVM cannot take (not 2 MiB aligned) is refused before anything is written.
  ASSERT_OK_AND_ASSIGN(MemoryMap odd,
                       MemoryMap::FromRegions({{"ram", 0, (32 << 20) + 4096}}, 4096));
  EXPECT_THAT(UpdateFirmwareForMap(odd, spec, 2, b.layout, absl::MakeSpan(b.fw)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 MiB")));
  EXPECT_THAT(va((32 << 20) + 8), ::ferry::testing::IsOkAndHolds((1u << 30) + 8));
}

}  // namespace
}  // namespace ferry::vmm::kvm
