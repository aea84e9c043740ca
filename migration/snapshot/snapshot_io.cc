#include "migration/snapshot/snapshot_io.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "migration/snapshot/snapshot.h"

namespace ferry::snapshot {
namespace {

constexpr char kMagic[8] = {'F', 'E', 'R', 'R', 'Y', 'S', 'N', 'P'};

void PutLe(uint64_t v, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace

std::string EncodeManifestFile(const std::string& manifest, uint32_t version) {
  std::string out(kMagic, sizeof(kMagic));
  PutLe(version, 4, &out);
  PutLe(0, 4, &out);
  PutLe(manifest.size(), 8, &out);
  uint8_t sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(manifest.data()), manifest.size(), sha);
  out.append(reinterpret_cast<const char*>(sha), sizeof(sha));
  out += manifest;
  return out;
}

uint64_t ManifestBoundFor(uint64_t memory_file_bytes) {
  const uint64_t pages = memory_file_bytes / 4096;
  if (pages > kMaxManifestBytes / 10) return kMaxManifestBytes;
  return std::min<uint64_t>(kMaxManifestBytes, (uint64_t{4} << 20) + 10 * pages);
}

absl::StatusOr<ferry::v1::SnapshotManifest> ReadManifestFile(const std::string& path,
                                                             uint64_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT)
      return absl::NotFoundError(absl::StrCat(path, " does not exist: not a Ferry snapshot"));
    return ErrnoStatus(absl::StrCat("open ", path), errno);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path), errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint8_t header[kManifestHeaderBytes];
  auto read_at = [&](uint8_t* out, uint64_t len, uint64_t offset) -> absl::Status {
    while (len > 0) {
      const ssize_t n = pread(fd.get(), out, len, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(absl::StrCat("read ", path), errno);
      if (n == 0) return absl::DataLossError(absl::StrCat(path, " is truncated"));
      out += n;
      len -= static_cast<uint64_t>(n);
      offset += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  };
  if (size < sizeof(kMagic))
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a Ferry snapshot (too short)"));
  if (absl::Status s = read_at(header, std::min<uint64_t>(size, sizeof(header)), 0); !s.ok())
    return s;
  if (std::memcmp(header, kMagic, sizeof(kMagic)) != 0)
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a Ferry snapshot (its magic is not FERRYSNP)"));
  if (size < kManifestHeaderBytes)
    return absl::DataLossError(
        absl::StrFormat("%s is truncated: %d bytes, shorter than its %d-byte header", path, size,
                        kManifestHeaderBytes));
  const uint64_t version = GetLe(header + 8, 4);
  if (version != kSnapshotFormatVersion && version != kSnapshotFormatVersionChangedMap)
    return absl::FailedPreconditionError(
        absl::StrFormat("%s is snapshot format version %d; this ferry reads versions %d and %d",
                        path, version, kSnapshotFormatVersion, kSnapshotFormatVersionChangedMap));
  const uint64_t len = GetLe(header + 16, 8);
  if (len > max_bytes)
    return absl::DataLossError(
        absl::StrFormat("%s: a manifest of %d bytes, over the %d-byte bound (for its memory file)",
                        path, len, max_bytes));
  if (size != kManifestHeaderBytes + len)
    return absl::DataLossError(absl::StrFormat(
        "%s is %d bytes where its header says %d: %s", path, size, kManifestHeaderBytes + len,
        size < kManifestHeaderBytes + len ? "truncated" : "trailing bytes"));
  std::string manifest(len, '\0');
  if (absl::Status s =
          read_at(reinterpret_cast<uint8_t*>(manifest.data()), len, kManifestHeaderBytes);
      !s.ok())
    return s;
  uint8_t sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(manifest.data()), manifest.size(), sha);
  if (std::memcmp(sha, header + 24, sizeof(sha)) != 0)
    return absl::DataLossError(
        absl::StrCat(path, ": the manifest's checksum fails: the snapshot is corrupt"));
  ferry::v1::SnapshotManifest m;
  if (!m.ParseFromString(manifest))
    return absl::DataLossError(absl::StrCat(path, ": the manifest does not parse"));
  return m;
}

}  // namespace ferry::snapshot
