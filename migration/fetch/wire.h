// The fetch channel's wire format (docs/protocol.md has the byte-level
// spec). All integers are little-endian; every frame has a fixed size except
// a reply's page data, whose length the header states and the decoder checks.
//
//   destination (client)                 source (page server)
//   connect ------------------------------>
//           <----------------------------- ServerHello   40 B: "FRYS", v1, nonce
//   ClientHello 104 B: "FRYC", v1, id, HMAC-SHA256(secret, nonce | id) -->
//           <----------------------------- HelloResult    8 B: "FRYR", status
//   Request 16 B (tag, count, gpa) ------->
//           <----------------------------- Reply 24 B + data (non-zero pages)
//
// Decoders reject anything malformed with InvalidArgument (or
// FailedPrecondition for a version mismatch) and never read past the bytes
// given.
#ifndef FERRY_MIGRATION_FETCH_WIRE_H_
#define FERRY_MIGRATION_FETCH_WIRE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace ferry::migration::fetch {

inline constexpr uint16_t kVersion = 1;
inline constexpr int kMaxPagesPerRequest = 32;
inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kProofSize = 32;
inline constexpr size_t kSecretSize = 32;
inline constexpr size_t kMaxMigrationIdSize = 64;

inline constexpr size_t kServerHelloSize = 40;
inline constexpr size_t kClientHelloSize = 104;
inline constexpr size_t kHelloResultSize = 8;
inline constexpr size_t kRequestSize = 16;
inline constexpr size_t kReplyHeaderSize = 24;

using Nonce = std::array<uint8_t, kNonceSize>;
using Proof = std::array<uint8_t, kProofSize>;
using Secret = std::array<uint8_t, kSecretSize>;

// Status codes of HelloResult and replies.
enum class WireStatus : uint16_t {
  kOk = 0,
  kOutOfRange = 1,   // the pages are not inside the VM's RAM
  kNotReady = 2,     // the migration is not in postcopy yet
  kBadRequest = 3,   // malformed request
  kUnknownMigration = 4,
  kBadProof = 5,
  kInternal = 6,
};
const char* WireStatusName(WireStatus s);

struct ServerHello {
  Nonce nonce{};
};
struct ClientHello {
  std::string migration_id;
  Proof proof{};
};
struct HelloResult {
  WireStatus status = WireStatus::kOk;
};
struct Request {
  uint32_t tag = 0;
  uint8_t count = 1;
  uint64_t gpa = 0;
};
struct ReplyHeader {
  uint32_t tag = 0;
  uint8_t count = 0;
  WireStatus status = WireStatus::kOk;
  uint64_t gpa = 0;
  uint32_t zero_mask = 0;  // bit i: page i is all zeros and has no data
  uint32_t data_len = 0;   // bytes of page data that follow
};

void Encode(const ServerHello& m, uint8_t out[kServerHelloSize]);
void Encode(const ClientHello& m, uint8_t out[kClientHelloSize]);
void Encode(const HelloResult& m, uint8_t out[kHelloResultSize]);
void Encode(const Request& m, uint8_t out[kRequestSize]);
void Encode(const ReplyHeader& m, uint8_t out[kReplyHeaderSize]);

absl::StatusOr<ServerHello> DecodeServerHello(absl::Span<const uint8_t> in);
absl::StatusOr<ClientHello> DecodeClientHello(absl::Span<const uint8_t> in);
absl::StatusOr<HelloResult> DecodeHelloResult(absl::Span<const uint8_t> in);
absl::StatusOr<Request> DecodeRequest(absl::Span<const uint8_t> in);
// Checks the header on its own (sizes, masks, status) for `page_size` pages.
absl::StatusOr<ReplyHeader> DecodeReplyHeader(absl::Span<const uint8_t> in,
                                              uint32_t page_size);
// Checks that `reply` answers `request`.
absl::Status MatchReply(const ReplyHeader& reply, const Request& request);

// Bytes of data a reply with `count` pages and `zero_mask` carries.
uint32_t ReplyDataLen(uint8_t count, uint32_t zero_mask, uint32_t page_size);

// HMAC-SHA256(secret, "ferry-fetch-v1" | nonce | migration_id).
Proof ComputeProof(const Secret& secret, const Nonce& nonce,
                   absl::string_view migration_id);
// Constant-time comparison.
bool ProofEquals(const Proof& a, const Proof& b);
// Fresh random bytes from getrandom(2).
absl::Status RandomBytes(absl::Span<uint8_t> out);

}  // namespace ferry::migration::fetch

#endif  // FERRY_MIGRATION_FETCH_WIRE_H_
