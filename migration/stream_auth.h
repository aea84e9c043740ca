// Proof of the per-migration secret on the migration streams
// (proto/ferry/v1/migration.proto, "Challenge"; docs/protocol.md).
//
// The secret is Hello.fetch_secret: 32 random bytes the source draws for
// one migration and sends only to the destination it starts, so only the
// two ends of that migration hold it. The pool token admits a peer to the
// agent; these proofs bind a stream to one migration's two ends:
// - Reconnect and Join: the destination proves the secret to the source
//   (DestinationProof over both nonces), then the source to the destination
//   (SourceProof), each over the other's fresh nonce, so neither proof can be
//   replayed on another stream;
// - never_ran: the destination's claim that it never ran the VM (the source
//   may then resume it) is NeverRanProof over the source's Reconnect nonce.
#ifndef FERRY_MIGRATION_STREAM_AUTH_H_
#define FERRY_MIGRATION_STREAM_AUTH_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migration/fetch/wire.h"

namespace ferry::migration {

using fetch::Secret;

// HMAC-SHA256(secret, "ferry-destination-v3" | id | source_nonce | dest_nonce).
std::string DestinationProof(const Secret &secret, absl::string_view migration_id,
                             absl::string_view source_nonce, absl::string_view dest_nonce);
// HMAC-SHA256(secret, "ferry-source-v3" | id | dest_nonce | source_nonce).
std::string SourceProof(const Secret &secret, absl::string_view migration_id,
                        absl::string_view source_nonce, absl::string_view dest_nonce);
// HMAC-SHA256(secret, "ferry-never-ran-v3" | id | source_nonce).
std::string NeverRanProof(const Secret &secret, absl::string_view migration_id,
                          absl::string_view source_nonce);

// True when `got` equals `want` (constant time in the proof's length; a
// proof of any other length is false).
bool ProofMatches(absl::string_view got, absl::string_view want);

// A pool token compared in constant time (in its length).
bool TokensEqual(absl::string_view a, absl::string_view b);

// 32 fresh random bytes for a Reconnect, Join or Challenge nonce.
absl::StatusOr<std::string> NewNonce();
// A peer's nonce is exactly 32 bytes: InvalidArgument naming `what` else.
absl::Status CheckNonce(absl::string_view nonce, absl::string_view what);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_STREAM_AUTH_H_
