// The manifest file of a snapshot directory (snapshot.h): a fixed header
// and the serialized ferry.v1.SnapshotManifest.
//
//   offset  size  field
//   0       8     magic "FERRYSNP"
//   8       4     format version, little-endian (kSnapshotFormatVersion)
//   12      4     reserved, zero
//   16      8     manifest length N, little-endian
//   24      32    SHA-256 of the N manifest bytes
//   56      N     the manifest
#ifndef FERRY_MIGRATION_SNAPSHOT_SNAPSHOT_IO_H_
#define FERRY_MIGRATION_SNAPSHOT_SNAPSHOT_IO_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ferry/v1/snapshot.pb.h"

namespace ferry::snapshot {

// Version 1: a VM whose memory map never changed (its layout is the
// default map for its size). Version 2: the layout also holds the regions,
// the creation size and the memory history (a VM resized or with regions
// added); written only for such a VM, so that a Ferry that reads version 1
// only refuses it by version instead of misreading it. Both are read.
inline constexpr uint32_t kSnapshotFormatVersion = 1;
inline constexpr uint32_t kSnapshotFormatVersionChangedMap = 2;
inline constexpr size_t kManifestHeaderBytes = 56;
// The largest manifest read at all: a page checksum is 8 bytes and a bitmap
// bit, so 512 MiB covers about 256 GiB of 4 KiB pages. Snapshot::Open
// bounds it further by the memory file's size (ManifestBoundFor).
inline constexpr uint64_t kMaxManifestBytes = 512ull << 20;

// The largest manifest a memory file of `memory_file_bytes` can have: 10
// bytes per 4 KiB page (checksum, bitmap, encoding) and 4 MiB for the rest
// (vCPU states: a KVM vCPU's is a few KiB), at most kMaxManifestBytes.
uint64_t ManifestBoundFor(uint64_t memory_file_bytes);

// Header (format `version`) + `manifest` (serialized bytes).
std::string EncodeManifestFile(const std::string& manifest,
                               uint32_t version = kSnapshotFormatVersion);

// Reads and checks `path`: InvalidArgument for a file that is not a Ferry
// snapshot (magic), FailedPrecondition for another format version,
// DataLoss for a truncated file, a length over kMaxManifestBytes, trailing
// bytes, a checksum that fails or a manifest that does not parse; NotFound
// when the file is missing.
// `max_bytes` bounds the manifest's length (DataLoss over it), before any
// of it is read.
absl::StatusOr<ferry::v1::SnapshotManifest> ReadManifestFile(
    const std::string& path, uint64_t max_bytes = kMaxManifestBytes);

}  // namespace ferry::snapshot

#endif  // FERRY_MIGRATION_SNAPSHOT_SNAPSHOT_IO_H_
