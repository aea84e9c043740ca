// Constants of the ferry.v1.Migration wire protocol
// (proto/ferry/v1/migration.proto), shared by both ends. A change here is a
// change of the protocol: see the version rule at the top of the .proto.
#ifndef FERRY_MIGRATION_PROTOCOL_H_
#define FERRY_MIGRATION_PROTOCOL_H_

#include <cstddef>
#include <cstdint>

namespace ferry::migration {

// Hello.protocol_version: both ends must speak the same version.
// 2: page frames instead of protobuf PageBatch messages.
// 3: Reconnect and Join prove the per-migration secret (Challenge,
//    StreamProof); never_ran carries a proof.
inline constexpr uint32_t kProtocolVersion = 3;

// The largest gRPC message either end sends or accepts.
inline constexpr int kMaxMessageBytes = 64 << 20;

// Pages the source puts in one page frame: 4 MiB for precopy and
// stop-and-copy (fewer, larger messages: 1.6x the throughput of 256 KiB
// frames, docs/benchmarks.md), 256 KiB for the postcopy push (it shares the
// link with demand fetches, which must not wait behind a large frame).
inline constexpr uint64_t kBulkFramePages = 1024;
inline constexpr uint64_t kPushFramePages = 64;

// The most pages (data and zero together) one page frame may name; a
// receiver rejects a batch past this before it expands anything.
inline constexpr uint64_t kMaxBatchPages = 4096;

// Hello.data_streams: at most this many data streams besides the main one.
inline constexpr uint32_t kMaxDataStreams = 7;
// All streams of a migration, the main one included.
inline constexpr int kMaxStreamsPerMigration = 1 + static_cast<int>(kMaxDataStreams);

// Pages of one chunk of guest memory, which always travel on the same data
// stream (chunk index modulo the streams): a page resent in a later round
// follows its earlier copy on the same ordered stream.
inline constexpr uint64_t kStreamChunkPages = 512;

// Hello.migration_id: 1 to this many bytes.
inline constexpr size_t kMaxMigrationIdBytes = 64;
// Hello.vm_name: at most this many bytes (the agent checks the rest of
// its rules when it admits the VM).
inline constexpr size_t kMaxVmNameBytes = 64;
// An agent's address a peer names in Hello (shown, never dialled).
inline constexpr size_t kMaxAddressBytes = 255;

// Liveness of the migration streams (gRPC keepalive at both ends): the
// source pings every kKeepaliveTimeMs and drops the connection when a ping
// is not answered within kKeepaliveTimeoutMs; the agent's server pings its
// clients less often (an idle client's channel is polled only every few
// seconds, and must not be dropped for it). After switchover the source
// also expects the destination's progress (5 s of silence ends a stream).
inline constexpr int kKeepaliveTimeMs = 5000;
inline constexpr int kKeepaliveTimeoutMs = 10000;
inline constexpr int kServerKeepaliveTimeMs = 10000;
inline constexpr int kServerKeepaliveTimeoutMs = 10000;
// Per connection to the agent's gRPC port: streams at once, and how long a
// new connection may take to finish its (TLS and HTTP/2) handshake.
inline constexpr int kMaxStreamsPerConnection = 64;
inline constexpr int kHandshakeTimeoutMs = 10000;

// DestinationStats.ops_trace: at most this many rows, and at most
// kMaxOpsTraceCounts counts (rows x vCPUs); the destination thins a longer
// trace to every other row until it fits, the source rejects one past it.
inline constexpr size_t kMaxOpsTraceRows = 65536;
inline constexpr size_t kMaxOpsTraceCounts = size_t{1} << 20;
inline constexpr size_t MaxOpsTraceRows(int vcpus) {
  const size_t by_counts = kMaxOpsTraceCounts / static_cast<size_t>(vcpus < 1 ? 1 : vcpus);
  return by_counts < kMaxOpsTraceRows ? by_counts : kMaxOpsTraceRows;
}

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_PROTOCOL_H_
