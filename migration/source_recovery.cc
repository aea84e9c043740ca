// SourceSession: postcopy recovery (source_session.h). After switchover a
// broken or silent migration stream pauses the migration instead of failing
// it; the session reconnects until the destination answers or the recovery
// timeout passes.
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "migration/protocol.h"
#include "migration/source_session.h"
#include "migration/stream_auth.h"

namespace ferry::migration {
namespace {

using ferry::v1::SourceMessage;
using S = SourceState;

constexpr absl::Duration kFirstBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
constexpr absl::Duration kAnswerTimeout = absl::Seconds(10);

}  // namespace

absl::StatusOr<std::unique_ptr<SourceStream>> SourceSession::OpenStream() {
  if (config_.open_stream) return config_.open_stream();
  std::string destination;
  {
    absl::MutexLock lock(&mu_);
    destination = destination_;
  }
  return OpenMigrationStream(destination, config_.credentials);
}

bool SourceSession::Recoverable() {
  absl::MutexLock lock(&mu_);
  if (stream_refused_) return false;  // the destination said no: final
  return state_ == S::kSwitchingOver || state_ == S::kPostcopy || state_ == S::kCompleting ||
         state_ == S::kPostcopyPaused;
}

absl::Status SourceSession::Recover(const std::string& destination) {
  absl::MutexLock lock(&mu_);
  if (!DestinationMayRun(state_) || state_ == S::kSwitchingOver)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s is %s: only a migration after switchover can be recovered", id_,
        SourceStateName(state_)));
  if (IsFinal(state_) || state_ == S::kReleasing)
    return absl::FailedPreconditionError(
        absl::StrFormat("migration %s already ended (%s)", id_, SourceStateName(state_)));
  if (!destination.empty()) destination_ = destination;
  recover_now_ = true;
  limiter_.Interrupt();  // a push waiting out bandwidth debt goes at once
  if (state_ != S::kPostcopyPaused && stream_ && stream_error_.ok()) {
    // Asked while the stream looks alive: the operator knows better.
    stream_error_ = absl::UnavailableError("recovery was asked for");
    stream_->Cancel();
    CancelDataStreamsLocked();
  }
  return absl::OkStatus();
}

void SourceSession::DropStream() {
  {
    absl::MutexLock lock(&mu_);
    if (stream_) stream_->Cancel();
  }
  if (reader_.joinable()) reader_.join();
  absl::MutexLock lock(&mu_);
  stream_.reset();  // no thread uses it now
  stream_error_ = absl::OkStatus();
  stream_refused_ = false;
  reader_done_ = false;
  recovered_ = false;
  present_.clear();
}

absl::Status SourceSession::ReconnectOnce(uint32_t attempt) {
  DropStream();
  ASSIGN_OR_RETURN(std::unique_ptr<SourceStream> stream, OpenStream());
  ASSIGN_OR_RETURN(const std::string nonce, NewNonce());
  {
    absl::MutexLock lock(&mu_);
    stream_ = std::move(stream);
    reconnect_nonce_ = nonce;
    challenge_.reset();
    peer_proven_ = false;
  }
  reader_ = std::thread(&SourceSession::ReaderLoop, this);
  SourceMessage m;
  ferry::v1::Reconnect* r = m.mutable_reconnect();
  r->set_protocol_version(kProtocolVersion);
  r->set_migration_id(id_);
  r->set_auth_token(config_.options.auth_token);
  r->set_attempt(attempt);
  r->set_nonce(nonce);
  RETURN_IF_ERROR(Write(m));
  // The peer proves the migration's secret before anything it says counts
  // (split brain: only the destination this migration switched over to may
  // say it never ran the VM, or take the stream).
  ferry::v1::Challenge challenge;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(AwaitLocked(
        [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return challenge_.has_value(); },
        kAnswerTimeout, "answer the reconnection"));
    challenge = *challenge_;
  }
  RETURN_IF_ERROR(CheckNonce(challenge.nonce(), "Challenge"));
  if (!ProofMatches(challenge.proof(), DestinationProof(secret_, id_, nonce, challenge.nonce())))
    return absl::UnauthenticatedError(absl::StrFormat(
        "the agent at %s could not prove it holds migration %s's secret: it is not the "
        "destination this migration switched over to",
        destination_, id_));
  {
    absl::MutexLock lock(&mu_);
    peer_proven_ = true;
  }
  SourceMessage proof;
  proof.mutable_stream_proof()->set_proof(SourceProof(secret_, id_, nonce, challenge.nonce()));
  RETURN_IF_ERROR(Write(proof));
  absl::MutexLock lock(&mu_);
  return AwaitLocked(
      [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return recovered_ || state_ == S::kReleasing;
      },
      kAnswerTimeout, "answer the reconnection");
}

