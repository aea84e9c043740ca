#include "vmm/guest_memory.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace ferry::vmm {

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Create(const MemoryMap& map,
                                                                 uint64_t max_bytes) {
  const uint64_t reserve = std::max(max_bytes, map.memory_bytes());
  if (reserve % map.page_size() != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "maximum memory %d is not a multiple of the %d-byte page", reserve, map.page_size()));
  ASSIGN_OR_RETURN(sys::AddressReservation reservation, sys::AddressReservation::Create(reserve));
  std::unique_ptr<GuestMemory> memory(new GuestMemory(std::move(reservation)));
  absl::MutexLock lock(&memory->mu_);
  auto state = std::make_unique<State>(State{map, {}});
  for (const MemoryRegion& r : map.regions()) {
    ASSIGN_OR_RETURN(sys::MemfdFile file,
                     sys::MemfdFile::Create("ferry-guest-" + r.name, r.size, map.page_size()));
    memory->regions_.push_back(std::make_unique<Region>(Region{r.name, std::move(file)}));
  }
  for (const MemorySlot& s : map.slots())
    state->slot_files.push_back(memory->regions_[s.region].get());  // both sorted by name
  RETURN_IF_ERROR(memory->MapSlots(state->map, state->slot_files));
  memory->state_.store(state.get(), std::memory_order_release);
  memory->states_.push_back(std::move(state));
  return memory;
}

