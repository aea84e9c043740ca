#include "migration/snapshot/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

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

// Writes the memory file and fills `manifest`'s bitmap and counts.
absl::Status WriteMemory(const GuestMemory& memory, int fd, const std::string& path,
                         ferry::v1::SnapshotManifest* manifest) {
  const uint32_t ps = memory.page_size();
  const uint64_t pages = memory.num_pages();
  if (ftruncate(fd, static_cast<off_t>(memory.size())) != 0)
    return ErrnoStatus(absl::StrCat("ftruncate ", path), errno);
  ASSIGN_OR_RETURN(const std::vector<bool> present, memory.PresentPages());
  std::string bitmap((pages + 7) / 8, '\0');
  std::vector<uint8_t> buf(kChunkPages * ps);
  uint64_t data_pages = 0;
  for (uint64_t first = 0; first < pages;) {
    if (!present[first]) {
      ++first;
      continue;
    }
    uint64_t n = 1;
    while (first + n < pages && n < kChunkPages && present[first + n]) ++n;
    RETURN_IF_ERROR(memory.Read(first * ps, buf.data(), n * ps));
    // Data pages out in runs; zero pages stay holes.
    for (uint64_t i = 0; i < n;) {
      if (AllZero(&buf[i * ps], ps)) {
        ++i;
        continue;
      }
      uint64_t run = 1;
      while (i + run < n && !AllZero(&buf[(i + run) * ps], ps)) ++run;
      RETURN_IF_ERROR(WriteAll(fd, &buf[i * ps], run * ps, (first + i) * ps, path));
      for (uint64_t p = first + i; p < first + i + run; ++p)
        bitmap[p / 8] = static_cast<char>(static_cast<uint8_t>(bitmap[p / 8]) | (1u << (p % 8)));
      data_pages += run;
      i += run;
    }
    first += n;
  }
  if (fsync(fd) != 0) return ErrnoStatus(absl::StrCat("fsync ", path), errno);
  manifest->set_data_bitmap(std::move(bitmap));
  manifest->set_data_pages(data_pages);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SnapshotSummary> WriteSnapshot(vmm::Vm& vm, const std::string& vm_name,
                                              const std::string& dir) {
  const int64_t t0 = MonotonicNowNanos();
  if (dir.empty() || dir.back() == '/')
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot directory '", dir, "': give a directory name to create"));
  for (vmm::VcpuRunState s : vm.States())
    if (s == vmm::VcpuRunState::kRunning)
      return absl::FailedPreconditionError("a snapshot is taken of a paused VM: pause it first");
  if (vm.pager() != nullptr && vm.pager()->missing_pages() != 0)
    return absl::FailedPreconditionError(absl::StrFormat(
        "the VM still misses %d pages (it is being filled by a migration or a lazy restore): "
        "snapshot it once they arrived",
        vm.pager()->missing_pages()));
  struct stat st;
  if (lstat(dir.c_str(), &st) == 0)
    return absl::AlreadyExistsError(
        absl::StrCat("snapshot directory ", dir, " exists: give a new one"));
  if (errno != ENOENT) return ErrnoStatus(absl::StrCat("stat ", dir), errno);
  const std::string parent = ParentOf(dir);
  if (stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return absl::NotFoundError(
        absl::StrCat("the parent of the snapshot directory, ", parent, ", is not a directory"));

  ferry::v1::SnapshotManifest manifest;
  *manifest.mutable_layout() = migration::ToLayout(vm.config(), vm.memory().map());
  ASSIGN_OR_RETURN(std::vector<std::string> states, vm.SaveVcpuStates());
  for (std::string& s : states) manifest.add_vcpu_states(std::move(s));
  ASSIGN_OR_RETURN(vmm::MemoryDigest digest, vm.Digest());
  manifest.mutable_page_hashes()->Assign(digest.page_hashes.begin(), digest.page_hashes.end());
  manifest.set_memory_digest(digest.digest);
  uint64_t ops = 0;
  for (const vmm::VcpuStats& v : vm.Stats().vcpus) {
    manifest.add_vcpu_ops(v.counters.ops);
    ops += v.counters.ops;
  }
  manifest.set_vm_name(vm_name);
  manifest.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
  manifest.set_created_by(FerryVersion());

  const std::string tmp = absl::StrFormat("%s.tmp-%d", dir, getpid());
  if (mkdir(tmp.c_str(), 0700) != 0) return ErrnoStatus(absl::StrCat("mkdir ", tmp), errno);
  auto fail = [&](absl::Status s) {
    RemoveTree(tmp);
    return s;
  };
  {
    const std::string path = absl::StrCat(tmp, "/", kMemoryFile);
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return fail(ErrnoStatus(absl::StrCat("create ", path), errno));
    if (absl::Status s = WriteMemory(vm.memory(), fd.get(), path, &manifest); !s.ok())
      return fail(s);
  }
  {
    const std::string path = absl::StrCat(tmp, "/", kManifestFile);
    std::string bytes;
    if (!manifest.SerializeToString(&bytes))
      return fail(absl::InternalError("the snapshot manifest does not serialize"));
    const std::string file = EncodeManifestFile(bytes);
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return fail(ErrnoStatus(absl::StrCat("create ", path), errno));
    if (absl::Status s =
            WriteAll(fd.get(), reinterpret_cast<const uint8_t*>(file.data()), file.size(), 0, path);
        !s.ok())
      return fail(s);
    if (fsync(fd.get()) != 0) return fail(ErrnoStatus(absl::StrCat("fsync ", path), errno));
  }
  if (absl::Status s = SyncDir(tmp); !s.ok()) return fail(s);
  if (rename(tmp.c_str(), dir.c_str()) != 0)
    return fail(ErrnoStatus(absl::StrCat("rename ", tmp, " to ", dir), errno));
  RETURN_IF_ERROR(SyncDir(parent));

  SnapshotSummary out;
  out.dir = dir;
  out.memory_bytes = vm.memory().size();
  out.data_pages = manifest.data_pages();
  out.zero_pages = vm.memory().num_pages() - manifest.data_pages();
  out.guest_ops = ops;
  out.memory_digest = digest.digest;
  out.write_ns = MonotonicNowNanos() - t0;
  return out;
}

absl::StatusOr<std::unique_ptr<Snapshot>> Snapshot::Open(const std::string& dir) {
  std::unique_ptr<Snapshot> s(new Snapshot());
  s->dir_ = dir;
  const std::string manifest_path = absl::StrCat(dir, "/", kManifestFile);
  ASSIGN_OR_RETURN(s->manifest_, ReadManifestFile(manifest_path));
  const ferry::v1::SnapshotManifest& m = s->manifest_;
  absl::StatusOr<vmm::VmConfig> config = migration::FromLayout(m.layout());
  if (!config.ok())
    return absl::DataLossError(absl::StrCat(
        manifest_path, ": the VM layout is not one a VM can have: ", config.status().message()));
  if (absl::Status v = vmm::ValidateVmConfig(*config); !v.ok())
    return absl::DataLossError(
        absl::StrCat(manifest_path, ": the VM layout is not one a VM can have: ", v.message()));
  s->config_ = *config;
  s->num_pages_ = config->memory_bytes / config->page_size;
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
  const std::string memory_path = absl::StrCat(dir, "/", kMemoryFile);
  s->memory_ = UniqueFd(open(memory_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!s->memory_.valid()) return ErrnoStatus(absl::StrCat("open ", memory_path), errno);
  struct stat st;
  if (fstat(s->memory_.get(), &st) != 0)
    return ErrnoStatus(absl::StrCat("stat ", memory_path), errno);
  if (static_cast<uint64_t>(st.st_size) != config->memory_bytes)
    return absl::DataLossError(
        absl::StrFormat("%s is %d bytes, the manifest says %d: truncated or not this snapshot's",
                        memory_path, st.st_size, config->memory_bytes));
  return s;
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

absl::Status Snapshot::ReadPages(uint64_t first, uint64_t count, uint8_t* out) const {
  const uint32_t ps = config_.page_size;
  if (first > num_pages_ || count > num_pages_ - first)
    return absl::OutOfRangeError(absl::StrFormat(
        "pages [%d, %d) are outside the snapshot's %d pages", first, first + count, num_pages_));
  for (uint64_t i = 0; i < count;) {
    const uint64_t p = first + i;
    if (IsZero(p)) {
      std::memset(out + i * ps, 0, ps);
      ++i;
      continue;
    }
    uint64_t run = 1;
    while (i + run < count && !IsZero(p + run)) ++run;
    uint8_t* dst = out + i * ps;
    uint64_t left = run * ps;
    uint64_t offset = p * ps;
    while (left > 0) {
      const ssize_t n = pread(memory_.get(), dst, left, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return ErrnoStatus(absl::StrFormat("read page %d of %s/%s", offset / ps, dir_, kMemoryFile),
                           errno);
      if (n == 0)
        return absl::DataLossError(absl::StrFormat(
            "%s/%s ends at page %d: the snapshot was truncated", dir_, kMemoryFile, offset / ps));
      dst += n;
      left -= static_cast<uint64_t>(n);
      offset += static_cast<uint64_t>(n);
    }
    for (uint64_t q = 0; q < run; ++q) {
      const uint64_t page = p + q;
      if (vmm::HashPage(out + (i + q) * ps, ps) != manifest_.page_hashes(static_cast<int>(page)))
        return absl::DataLossError(
            absl::StrFormat("page %d of %s/%s does not match its checksum: the snapshot is corrupt",
                            page, dir_, kMemoryFile));
    }
    i += run;
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
      i += run;
    }
  }
  RETURN_IF_ERROR(vm->RestoreVcpuStates(snapshot.vcpu_states()));
  return vm;
}

}  // namespace ferry::snapshot