absl::Status SourceSession::Recover(absl::Status cause) {
  {
    absl::MutexLock lock(&mu_);
    // From switching-over too: Switchover was sent but Resumed never
    // came, and only the destination's answer to Reconnect tells whether
    // it runs the VM.
    if (state_ != S::kPostcopyPaused) RETURN_IF_ERROR(TransitionLocked(S::kPostcopyPaused));
    paused_reason_ = std::string(cause.message());
    recover_now_ = false;
  }
  if (config_.on_recovery) config_.on_recovery("paused", std::string(cause.message()));
  // The push goes on over the reconnected main stream alone: what the
  // data streams carried but the destination did not install is owed
  // again by its present bitmap below.
  DropDataStreams();
  const absl::Time deadline =
      absl::Now() + absl::Milliseconds(config_.options.recovery_timeout_ms);
  absl::Duration backoff = kFirstBackoff;
  absl::Status last = cause;
  for (uint32_t attempt = 1;; ++attempt) {
    absl::Status s = ReconnectOnce(attempt);
    if (s.ok()) break;
    last = s;
    bool refused;
    {
      absl::MutexLock lock(&mu_);
      paused_reason_ = absl::StrFormat("%s; reconnection %d: %s", cause.message(), attempt,
                                       s.message());
      refused = stream_refused_;
    }
    if (refused) {
      // The destination no longer has the migration, or refuses it: final.
      DropStream();
      return absl::Status(s.code(), absl::StrCat("recovery refused: ", s.message()));
    }
    if (absl::Now() + backoff > deadline)
      return absl::DeadlineExceededError(absl::StrFormat(
          "the migration stream broke after switchover (%s) and could not be re-established "
          "within the recovery timeout of %s (%d attempts; last: %s)",
          cause.message(), absl::FormatDuration(absl::Milliseconds(
                               config_.options.recovery_timeout_ms)),
          attempt, last.message()));
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&recover_now_), backoff);
    recover_now_ = false;
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
  if (config_.on_recovery) {
    std::string to;
    {
      absl::MutexLock lock(&mu_);
      to = destination_;
    }
    config_.on_recovery("recovered", absl::StrCat("reconnected to ", to));
  }
  absl::MutexLock lock(&mu_);
  ++reconnects_;
  paused_reason_.clear();
  last_heard_ns_ = clock_->NowNanos();
  if (t_resumed_ == 0) t_resumed_ = clock_->NowNanos();  // Resumed was lost
  if (state_ == S::kReleasing) return absl::OkStatus();  // it had completed
  // What the destination lacks is owed again; what it holds is not sent.
  const size_t want = (num_pages_ + 7) / 8;
  if (present_.size() != want)
    return absl::InvalidArgumentError(absl::StrFormat(
        "protocol: the destination's present bitmap is %d bytes, a %d-page VM needs %d",
        present_.size(), num_pages_, want));
  for (uint64_t p = 0; p < num_pages_; ++p) {
    if (static_cast<uint8_t>(present_[p / 8]) & (1u << (p % 8))) {
      push_order_.Take(p);
    } else {
      push_order_.MarkUnsent(p);
    }
  }
  present_.clear();
  return TransitionLocked(S::kPostcopy);
}

}  // namespace ferry::migration
