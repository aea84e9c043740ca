#include "migration/snapshot/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/clock.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "base/version.h"
#include "migration/convert.h"
#include "migration/snapshot/snapshot_io.h"
#include "vmm/digest.h"

namespace ferry::snapshot {
namespace {

using vmm::GuestMemory;

// Pages written or read per call: 1 MiB of 4 KiB pages.
constexpr uint64_t kChunkPages = 256;
// The only page size a snapshot holds (guest memory is a memfd of 4 KiB pages).
constexpr uint32_t kPageSize = 4096;

bool AllZero(const uint8_t* p, uint32_t n) {
  // n is a page size (a multiple of 8).
  uint64_t acc = 0;
  for (uint32_t i = 0; i < n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc |= w;
  }
  return acc == 0;
}

bool BitSet(const std::string& bitmap, uint64_t page) {
  return (static_cast<uint8_t>(bitmap[page / 8]) >> (page % 8)) & 1;
}

// Removes a temporary snapshot directory and what it holds (two files at
// most); best effort, for an error path.
void RemoveTree(const std::string& dir) {
  unlink(absl::StrCat(dir, "/", kManifestFile).c_str());
  unlink(absl::StrCat(dir, "/", kMemoryFile).c_str());
  rmdir(dir.c_str());
}

absl::Status WriteAll(int fd, const uint8_t* data, uint64_t len, uint64_t offset,
                      const std::string& what) {
  while (len > 0) {
    const ssize_t n = pwrite(fd, data, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("write ", what), errno);
    }
    data += n;
    len -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& dir) {
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", dir), errno);
  if (fsync(fd.get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", dir), errno);
  return absl::OkStatus();
}

std::string ParentOf(const std::string& dir) {
  const size_t slash = dir.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : dir.substr(0, slash);
}

// The memory file being written: pages go in as memory holds them at the
// call, data pages as data, zero pages as holes (punched where an earlier
// round of a live snapshot wrote data). Keeps the data bitmap.
class MemoryFileWriter {
 public:
  MemoryFileWriter(const GuestMemory& memory, int fd, std::string path)
      : memory_(memory),
        fd_(fd),
        path_(std::move(path)),
        bitmap_((memory.num_pages() + 7) / 8, '\0'),
        buf_(kChunkPages * memory.page_size()) {}

  absl::Status Create() {
    if (ftruncate(fd_, static_cast<off_t>(memory_.size())) != 0)
      return ErrnoStatus(absl::StrCat("ftruncate ", path_), errno);
    return absl::OkStatus();
  }

  // Every page the guest memory file holds (the rest are zero).
  absl::Status WritePresent() {
    ASSIGN_OR_RETURN(const std::vector<bool> present, memory_.PresentPages());
    std::vector<uint64_t> pages;
    for (uint64_t p = 0; p < present.size(); ++p)
      if (present[p]) pages.push_back(p);
    return Write(pages);
  }

  // `pages`: RAM page indices, ascending.
  absl::Status Write(const std::vector<uint64_t>& pages) {
    const uint32_t ps = memory_.page_size();
    for (size_t i = 0; i < pages.size();) {
      size_t n = 1;
      while (i + n < pages.size() && n < kChunkPages && pages[i + n] == pages[i] + n) ++n;
      RETURN_IF_ERROR(WriteRun(pages[i], n, ps));
      i += n;
    }
    pages_written_ += pages.size();
    return absl::OkStatus();
  }

  absl::Status Sync() {
    if (fsync(fd_) != 0) return ErrnoStatus(absl::StrCat("fsync ", path_), errno);
    return absl::OkStatus();
  }

  uint64_t pages_written() const { return pages_written_; }
  uint64_t data_pages() const {
    uint64_t n = 0;
    for (char c : bitmap_) n += __builtin_popcount(static_cast<uint8_t>(c));
    return n;
  }
  const std::string& bitmap() const { return bitmap_; }

 private:
  absl::Status WriteRun(uint64_t first, uint64_t n, uint32_t ps) {
    RETURN_IF_ERROR(memory_.Read(first * ps, buf_.data(), n * ps));
    for (uint64_t i = 0; i < n;) {
      const bool zero = AllZero(&buf_[i * ps], ps);
      uint64_t run = 1;
      while (i + run < n && AllZero(&buf_[(i + run) * ps], ps) == zero) ++run;
      const uint64_t page = first + i;
      if (!zero) {
        RETURN_IF_ERROR(WriteAll(fd_, &buf_[i * ps], run * ps, page * ps, path_));
      } else {
        bool had_data = false;
        for (uint64_t p = page; p < page + run; ++p) had_data |= BitSet(bitmap_, p);
        if (had_data && fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                  static_cast<off_t>(page * ps), static_cast<off_t>(run * ps)) != 0)
          return ErrnoStatus(absl::StrCat("punch a hole in ", path_), errno);
      }
      for (uint64_t p = page; p < page + run; ++p) SetBit(p, !zero);
      i += run;
    }
    return absl::OkStatus();
  }

  void SetBit(uint64_t p, bool on) {
    uint8_t b = static_cast<uint8_t>(bitmap_[p / 8]);
    b = on ? (b | (1u << (p % 8))) : (b & ~(1u << (p % 8)));
    bitmap_[p / 8] = static_cast<char>(b);
  }

  const GuestMemory& memory_;
  const int fd_;
  const std::string path_;
  std::string bitmap_;
  std::vector<uint8_t> buf_;
  uint64_t pages_written_ = 0;
};

absl::Status CheckTarget(const std::string& dir) {
  if (dir.empty() || dir.back() == '/')
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot directory '", dir, "': give a directory name to create"));
  struct stat st;
  if (lstat(dir.c_str(), &st) == 0)
    return absl::AlreadyExistsError(
        absl::StrCat("snapshot directory ", dir, " exists: give a new one"));
  if (errno != ENOENT) return ErrnoStatus(absl::StrCat("stat ", dir), errno);
  const std::string parent = ParentOf(dir);
  if (stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return absl::NotFoundError(
        absl::StrCat("the parent of the snapshot directory, ", parent, ", is not a directory"));
  return absl::OkStatus();
}

absl::Status CheckNothingMissing(vmm::Vm& vm) {
  if (vm.pager() != nullptr && vm.pager()->missing_pages() != 0)
    return absl::FailedPreconditionError(absl::StrFormat(
        "the VM still misses %d pages (it is being filled by a migration or a lazy restore): "
        "snapshot it once they arrived",
        vm.pager()->missing_pages()));
  return absl::OkStatus();
}

// A snapshot being written into a temporary sibling of its directory,
// removed unless Commit() renamed it into place.
class PendingSnapshot {
 public:
  static absl::StatusOr<std::unique_ptr<PendingSnapshot>> Create(const vmm::Vm& vm,
                                                                 const std::string& dir) {
    std::unique_ptr<PendingSnapshot> p(new PendingSnapshot());
    p->dir_ = dir;
    p->tmp_ = absl::StrFormat("%s.tmp-%d", dir, getpid());
    if (mkdir(p->tmp_.c_str(), 0700) != 0)
      return ErrnoStatus(absl::StrCat("mkdir ", p->tmp_), errno);
    p->created_ = true;
    const std::string path = absl::StrCat(p->tmp_, "/", kMemoryFile);
    p->fd_ = UniqueFd(open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!p->fd_.valid()) return ErrnoStatus(absl::StrCat("create ", path), errno);
    p->writer_ = std::make_unique<MemoryFileWriter>(vm.memory(), p->fd_.get(), path);
    RETURN_IF_ERROR(p->writer_->Create());
    return p;
  }
  ~PendingSnapshot() {
    if (created_) RemoveTree(tmp_);
  }

  MemoryFileWriter& writer() { return *writer_; }

  // With the VM paused and the memory file complete: the manifest, then
  // everything synced and renamed into place.
  absl::StatusOr<SnapshotSummary> Commit(vmm::Vm& vm, const std::string& vm_name, bool live) {
    RETURN_IF_ERROR(writer_->Sync());
    ferry::v1::SnapshotManifest manifest;
    // A VM whose map changed: its regions, creation size and history too,
    // so that a restore builds the same map and replays through the changes.
    const std::vector<vmm::MemoryEpoch> history = vm.MemoryHistory();
    if (history.size() > migration::kMaxLayoutMemoryEpochs)
      return absl::FailedPreconditionError(absl::StrFormat(
          "the VM's memory map changed %d times; a snapshot holds at most %d changes",
          history.size(), migration::kMaxLayoutMemoryEpochs));
    *manifest.mutable_layout() = history.empty()
                                     ? migration::ToLayout(vm.config(), vm.memory().map())
                                     : migration::ToLayout(vm.config(), vm.memory().map(), history);
    ASSIGN_OR_RETURN(std::vector<std::string> states, vm.SaveVcpuStates());
    for (std::string& s : states) manifest.add_vcpu_states(std::move(s));
    ASSIGN_OR_RETURN(vmm::MemoryDigest digest, vm.Digest());
    manifest.mutable_page_hashes()->Assign(digest.page_hashes.begin(), digest.page_hashes.end());
    manifest.set_memory_digest(digest.digest);
    manifest.set_data_bitmap(writer_->bitmap());
    manifest.set_data_pages(writer_->data_pages());
    uint64_t ops = 0;
    for (const vmm::VcpuStats& v : vm.Stats().vcpus) {
      manifest.add_vcpu_ops(v.counters.ops);
      ops += v.counters.ops;
    }
    manifest.set_vm_name(vm_name);
    manifest.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
    manifest.set_created_by(FerryVersion());
    manifest.set_live(live);
    const std::string path = absl::StrCat(tmp_, "/", kManifestFile);
    std::string bytes;
    if (!manifest.SerializeToString(&bytes))
      return absl::InternalError("the snapshot manifest does not serialize");
    const std::string file = EncodeManifestFile(
        bytes, history.empty() ? kSnapshotFormatVersion : kSnapshotFormatVersionChangedMap);
    {
      UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!fd.valid()) return ErrnoStatus(absl::StrCat("create ", path), errno);
      RETURN_IF_ERROR(
          WriteAll(fd.get(), reinterpret_cast<const uint8_t*>(file.data()), file.size(), 0, path));
      if (fsync(fd.get()) != 0) return ErrnoStatus(absl::StrCat("fsync ", path), errno);
    }
    RETURN_IF_ERROR(SyncDir(tmp_));
    // RENAME_NOREPLACE: a directory that appeared at dir_ since the check
    // is never replaced (rename(2) would replace an empty one).
    if (renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, dir_.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST)
        return absl::AlreadyExistsError(absl::StrCat(
            "snapshot directory ", dir_, " appeared while it was written: give a new one"));
      return ErrnoStatus(absl::StrCat("rename ", tmp_, " to ", dir_), errno);
    }
    created_ = false;
    // The snapshot is whole at dir_ now: the parent's sync only makes the
    // rename durable sooner, and its failure is no reason to report none.
    (void)SyncDir(ParentOf(dir_));
    SnapshotSummary out;
    out.dir = dir_;
    out.memory_bytes = vm.memory().size();
    out.data_pages = manifest.data_pages();
    out.zero_pages = vm.memory().num_pages() - manifest.data_pages();
    out.guest_ops = ops;
    out.memory_digest = digest.digest;
    out.pages_written = writer_->pages_written();
    return out;
  }

 private:
  PendingSnapshot() = default;
  std::string dir_, tmp_;
  bool created_ = false;
  UniqueFd fd_;
  std::unique_ptr<MemoryFileWriter> writer_;
};

}  // namespace

absl::StatusOr<SnapshotSummary> WriteSnapshot(vmm::Vm& vm, const std::string& vm_name,
                                              const std::string& dir) {
  const int64_t t0 = MonotonicNowNanos();
  vmm::MemoryMapPin pin = vm.PinMemoryMap("a snapshot of it is written");
  RETURN_IF_ERROR(CheckTarget(dir));
  for (vmm::VcpuRunState s : vm.States())
    if (s == vmm::VcpuRunState::kRunning)
      return absl::FailedPreconditionError("a snapshot is taken of a paused VM: pause it first");
  RETURN_IF_ERROR(CheckNothingMissing(vm));
  ASSIGN_OR_RETURN(std::unique_ptr<PendingSnapshot> pending, PendingSnapshot::Create(vm, dir));
  RETURN_IF_ERROR(pending->writer().WritePresent());
  ASSIGN_OR_RETURN(SnapshotSummary out, pending->Commit(vm, vm_name, /*live=*/false));
  out.write_ns = MonotonicNowNanos() - t0;
  out.paused_ns = out.write_ns;
  return out;
}

absl::StatusOr<SnapshotSummary> WriteLiveSnapshot(vmm::Vm& vm, const std::string& vm_name,
                                                  const std::string& dir,
                                                  const LiveSnapshotOptions& options) {
  const int64_t t0 = MonotonicNowNanos();
  vmm::MemoryMapPin pin = vm.PinMemoryMap("a snapshot of it is written");
  RETURN_IF_ERROR(CheckTarget(dir));
  if (vm.paused())
    return absl::FailedPreconditionError(
        "a live snapshot is of a running VM: this one is paused (take a plain snapshot)");
  RETURN_IF_ERROR(CheckNothingMissing(vm));
  ASSIGN_OR_RETURN(std::unique_ptr<PendingSnapshot> pending, PendingSnapshot::Create(vm, dir));
  // The log first: a page written after it was read is in the next round.
  ASSIGN_OR_RETURN(std::unique_ptr<vmm::DirtyLog> log, vm.StartDirtyLog());
  RETURN_IF_ERROR(pending->writer().WritePresent());
  int rounds = 1;
  std::vector<uint64_t> dirty;
  while (true) {
    RETURN_IF_ERROR(log->Collect(&dirty));
    if (dirty.size() <= options.final_pages || rounds >= options.max_rounds) break;
    RETURN_IF_ERROR(pending->writer().Write(dirty));
    ++rounds;
  }
  // What the rounds wrote goes to disk while the guest still runs, so the
  // pause's own sync carries only the last round.
  RETURN_IF_ERROR(pending->writer().Sync());
  // The short final pause: what the last round found, and what was
  // written since.
  const int64_t paused_at = MonotonicNowNanos();
  RETURN_IF_ERROR(vm.Pause());
  std::vector<uint64_t> last;
  absl::Status s = log->CollectFinal(&last);
  log.reset();
  if (s.ok()) {
    std::vector<uint64_t> all;
    std::set_union(dirty.begin(), dirty.end(), last.begin(), last.end(), std::back_inserter(all));
    s = pending->writer().Write(all);
  }
  absl::StatusOr<SnapshotSummary> out =
      s.ok() ? pending->Commit(vm, vm_name, /*live=*/true) : absl::StatusOr<SnapshotSummary>(s);
  if (!out.ok()) {
    (void)vm.Resume();  // the guest runs on: no snapshot, nothing lost
    return out.status();
  }
  out->rounds = rounds + 1;
  out->paused_ns = MonotonicNowNanos() - paused_at;
  out->write_ns = MonotonicNowNanos() - t0;
  return out;
}

absl::StatusOr<std::unique_ptr<Snapshot>> Snapshot::Open(const std::string& dir) {
  std::unique_ptr<Snapshot> s(new Snapshot());
  s->dir_ = dir;
  const std::string manifest_path = absl::StrCat(dir, "/", kManifestFile);
  const std::string memory_path = absl::StrCat(dir, "/", kMemoryFile);
  // The memory file first: its size bounds the manifest read.
  s->memory_ = UniqueFd(open(memory_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!s->memory_.valid()) {
    if (errno == ENOENT && access(manifest_path.c_str(), F_OK) != 0)
      return absl::NotFoundError(
          absl::StrCat(manifest_path, " does not exist: not a Ferry snapshot"));
    return ErrnoStatus(absl::StrCat("open ", memory_path), errno);
  }
  struct stat st;
  if (fstat(s->memory_.get(), &st) != 0)
    return ErrnoStatus(absl::StrCat("stat ", memory_path), errno);
  ASSIGN_OR_RETURN(
      s->manifest_,
      ReadManifestFile(manifest_path, ManifestBoundFor(static_cast<uint64_t>(st.st_size))));
  const ferry::v1::SnapshotManifest& m = s->manifest_;
  // The page size first: everything below is sized by it.
  if (m.layout().page_size() != kPageSize)
    return absl::DataLossError(absl::StrFormat("%s: a page size of %d bytes; Ferry's is %d",
                                               manifest_path, m.layout().page_size(), kPageSize));
  absl::StatusOr<vmm::VmConfig> config = migration::FromLayout(m.layout());
  if (!config.ok())
    return absl::DataLossError(absl::StrCat(
        manifest_path, ": the VM layout is not one a VM can have: ", config.status().message()));
  if (absl::Status v = vmm::ValidateVmConfig(*config); !v.ok())
    return absl::DataLossError(
        absl::StrCat(manifest_path, ": the VM layout is not one a VM can have: ", v.message()));
  s->config_ = *config;
  // What the VM held when it was written: its regions, if its map changed.
  const uint64_t memory_bytes = vmm::CreatedMemoryBytes(*config);
  s->num_pages_ = memory_bytes / config->page_size;
  const uint64_t pages = s->num_pages_;
  if (m.vcpu_states_size() != config->vcpus)
    return absl::DataLossError(absl::StrFormat("%s: %d vCPU states for %d vCPUs", manifest_path,
                                               m.vcpu_states_size(), config->vcpus));
  if (static_cast<uint64_t>(m.page_hashes_size()) != pages)
    return absl::DataLossError(absl::StrFormat("%s: %d page checksums for %d pages", manifest_path,
                                               m.page_hashes_size(), pages));
  if (m.data_bitmap().size() != (pages + 7) / 8)
    return absl::DataLossError(absl::StrFormat("%s: a data bitmap of %d bytes for %d pages",
                                               manifest_path, m.data_bitmap().size(), pages));
  // Zero pages are never read: their checksum must be the zero page's.
  std::vector<uint8_t> zero(config->page_size, 0);
  const uint64_t zero_hash = vmm::HashPage(zero.data(), config->page_size);
  uint64_t data_pages = 0;
  for (uint64_t p = 0; p < pages; ++p) {
    if (BitSet(m.data_bitmap(), p)) {
      ++data_pages;
    } else if (m.page_hashes(static_cast<int>(p)) != zero_hash) {
      return absl::DataLossError(absl::StrFormat(
          "%s: page %d is a hole in the memory file but its checksum is not a zero page's",
          manifest_path, p));
    }
  }
  if (data_pages != m.data_pages())
    return absl::DataLossError(absl::StrFormat("%s: %d data pages in the bitmap, %d counted",
                                               manifest_path, data_pages, m.data_pages()));
  if (static_cast<uint64_t>(st.st_size) != memory_bytes)
    return absl::DataLossError(
        absl::StrFormat("%s is %d bytes, the manifest says %d: truncated or not this snapshot's",
                        memory_path, st.st_size, memory_bytes));
  return s;
}

void Snapshot::Prefetch() const {
  // Advice: a kernel that ignores it costs only the reads it saves.
  (void)posix_fadvise(memory_.get(), 0, 0, POSIX_FADV_WILLNEED);
}

std::vector<std::string> Snapshot::vcpu_states() const {
  return {manifest_.vcpu_states().begin(), manifest_.vcpu_states().end()};
}

std::vector<uint64_t> Snapshot::vcpu_ops() const {
  return {manifest_.vcpu_ops().begin(), manifest_.vcpu_ops().end()};
}

bool Snapshot::IsZero(uint64_t page) const {
  return page < num_pages_ && !BitSet(manifest_.data_bitmap(), page);
}

absl::Status Snapshot::PreadAll(uint8_t* dst, uint64_t len, uint64_t offset) const {
  const uint32_t ps = config_.page_size;
  while (len > 0) {
    const ssize_t n = pread(memory_.get(), dst, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return ErrnoStatus(absl::StrFormat("read page %d of %s/%s", offset / ps, dir_, kMemoryFile),
                         errno);
    if (n == 0)
      return absl::DataLossError(absl::StrFormat(
          "%s/%s ends at page %d: the snapshot was truncated", dir_, kMemoryFile, offset / ps));
    dst += n;
    len -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status Snapshot::ReadRuns(const std::vector<DataRun>& runs, sys::IoUring* ring) const {
  if (ring == nullptr) {
    for (const DataRun& r : runs) RETURN_IF_ERROR(PreadAll(r.dst, r.len, r.offset));
    return absl::OkStatus();
  }
  // Every run of a batch in flight at once; a short read's rest by pread.
  // Nothing returns while a read is in flight into the caller's buffers.
  for (size_t b = 0; b < runs.size(); b += kRingDepth) {
    const size_t n = std::min(runs.size() - b, static_cast<size_t>(kRingDepth));
    absl::Status first_error;
    size_t prepared = 0;
    for (; prepared < n; ++prepared) {
      const DataRun& r = runs[b + prepared];
      first_error = ring->PrepareRead(memory_.get(), r.dst, r.len, b + prepared, r.offset);
      if (!first_error.ok()) break;
    }
    size_t done = 0;
    int ring_failures = 0;
    while (done < prepared) {
      if (absl::Status s = ring->SubmitAndWait(static_cast<unsigned>(prepared - done)); !s.ok()) {
        // The kernel may still write into the buffers: wait it out, or
        // stop the process rather than hand them back.
        if (++ring_failures > 1000) {
          std::fprintf(stderr, "snapshot reads: the io_uring fails with reads in flight: %s\n",
                       std::string(s.message()).c_str());
          std::abort();
        }
        absl::SleepFor(absl::Milliseconds(1));
        continue;
      }
      sys::IoCompletion c;
      while (ring->PopCompletion(&c)) {
        if (c.tag < b || c.tag >= b + prepared) continue;  // not this batch's (none expected)
        ++done;
        const DataRun& r = runs[c.tag];
        if (c.result < 0) {
          if (first_error.ok())
            first_error = sys::IoUring::CompletionError("read of the snapshot memory", c.result);
        } else if (static_cast<uint64_t>(c.result) < r.len && first_error.ok()) {
          first_error = PreadAll(r.dst + c.result, r.len - c.result, r.offset + c.result);
        }
      }
    }
    RETURN_IF_ERROR(first_error);  // only once nothing is in flight into the buffers
  }
  return absl::OkStatus();
}

absl::Status Snapshot::ReadPages(uint64_t first, uint64_t count, uint8_t* out,
                                 sys::IoUring* ring) const {
  const uint32_t ps = config_.page_size;
  if (first > num_pages_ || count > num_pages_ - first)
    return absl::OutOfRangeError(absl::StrFormat(
        "pages [%d, %d) are outside the snapshot's %d pages", first, first + count, num_pages_));
  std::vector<DataRun> runs;
  for (uint64_t i = 0; i < count;) {
    if (IsZero(first + i)) {
      std::memset(out + i * ps, 0, ps);
      ++i;
      continue;
    }
    uint64_t run = 1;
    while (i + run < count && !IsZero(first + i + run)) ++run;
    runs.push_back({out + i * ps, run * ps, (first + i) * ps});
    i += run;
  }
  RETURN_IF_ERROR(ReadRuns(runs, ring));
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t page = first + i;
    if (!IsZero(page) &&
        vmm::HashPage(out + i * ps, ps) != manifest_.page_hashes(static_cast<int>(page)))
      return absl::DataLossError(
          absl::StrFormat("page %d of %s/%s does not match its checksum: the snapshot is corrupt",
                          page, dir_, kMemoryFile));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<vmm::Vm>> RestoreEager(const Snapshot& snapshot) {
  ASSIGN_OR_RETURN(std::unique_ptr<vmm::Vm> vm, vmm::Vm::Create(snapshot.config()));
  const uint32_t ps = snapshot.page_size();
  std::vector<uint8_t> buf(kChunkPages * ps);
  for (uint64_t first = 0; first < snapshot.num_pages(); first += kChunkPages) {
    const uint64_t n = std::min(kChunkPages, snapshot.num_pages() - first);
    // Only chunks that hold data are read; zero pages stay holes.
    bool any = false;
    for (uint64_t p = first; p < first + n && !any; ++p) any = !snapshot.IsZero(p);
    if (!any) continue;
    RETURN_IF_ERROR(snapshot.ReadPages(first, n, buf.data()));
    for (uint64_t i = 0; i < n;) {
      if (snapshot.IsZero(first + i)) {
        ++i;
        continue;
      }
      uint64_t run = 1;
      while (i + run < n && !snapshot.IsZero(first + i + run)) ++run;
      RETURN_IF_ERROR(vm->memory().Load((first + i) * ps, &buf[i * ps], run * ps));
      // Mapped now, not at the guest's first touch: the restored guest
      // starts at full speed (a kernel without MADV_POPULATE_WRITE, before
      // 5.14, leaves it to the first touch).
      if (madvise(vm->memory().host() + (first + i) * ps, run * ps, MADV_POPULATE_WRITE) != 0 &&
          errno != EINVAL)
        return ErrnoStatus("madvise(MADV_POPULATE_WRITE) of the restored memory", errno);
      i += run;
    }
  }
  RETURN_IF_ERROR(vm->RestoreVcpuStates(snapshot.vcpu_states()));
  return vm;
}

}  // namespace ferry::snapshot
