#include "vmm/memory_map.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry::vmm {
namespace {

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

}  // namespace

std::string BytesString(uint64_t bytes) {
  static constexpr struct {
    uint64_t unit;
    const char* name;
  } kUnits[] = {{1ull << 40, "TiB"}, {1ull << 30, "GiB"}, {1ull << 20, "MiB"}, {1ull << 10, "KiB"}};
  for (const auto& u : kUnits)
    if (bytes >= u.unit && bytes % u.unit == 0) return absl::StrCat(bytes / u.unit, " ", u.name);
  return absl::StrCat(bytes, " bytes");
}

absl::StatusOr<MemoryMap> MemoryMap::ForSize(uint64_t memory_bytes, uint32_t page_size) {
  return FromRegions({{kMainRegion, 0, memory_bytes}}, page_size);
}

absl::StatusOr<MemoryMap> MemoryMap::FromRegions(std::vector<MemoryRegion> regions,
                                                 uint32_t page_size) {
  if (page_size == 0 || (page_size & (page_size - 1)) != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("page size ", page_size, " is not a power of two"));
  if (regions.size() > kMaxMemoryRegions)
    return absl::InvalidArgumentError(absl::StrFormat("%d memory regions; a VM has at most %d",
                                                      regions.size(), kMaxMemoryRegions));
  std::sort(regions.begin(), regions.end(),
            [](const MemoryRegion& a, const MemoryRegion& b) { return a.name < b.name; });
  bool has_main = false;
  std::vector<MemorySlot> slots;
  for (size_t i = 0; i < regions.size(); ++i) {
    const MemoryRegion& r = regions[i];
    if (!ValidName(r.name))
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region name \"%s\" is not 1 to 32 of [a-z0-9_-]", r.name));
    if (i > 0 && regions[i - 1].name == r.name)
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region \"%s\" is named twice", r.name));
    if (r.size == 0 || r.gpa % page_size || r.size % page_size)
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory region \"%s\" [%#x, +%#x) is empty or not aligned to the %d-byte page", r.name,
          r.gpa, r.size, page_size));
    const int index = static_cast<int>(i);
    if (r.name == kMainRegion) {
      has_main = true;
      if (r.gpa != 0)
        return absl::InvalidArgumentError(absl::StrFormat(
            "the main memory region \"%s\" starts at gpa 0, not %#x", kMainRegion, r.gpa));
      if (r.size > kMaxGuestPhysical - (kHighMemoryBase - kLowMemoryTop))
        return absl::InvalidArgumentError(
            absl::StrFormat("the main memory region's %s would end past %s of guest-physical space",
                            BytesString(r.size), BytesString(kMaxGuestPhysical)));
      slots.push_back({0, std::min(r.size, kLowMemoryTop), 0, index, 0});
      if (r.size > kLowMemoryTop)
        slots.push_back({kHighMemoryBase, r.size - kLowMemoryTop, 0, index, kLowMemoryTop});
      continue;
    }
    if (r.gpa >= kMaxGuestPhysical || r.size > kMaxGuestPhysical - r.gpa)
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region \"%s\" [%#x, +%s) ends past %s of guest-physical space",
                          r.name, r.gpa, BytesString(r.size), BytesString(kMaxGuestPhysical)));
    if (r.gpa < kHighMemoryBase && r.gpa + r.size > kLowMemoryTop)
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory region \"%s\" [%#x, %#x) overlaps the hole [%#x, %#x) kept for the firmware",
          r.name, r.gpa, r.gpa + r.size, kLowMemoryTop, kHighMemoryBase));
    slots.push_back({r.gpa, r.size, 0, index, 0});
  }
  if (!has_main)
    return absl::InvalidArgumentError(
        absl::StrFormat("a memory map needs the main region \"%s\"", kMainRegion));
  std::sort(slots.begin(), slots.end(),
            [](const MemorySlot& a, const MemorySlot& b) { return a.gpa < b.gpa; });
  uint64_t offset = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (i > 0 && slots[i].gpa < slots[i - 1].gpa + slots[i - 1].size)
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region \"%s\" at [%#x, %#x) overlaps region \"%s\" at [%#x, %#x)",
                          regions[slots[i].region].name, slots[i].gpa, slots[i].gpa + slots[i].size,
                          regions[slots[i - 1].region].name, slots[i - 1].gpa,
                          slots[i - 1].gpa + slots[i - 1].size));
    slots[i].offset = offset;
    offset += slots[i].size;
  }
  return MemoryMap(std::move(regions), std::move(slots), page_size, offset);
}

int MemoryMap::FindRegion(absl::string_view name) const {
  for (size_t i = 0; i < regions_.size(); ++i)
    if (regions_[i].name == name) return static_cast<int>(i);
  return -1;
}

absl::StatusOr<uint64_t> MemoryMap::GpaToOffset(uint64_t gpa, uint64_t len) const {
  for (const MemorySlot& s : slots_) {
    if (gpa >= s.gpa && gpa - s.gpa < s.size) {
      if (len > s.size - (gpa - s.gpa)) break;
      return s.offset + (gpa - s.gpa);
    }
  }
  return absl::OutOfRangeError(
      absl::StrFormat("guest-physical range [%#x, +%#x) is not inside one RAM slot of %s", gpa, len,
                      DebugString()));
}

uint64_t MemoryMap::OffsetToGpa(uint64_t offset) const {
  for (const MemorySlot& s : slots_)
    if (offset >= s.offset && offset - s.offset < s.size) return s.gpa + (offset - s.offset);
  return ~0ull;
}

bool MemoryMap::SameLayout(const MemoryMap& other) const {
  if (page_size_ != other.page_size_ || regions_.size() != other.regions_.size()) return false;
  for (size_t i = 0; i < regions_.size(); ++i)
    if (regions_[i].name != other.regions_[i].name || regions_[i].gpa != other.regions_[i].gpa ||
        regions_[i].size != other.regions_[i].size)
      return false;
  return true;
}

std::string MemoryMap::DebugString() const {
  std::string out = "{";
  for (size_t i = 0; i < slots_.size(); ++i)
    absl::StrAppendFormat(&out, "%s[%#x, %#x)", i ? ", " : "", slots_[i].gpa,
                          slots_[i].gpa + slots_[i].size);
  return out + "}";
}

std::string MemoryMap::RegionsString() const {
  std::string out;
  for (size_t i = 0; i < regions_.size(); ++i)
    absl::StrAppendFormat(&out, "%s%s %s at 0x%x", i ? ", " : "", regions_[i].name,
                          BytesString(regions_[i].size), regions_[i].gpa);
  return out;
}

}  // namespace ferry::vmm
