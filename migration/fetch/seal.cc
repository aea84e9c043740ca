#include "migration/fetch/seal.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace ferry::migration::fetch {
namespace {

EVP_CIPHER_CTX* Ctx(void* p) { return static_cast<EVP_CIPHER_CTX*>(p); }

}  // namespace

absl::StatusOr<std::unique_ptr<ReplySeal>> ReplySeal::Create(const Secret& secret,
                                                             const Nonce& nonce,
                                                             absl::string_view migration_id) {
  std::string info = "ferry fetch reply key v1";
  info.append(reinterpret_cast<const char*>(nonce.data()), nonce.size());
  info.append(migration_id.data(), migration_id.size());
  uint8_t key[32];
  unsigned key_len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const uint8_t*>(info.data()), info.size(), key, &key_len) == nullptr ||
      key_len != sizeof(key))
    return absl::InternalError("fetch channel: deriving the reply key failed");
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) return absl::ResourceExhaustedError("fetch channel: no cipher context");
  const bool ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
                  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) == 1 &&
                  EVP_CipherInit_ex(ctx, nullptr, nullptr, key, nullptr, -1) == 1;
  OPENSSL_cleanse(key, sizeof(key));
  if (!ok) {
    EVP_CIPHER_CTX_free(ctx);
    return absl::InternalError("fetch channel: setting up AES-256-GCM failed");
  }
  return std::unique_ptr<ReplySeal>(new ReplySeal(ctx));
}

ReplySeal::~ReplySeal() { EVP_CIPHER_CTX_free(Ctx(ctx_)); }

void ReplySeal::NextIv(uint8_t iv[12]) {
  std::memset(iv, 0, 4);
  for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<uint8_t>(seq_ >> (8 * i));
  ++seq_;
}

absl::Status ReplySeal::Seal(const uint8_t header[kReplyHeaderSize], uint8_t* data, size_t len,
                             uint8_t tag[kSealTagSize]) {
  uint8_t iv[12];
  NextIv(iv);
  EVP_CIPHER_CTX* c = Ctx(ctx_);
  int n = 0;
  if (EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, iv, 1) != 1 ||
      EVP_CipherUpdate(c, nullptr, &n, header, kReplyHeaderSize) != 1 ||
      (len > 0 && EVP_CipherUpdate(c, data, &n, data, static_cast<int>(len)) != 1) ||
      EVP_CipherFinal_ex(c, data + len, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kSealTagSize, tag) != 1)
    return absl::InternalError("fetch channel: encrypting a reply failed");
  return absl::OkStatus();
}

absl::Status ReplySeal::Open(const uint8_t header[kReplyHeaderSize], uint8_t* data, size_t len,
                             const uint8_t tag[kSealTagSize]) {
  uint8_t iv[12];
  NextIv(iv);
  EVP_CIPHER_CTX* c = Ctx(ctx_);
  int n = 0;
  uint8_t t[kSealTagSize];
  std::memcpy(t, tag, sizeof(t));
  if (EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, iv, 0) != 1 ||
      EVP_CipherUpdate(c, nullptr, &n, header, kReplyHeaderSize) != 1 ||
      (len > 0 && EVP_CipherUpdate(c, data, &n, data, static_cast<int>(len)) != 1) ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kSealTagSize, t) != 1)
    return absl::InternalError("fetch channel: decrypting a reply failed");
  if (EVP_CipherFinal_ex(c, data + len, &n) != 1)
    return absl::DataLossError(absl::StrCat(
        "fetch channel: reply ", seq_ - 1,
        " does not authenticate (altered, replayed or out of order)"));
  return absl::OkStatus();
}

}  // namespace ferry::migration::fetch
