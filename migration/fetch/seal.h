// ReplySeal: encryption of the fetch channel's replies (AES-256-GCM), used
// when the migration asks for it (Hello.fetch_encrypted: the agents talk
// TLS). Each connection has its own key, derived from the migration's
// secret and the connection's handshake nonce:
//   key = HMAC-SHA256(secret, "ferry fetch reply key v1" | nonce | id)
// and each reply its own IV, the reply's sequence number on the connection
// (4 zero bytes, then the number as 8 little-endian bytes), which both ends
// count: a reply replayed, reordered or moved to another connection does
// not open. The reply header stays readable and is authenticated (AAD); the
// page data is encrypted in place; the 16-byte tag follows the data.
//
// One per connection end; not thread-safe (a connection is served by one
// thread at a time).
#ifndef FERRY_MIGRATION_FETCH_SEAL_H_
#define FERRY_MIGRATION_FETCH_SEAL_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migration/fetch/wire.h"

namespace ferry::migration::fetch {

inline constexpr size_t kSealTagSize = 16;

class ReplySeal {
 public:
  static absl::StatusOr<std::unique_ptr<ReplySeal>> Create(const Secret& secret,
                                                           const Nonce& nonce,
                                                           absl::string_view migration_id);
  ~ReplySeal();
  ReplySeal(const ReplySeal&) = delete;
  ReplySeal& operator=(const ReplySeal&) = delete;

  // The next reply: encrypts data[0, len) in place and writes its tag.
  absl::Status Seal(const uint8_t header[kReplyHeaderSize], uint8_t* data, size_t len,
                    uint8_t tag[kSealTagSize]);
  // The next reply: checks the tag and decrypts data[0, len) in place;
  // DataLoss if the reply was altered, replayed or out of order.
  absl::Status Open(const uint8_t header[kReplyHeaderSize], uint8_t* data, size_t len,
                    const uint8_t tag[kSealTagSize]);

 private:
  explicit ReplySeal(void* ctx) : ctx_(ctx) {}
  void NextIv(uint8_t iv[12]);
  void* ctx_;  // EVP_CIPHER_CTX, keyed
  uint64_t seq_ = 0;
};

}  // namespace ferry::migration::fetch

#endif  // FERRY_MIGRATION_FETCH_SEAL_H_
