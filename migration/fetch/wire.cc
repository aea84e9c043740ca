#include "migration/fetch/wire.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/errno_status.h"

namespace ferry::migration::fetch {
namespace {

constexpr char kServerMagic[4] = {'F', 'R', 'Y', 'S'};
constexpr char kClientMagic[4] = {'F', 'R', 'Y', 'C'};
constexpr char kResultMagic[4] = {'F', 'R', 'Y', 'R'};
constexpr uint8_t kKindRequest = 1;
constexpr uint8_t kKindReply = 2;

void Put16(uint8_t* p, uint16_t v) { p[0] = v, p[1] = v >> 8; }
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = v >> (8 * i);
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = v >> (8 * i);
}
uint16_t Get16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{p[i]} << (8 * i);
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

absl::Status CheckSize(const char* frame, absl::Span<const uint8_t> in, size_t want) {
  if (in.size() != want)
    return absl::InvalidArgumentError(
        absl::StrFormat("fetch %s: %d bytes, the frame is %d", frame, in.size(), want));
  return absl::OkStatus();
}

absl::Status CheckMagicVersion(const char* frame, const uint8_t* p,
                               const char magic[4]) {
  if (std::memcmp(p, magic, 4) != 0)
    return absl::InvalidArgumentError(
        absl::StrFormat("fetch %s: bad magic (not a Ferry fetch channel peer)", frame));
  uint16_t version = Get16(p + 4);
  if (version != kVersion)
    return absl::FailedPreconditionError(absl::StrFormat(
        "fetch %s: peer speaks fetch protocol version %d, this build speaks %d", frame,
        version, kVersion));
  return absl::OkStatus();
}

bool KnownStatus(uint16_t s) { return s <= static_cast<uint16_t>(WireStatus::kInternal); }

}  // namespace

const char* WireStatusName(WireStatus s) {
  switch (s) {
    case WireStatus::kOk: return "ok";
    case WireStatus::kOutOfRange: return "out of range";
    case WireStatus::kNotReady: return "not in postcopy yet";
    case WireStatus::kBadRequest: return "bad request";
    case WireStatus::kUnknownMigration: return "unknown migration";
    case WireStatus::kBadProof: return "bad proof of the migration secret";
    case WireStatus::kInternal: return "internal error";
  }
  return "unknown status";
}

void Encode(const ServerHello& m, uint8_t out[kServerHelloSize]) {
  std::memcpy(out, kServerMagic, 4);
  Put16(out + 4, kVersion);
  Put16(out + 6, 0);
  std::memcpy(out + 8, m.nonce.data(), kNonceSize);
}

void Encode(const ClientHello& m, uint8_t out[kClientHelloSize]) {
  std::memset(out, 0, kClientHelloSize);
  std::memcpy(out, kClientMagic, 4);
  Put16(out + 4, kVersion);
  size_t n = std::min(m.migration_id.size(), kMaxMigrationIdSize);
  Put16(out + 6, static_cast<uint16_t>(n));
  std::memcpy(out + 8, m.migration_id.data(), n);
  std::memcpy(out + 8 + kMaxMigrationIdSize, m.proof.data(), kProofSize);
}

void Encode(const HelloResult& m, uint8_t out[kHelloResultSize]) {
  std::memcpy(out, kResultMagic, 4);
  Put16(out + 4, kVersion);
  Put16(out + 6, static_cast<uint16_t>(m.status));
}

void Encode(const Request& m, uint8_t out[kRequestSize]) {
  Put32(out, m.tag);
  out[4] = kKindRequest;
  out[5] = m.count;
  Put16(out + 6, 0);
  Put64(out + 8, m.gpa);
}

void Encode(const ReplyHeader& m, uint8_t out[kReplyHeaderSize]) {
  Put32(out, m.tag);
  out[4] = kKindReply;
  out[5] = m.count;
  Put16(out + 6, static_cast<uint16_t>(m.status));
  Put64(out + 8, m.gpa);
  Put32(out + 16, m.zero_mask);
  Put32(out + 20, m.data_len);
}

absl::StatusOr<ServerHello> DecodeServerHello(absl::Span<const uint8_t> in) {
  if (auto s = CheckSize("server hello", in, kServerHelloSize); !s.ok()) return s;
  if (auto s = CheckMagicVersion("server hello", in.data(), kServerMagic); !s.ok())
    return s;
  if (Get16(in.data() + 6) != 0)
    return absl::InvalidArgumentError("fetch server hello: reserved field is not zero");
  ServerHello m;
  std::memcpy(m.nonce.data(), in.data() + 8, kNonceSize);
  return m;
}

absl::StatusOr<ClientHello> DecodeClientHello(absl::Span<const uint8_t> in) {
  if (auto s = CheckSize("client hello", in, kClientHelloSize); !s.ok()) return s;
  if (auto s = CheckMagicVersion("client hello", in.data(), kClientMagic); !s.ok())
    return s;
  uint16_t n = Get16(in.data() + 6);
  if (n == 0 || n > kMaxMigrationIdSize)
    return absl::InvalidArgumentError(absl::StrFormat(
        "fetch client hello: migration id length %d is not in [1, %d]", n,
        kMaxMigrationIdSize));
  for (size_t i = 8 + n; i < 8 + kMaxMigrationIdSize; ++i)
    if (in[i] != 0)
      return absl::InvalidArgumentError(
          "fetch client hello: bytes after the migration id are not zero");
  ClientHello m;
  m.migration_id.assign(reinterpret_cast<const char*>(in.data() + 8), n);
  std::memcpy(m.proof.data(), in.data() + 8 + kMaxMigrationIdSize, kProofSize);
  return m;
}