absl::Status GuestMemory::MapSlots(const MemoryMap& map, const std::vector<Region*>& files) {
  for (size_t i = 0; i < map.slots().size(); ++i) {
    const MemorySlot& s = map.slots()[i];
    RETURN_IF_ERROR(reservation_.Map(s.offset, files[i]->file, s.region_offset, s.size));
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::RemapSlots(const MemoryMap& before, const MemoryMap& next,
                                     const std::vector<Region*>& files) {
  // Each new slot's part that was already mapped (the same region from the
  // same file offset) keeps its pages: left alone where it stays, moved with
  // its page tables where it moves, so the guest takes no fault for it. The
  // moves go through a scratch reservation, so no move lands on a range
  // another one still has to leave. Only what is new is mapped fresh.
  struct Kept {
    size_t slot;        // in next
    uint64_t from = 0;  // RAM offset in before
    uint64_t len = 0;   // the part both maps have
  };
  // before's slots by region name and file offset (a region's slots cover
  // distinct parts of its file, so the pair names at most one).
  absl::flat_hash_map<std::pair<absl::string_view, uint64_t>, const MemorySlot*> mapped;
  for (const MemorySlot& o : before.slots())
    mapped.emplace(
        std::make_pair(absl::string_view(before.regions()[o.region].name), o.region_offset), &o);
  std::vector<Kept> kept;
  uint64_t moving = 0;
  for (size_t i = 0; i < next.slots().size(); ++i) {
    const MemorySlot& s = next.slots()[i];
    auto it = mapped.find(
        std::make_pair(absl::string_view(next.regions()[s.region].name), s.region_offset));
    if (it == mapped.end()) continue;
    const MemorySlot& o = *it->second;
    kept.push_back({i, o.offset, std::min(o.size, s.size)});
    if (o.offset != s.offset) moving += kept.back().len;
  }
  if (moving > 0) {
    ASSIGN_OR_RETURN(sys::AddressReservation scratch, sys::AddressReservation::Create(moving));
    // A move the kernel refuses (a range the kernel split into several
    // mappings) falls back to mapping that slot afresh from its file: its
    // data is safe there, only its page tables are lost.
    std::vector<uint64_t> parked(kept.size(), ~0ull);
    uint64_t at = 0;
    for (size_t j = 0; j < kept.size(); ++j) {
      Kept& k = kept[j];
      if (k.from == next.slots()[k.slot].offset) continue;
      if (scratch.MoveFrom(reservation_, k.from, at, k.len).ok()) {
        parked[j] = at;
      } else {
        k.len = 0;
      }
      at += k.len;
    }
    for (size_t j = 0; j < kept.size(); ++j) {
      Kept& k = kept[j];
      if (parked[j] == ~0ull) continue;
      if (!reservation_.MoveFrom(scratch, parked[j], next.slots()[k.slot].offset, k.len).ok())
        k.len = 0;
    }
  }
  std::vector<uint64_t> have(next.slots().size(), 0);  // per slot of next, what it kept
  for (const Kept& k : kept) have[k.slot] = k.len;
  for (size_t i = 0; i < next.slots().size(); ++i) {
    const MemorySlot& s = next.slots()[i];
    if (have[i] < s.size)
      RETURN_IF_ERROR(reservation_.Map(s.offset + have[i], files[i]->file,
                                       s.region_offset + have[i], s.size - have[i]));
  }
  return absl::OkStatus();
}

template <typename Fn>
absl::Status GuestMemory::ForEachPiece(uint64_t offset, uint64_t len, Fn fn) const {
  absl::ReaderMutexLock lock(&mu_);
  const State* st = state();
  const MemoryMap& map = st->map;
  if (offset > map.memory_bytes() || len > map.memory_bytes() - offset)
    return absl::OutOfRangeError(absl::StrFormat(
        "[%#x, +%#x) is beyond the %#x bytes of guest memory", offset, len, map.memory_bytes()));
  for (size_t i = 0; i < map.slots().size() && len > 0; ++i) {
    const MemorySlot& s = map.slots()[i];
    if (offset >= s.offset + s.size) continue;
    const uint64_t n = std::min(len, s.offset + s.size - offset);
    RETURN_IF_ERROR(fn(st->slot_files[i]->file, s.region_offset + (offset - s.offset), offset, n));
    offset += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Load(uint64_t offset, const uint8_t* data, uint64_t len) {
  const uint64_t start = offset;
  return ForEachPiece(offset, len, [&](sys::MemfdFile& f, uint64_t at, uint64_t ram, uint64_t n) {
    return f.WriteAt(at, data + (ram - start), n);
  });
}

absl::Status GuestMemory::Read(uint64_t offset, uint8_t* out, uint64_t len) const {
  const uint64_t start = offset;
  return ForEachPiece(offset, len, [&](sys::MemfdFile& f, uint64_t at, uint64_t ram, uint64_t n) {
    return f.ReadAt(at, out + (ram - start), n);
  });
}

absl::Status GuestMemory::DiscardOffsets(uint64_t offset, uint64_t len) {
  if (offset % page_size() != 0 || len % page_size() != 0)
    return absl::OutOfRangeError(
        absl::StrFormat("discard [%#x, +%#x): not page aligned", offset, len));
  return ForEachPiece(offset, len, [](sys::MemfdFile& f, uint64_t at, uint64_t, uint64_t n) {
    return f.PunchHole(at, n);
  });
}

absl::StatusOr<uint64_t> GuestMemory::AllocatedBytes() const {
  absl::ReaderMutexLock lock(&mu_);
  const State* st = state();
  uint64_t total = 0;
  for (size_t i = 0; i < st->slot_files.size(); ++i) {
    if (i > 0 && st->slot_files[i] == st->slot_files[i - 1]) continue;  // ram's low and high
    bool seen = false;
    for (size_t j = 0; j < i; ++j) seen |= st->slot_files[j] == st->slot_files[i];
    if (seen) continue;
    ASSIGN_OR_RETURN(uint64_t bytes, st->slot_files[i]->file.AllocatedBytes());
    total += bytes;
  }
  return total;
}

absl::StatusOr<uint8_t*> GuestMemory::HostAddress(uint64_t gpa, uint64_t len) const {
  ASSIGN_OR_RETURN(uint64_t offset, map().GpaToOffset(gpa, len));
  return host() + offset;
}

bool GuestMemory::Contains(const void* addr) const {
  auto a = reinterpret_cast<uintptr_t>(addr);
  auto base = reinterpret_cast<uintptr_t>(host());
  return a >= base && a - base < size();
}

absl::StatusOr<std::vector<bool>> GuestMemory::PresentPages() const {
  absl::ReaderMutexLock lock(&mu_);
  const State* st = state();
  const uint64_t ps = st->map.page_size();
  std::vector<bool> present(st->map.num_pages(), false);
  for (size_t i = 0; i < st->map.slots().size(); ++i) {
    const MemorySlot& s = st->map.slots()[i];
    ASSIGN_OR_RETURN(auto ranges,
                     st->slot_files[i]->file.DataRanges(s.region_offset, s.region_offset + s.size));
    for (const auto& [begin, end] : ranges)
      for (uint64_t off = begin & ~(ps - 1); off < end; off += ps)
        present[(s.offset + off - s.region_offset) / ps] = true;
  }
  return present;
}

absl::Status GuestMemory::ApplyMap(const MemoryMap& next) {
  absl::MutexLock lock(&mu_);
  const State* cur = state();
  if (next.page_size() != cur->map.page_size())
    return absl::FailedPreconditionError(absl::StrFormat(
        "the new map has %d-byte pages, this memory %d", next.page_size(), cur->map.page_size()));
  if (next.memory_bytes() > max_bytes())
    return absl::FailedPreconditionError(
        absl::StrFormat("the new map's %s is more than this VM's maximum memory of %s",
                        BytesString(next.memory_bytes()), BytesString(max_bytes())));
  // Every region by name, the ones created below too (a Region never moves).
  absl::flat_hash_map<absl::string_view, Region*> by_name;
  for (auto& r : regions_) by_name.emplace(r->name, r.get());
  // 1. Files: create new regions, grow growing ones (fallible, undoable).
  std::vector<std::unique_ptr<Region>> created;
  std::vector<std::pair<Region*, uint64_t>> grown;  // and their old sizes
  auto undo_files = [&] {
    for (auto& [r, old] : grown) (void)r->file.Resize(old);
  };
  for (const MemoryRegion& r : next.regions()) {
    if (auto it = by_name.find(r.name); it != by_name.end()) {
      Region* have = it->second;
      if (r.size > have->file.size()) {
        grown.emplace_back(have, have->file.size());
        if (absl::Status s = have->file.Resize(r.size); !s.ok()) {
          grown.pop_back();
          undo_files();
          return s;
        }
      }
      continue;
    }
    absl::StatusOr<sys::MemfdFile> file =
        sys::MemfdFile::Create("ferry-guest-" + r.name, r.size, next.page_size());
    if (!file.ok()) {
      undo_files();
      return file.status();
    }
    created.push_back(std::make_unique<Region>(Region{r.name, std::move(*file)}));
    by_name.emplace(created.back()->name, created.back().get());
  }
  // 2. Mappings: every slot of the new map at its RAM offset.
  auto state = std::make_unique<State>(State{next, {}});
  for (const MemorySlot& s : next.slots())
    state->slot_files.push_back(by_name.at(next.regions()[s.region].name));
  if (absl::Status s = RemapSlots(cur->map, next, state->slot_files); !s.ok()) {
    // Put the old map back, from the files (its data is all there).
    absl::Status back = MapSlots(cur->map, cur->slot_files);
    if (next.memory_bytes() > cur->map.memory_bytes())
      back.Update(reservation_.Unmap(cur->map.memory_bytes(),
                                     next.memory_bytes() - cur->map.memory_bytes()));
    if (!back.ok())
      return absl::DataLossError(
          absl::StrCat("applying the memory map: ", s.message(),
                       "; putting the old map back failed too: ", back.message()));
    undo_files();
    return s;
  }
  // 3. What is no longer RAM, then files that shrank or left. Past the
  // point of no return: the new map is in force whatever these say.
  absl::Status result;
  if (next.memory_bytes() < cur->map.memory_bytes())
    result.Update(
        reservation_.Unmap(next.memory_bytes(), cur->map.memory_bytes() - next.memory_bytes()));
  absl::flat_hash_map<absl::string_view, uint64_t> next_size;  // next's regions by name
  for (const MemoryRegion& r : next.regions()) next_size.emplace(r.name, r.size);
  for (auto it = regions_.begin(); it != regions_.end();) {
    auto j = next_size.find((*it)->name);
    if (j == next_size.end()) {
      it = regions_.erase(it);  // closes the file: its pages are freed
      continue;
    }
    if (j->second < (*it)->file.size()) result.Update((*it)->file.Resize(j->second));
    ++it;
  }
  for (auto& c : created) regions_.push_back(std::move(c));
  std::sort(regions_.begin(), regions_.end(),
            [](const auto& a, const auto& b) { return a->name < b->name; });
  for (auto& old : states_) old->slot_files.clear();
  state_.store(state.get(), std::memory_order_release);
  states_.push_back(std::move(state));
  return result;
}

}  // namespace ferry::vmm
