#include "migration/stream_auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "absl/strings/str_format.h"

namespace ferry::migration {
namespace {

std::string Mac(const Secret &secret, absl::string_view label, absl::string_view id,
                absl::string_view a, absl::string_view b) {
  std::string msg(label);
  // Lengths first: no two different (id, a, b) give the same message.
  msg += absl::StrFormat("|%d|%d|%d|", id.size(), a.size(), b.size());
  msg.append(id.data(), id.size());
  msg.append(a.data(), a.size());
  msg.append(b.data(), b.size());
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char *>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<const char *>(out), len);
}

}  // namespace

std::string DestinationProof(const Secret &secret, absl::string_view migration_id,
                             absl::string_view source_nonce, absl::string_view dest_nonce) {
  return Mac(secret, "ferry-destination-v3", migration_id, source_nonce, dest_nonce);
}

std::string SourceProof(const Secret &secret, absl::string_view migration_id,
                        absl::string_view source_nonce, absl::string_view dest_nonce) {
  return Mac(secret, "ferry-source-v3", migration_id, dest_nonce, source_nonce);
}

std::string NeverRanProof(const Secret &secret, absl::string_view migration_id,
                          absl::string_view source_nonce) {
  return Mac(secret, "ferry-never-ran-v3", migration_id, source_nonce, "");
}

bool ProofMatches(absl::string_view got, absl::string_view want) {
  if (got.size() != want.size() || want.empty()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= got[i] ^ want[i];
  return diff == 0;
}

bool TokensEqual(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

absl::StatusOr<std::string> NewNonce() {
  fetch::Nonce n;
  absl::Status s = fetch::RandomBytes(absl::MakeSpan(n));
  if (!s.ok()) return s;
  return std::string(reinterpret_cast<const char *>(n.data()), n.size());
}

absl::Status CheckNonce(absl::string_view nonce, absl::string_view what) {
  if (nonce.size() != fetch::kNonceSize)
    return absl::InvalidArgumentError(
        absl::StrFormat("protocol: %s carries a %d-byte nonce, it must be %d", what, nonce.size(),
                        fetch::kNonceSize));
  return absl::OkStatus();
}

}  // namespace ferry::migration