absl::StatusOr<HelloResult> DecodeHelloResult(absl::Span<const uint8_t> in) {
  if (auto s = CheckSize("hello result", in, kHelloResultSize); !s.ok()) return s;
  if (auto s = CheckMagicVersion("hello result", in.data(), kResultMagic); !s.ok())
    return s;
  uint16_t status = Get16(in.data() + 6);
  if (!KnownStatus(status))
    return absl::InvalidArgumentError(
        absl::StrFormat("fetch hello result: unknown status %d", status));
  return HelloResult{static_cast<WireStatus>(status)};
}

absl::StatusOr<Request> DecodeRequest(absl::Span<const uint8_t> in) {
  if (auto s = CheckSize("request", in, kRequestSize); !s.ok()) return s;
  if (in[4] != kKindRequest)
    return absl::InvalidArgumentError(
        absl::StrFormat("fetch request: unknown frame kind %d", in[4]));
  Request m;
  m.tag = Get32(in.data());
  m.count = in[5];
  m.gpa = Get64(in.data() + 8);
  if (m.count == 0 || m.count > kMaxPagesPerRequest)
    return absl::InvalidArgumentError(absl::StrFormat(
        "fetch request: page count %d is not in [1, %d]", m.count, kMaxPagesPerRequest));
  if (Get16(in.data() + 6) != 0)
    return absl::InvalidArgumentError("fetch request: reserved field is not zero");
  return m;
}

uint32_t ReplyDataLen(uint8_t count, uint32_t zero_mask, uint32_t page_size) {
  uint32_t all = count >= 32 ? ~0u : (1u << count) - 1;
  return static_cast<uint32_t>(std::popcount(all & ~zero_mask)) * page_size;
}

absl::StatusOr<ReplyHeader> DecodeReplyHeader(absl::Span<const uint8_t> in,
                                              uint32_t page_size) {
  if (auto s = CheckSize("reply", in, kReplyHeaderSize); !s.ok()) return s;
  if (in[4] != kKindReply)
    return absl::InvalidArgumentError(
        absl::StrFormat("fetch reply: unknown frame kind %d", in[4]));
  ReplyHeader m;
  m.tag = Get32(in.data());
  m.count = in[5];
  uint16_t status = Get16(in.data() + 6);
  m.gpa = Get64(in.data() + 8);
  m.zero_mask = Get32(in.data() + 16);
  m.data_len = Get32(in.data() + 20);
  if (!KnownStatus(status))
    return absl::InvalidArgumentError(
        absl::StrFormat("fetch reply: unknown status %d", status));
  m.status = static_cast<WireStatus>(status);
  if (m.count == 0 || m.count > kMaxPagesPerRequest)
    return absl::InvalidArgumentError(absl::StrFormat(
        "fetch reply: page count %d is not in [1, %d]", m.count, kMaxPagesPerRequest));
  if (m.status != WireStatus::kOk) {
    if (m.data_len != 0 || m.zero_mask != 0)
      return absl::InvalidArgumentError("fetch reply: an error reply carries data");
    return m;
  }
  if (m.count < 32 && (m.zero_mask >> m.count) != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "fetch reply: zero mask %#x names pages beyond the %d in the reply",
        m.zero_mask, m.count));
  uint32_t want = ReplyDataLen(m.count, m.zero_mask, page_size);
  if (m.data_len != want)
    return absl::InvalidArgumentError(absl::StrFormat(
        "fetch reply: %d bytes of data announced, %d non-zero pages need %d",
        m.data_len, want / page_size, want));
  return m;
}

absl::Status MatchReply(const ReplyHeader& reply, const Request& request) {
  if (reply.tag != request.tag || reply.gpa != request.gpa ||
      reply.count != request.count)
    return absl::InvalidArgumentError(absl::StrFormat(
        "fetch reply (tag %d, gpa %#x, %d pages) does not answer the request (tag "
        "%d, gpa %#x, %d pages)",
        reply.tag, reply.gpa, reply.count, request.tag, request.gpa, request.count));
  return absl::OkStatus();
}

Proof ComputeProof(const Secret& secret, const Nonce& nonce,
                   absl::string_view migration_id) {
  static constexpr char kLabel[] = "ferry-fetch-v1";
  std::string msg(kLabel, sizeof(kLabel) - 1);
  msg.append(reinterpret_cast<const char*>(nonce.data()), nonce.size());
  msg.append(migration_id.data(), migration_id.size());
  Proof proof{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), proof.data(),
       &len);
  return proof;
}

bool ProofEquals(const Proof& a, const Proof& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

absl::Status RandomBytes(absl::Span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("getrandom", errno);
    }
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace ferry::migration::fetch
