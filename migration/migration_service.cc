#include "migration/migration_service.h"

#include <algorithm>
#include <deque>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/grpc_status.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "migration/convert.h"
#include "migration/page_frame.h"
#include "migration/protocol.h"
#include "migration/stream_auth.h"

namespace ferry::migration {
namespace {

// Ended sessions kept to answer a late Reconnect: for this long, at most
// this many.
constexpr absl::Duration kEndedRetention = absl::Minutes(15);
constexpr size_t kMaxEnded = 64;
// How often an idle agent looks for ended sessions past their retention.
constexpr absl::Duration kReapInterval = absl::Seconds(30);
// Migration streams (main and data) open at once; past it a new stream is
// refused with RESOURCE_EXHAUSTED before it reads anything.
constexpr int kMaxOpenStreams = 256;

}  // namespace

// One stream: reads are handed to the session as they complete; writes
// queue. The first message decides what the stream is: Join makes it a data
// stream of a migration accepted on another stream; anything else opens a
// migration (a session of its own). Deletes itself in OnDone, once its
// session ended (main stream) or it let go of it (data stream).
class MigrationService::Reactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
      public DestinationSink {
 public:
  // `refuse`: not OK when the stream is refused at once (a limit).
  Reactor(MigrationService* service, DestinationOptions options, const absl::Status& refuse)
      : service_(service), options_(std::move(options)) {
    if (!refuse.ok()) {
      Finish(refuse);
      return;
    }
    StartRead(&read_buf_);
  }

  // DestinationSink.
  bool Send(const ferry::v1::DestinationMessage& message) override {
    grpc::ByteBuffer buf;
    bool own = false;
    if (!grpc::SerializationTraits<ferry::v1::DestinationMessage>::Serialize(message, &buf, &own)
             .ok())
      return false;
    absl::MutexLock lock(&mu_);
    if (closed_) return false;
    outbox_.push_back(std::move(buf));
    if (!writing_) StartNextWriteLocked();
    return true;
  }

  void Finish(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    final_status_ = ToGrpcStatus(status);
    if (!writing_) FinishLocked();  // else after the queue drains
  }

  // Reactions.
  void OnReadDone(bool ok) override {
    if (!ok) {
      // After switchover the session lets go of a broken stream (it waits
      // for the source to reconnect); this stream then ends here.
      if (session_ && !data_ && session_->OnStreamLost(this)) return;
      Finish(absl::UnavailableError("the migration stream ended"));
      return;
    }
    std::vector<grpc::Slice> slices;
    std::vector<absl::Span<const uint8_t>> spans;
    if (read_buf_.Dump(&slices).ok()) {
      spans.reserve(slices.size());
      for (const grpc::Slice& s : slices) spans.emplace_back(s.begin(), s.size());
    }
    bool more;
    if (challenged_) {
      more = OnStreamProof(spans);
    } else if (!session_ && !data_) {
      // The first message: a Join or Reconnect (each first proves the
      // migration's secret), or the start of a migration.
      ferry::v1::SourceMessage m;
      if (ParseControlFrame(spans, &m) && m.has_join()) {
        more = Challenge(m);
      } else if (m.has_reconnect()) {
        more = Challenge(m);
      } else {
        session_ = std::make_shared<DestinationSession>(options_, this);
        service_->Add(session_);
        more = session_->OnReceive(spans);
      }
    } else if (data_) {
      more = OnData(spans);
    } else {
      more = session_->OnReceive(spans, this);
    }
    slices.clear();
    read_buf_.Clear();
    if (more) StartRead(&read_buf_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      outbox_.clear();
      if (!closed_) {
        closed_ = true;
        final_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
      }
    }
    if (!outbox_.empty()) {
      StartNextWriteLocked();
    } else if (closed_ && !finished_) {
      FinishLocked();
    }
  }

  void OnDone() override {
    // Every operation is over. The service keeps the session (it may be
    // waiting for a reconnection, or answer a late one).
    session_.reset();
    service_->ReactorDone();
    delete this;
  }

 private:
  // A Reconnect or Join (`first`): the pool token first, then the
  // migration, then a Challenge proving its secret; the stream waits for
  // the source's StreamProof (OnStreamProof). Nothing of the migration is
  // touched before that proof. False (and the stream finished) if refused.
  bool Challenge(const ferry::v1::SourceMessage& first) {
    const bool join = first.has_join();
    const std::string& token =
        join ? first.join().auth_token() : first.reconnect().auth_token();
    const std::string& id = join ? first.join().migration_id() : first.reconnect().migration_id();
    const std::string& nonce = join ? first.join().nonce() : first.reconnect().nonce();
    if (!options_.expected_token.empty() && !TokensEqual(token, options_.expected_token)) {
      Reply(absl::UnauthenticatedError(
          "wrong migration token: give the source agent the destination's token"));
      return false;
    }
    absl::Status bad = CheckNonce(nonce, join ? "Join" : "Reconnect");
    if (!bad.ok()) {
      Reply(bad);
      return false;
    }
    std::shared_ptr<DestinationSession> s = service_->FindShared(id);
    if (!s) {
      const std::string shown = id.substr(0, kMaxMigrationIdBytes);
      Reply(absl::NotFoundError(
          join ? absl::StrFormat("no migration %s is being received here", shown)
               : absl::StrFormat(
                     "no migration %s is known here (it ended long ago, or this agent restarted)",
                     shown)));
      return false;
    }
    absl::StatusOr<ferry::v1::DestinationMessage> challenge = s->Challenge(nonce, &dest_nonce_);
    if (!challenge.ok()) {
      Reply(challenge.status());
      return false;
    }
    first_ = first;
    pending_ = std::move(s);
    challenged_ = true;
    return Send(*challenge);
  }

  // The answer to Challenge: with the right proof the Reconnect or Join
  // goes on; a wrong one ends this stream only (the migration's live stream
  // is not disturbed).
  bool OnStreamProof(const std::vector<absl::Span<const uint8_t>>& spans) {
    challenged_ = false;
    std::shared_ptr<DestinationSession> s = std::move(pending_);
    ferry::v1::SourceMessage m;
    const bool join = first_.has_join();
    const std::string& nonce = join ? first_.join().nonce() : first_.reconnect().nonce();
    if (!ParseControlFrame(spans, &m) || !m.has_stream_proof()) {
      Reply(absl::InvalidArgumentError(
          "protocol: the answer to Challenge must be StreamProof"));
      return false;
    }
    if (!s->SourceProved(nonce, dest_nonce_, m.stream_proof().proof())) {
      Reply(absl::UnauthenticatedError(absl::StrFormat(
          "%s: the stream did not prove migration %s's secret", join ? "Join" : "Reconnect",
          s->migration_id())));
      return false;
    }
    return join ? Join(first_.join(), std::move(s)) : Reconnect(first_.reconnect(), std::move(s));
  }

  // A recovery stream, proven: the source reconnects to its migration after
  // the old stream broke; false (and the stream finished) if it may not.
  bool Reconnect(const ferry::v1::Reconnect& reconnect, std::shared_ptr<DestinationSession> s) {
    if (!s->Reconnect(this, reconnect)) return false;  // answered and finished
    session_ = std::move(s);
    return true;
  }

  // A data stream, proven, joins its migration; false (and the stream
  // finished) if it may not.
  bool Join(const ferry::v1::Join& join, std::shared_ptr<DestinationSession> session) {
    data_ = true;
    session_ = std::move(session);
    absl::Status s = session_->Attach(join);
    if (!s.ok()) {
      session_.reset();
      Reply(s);
      return false;
    }
    ferry::v1::DestinationMessage accepted;
    accepted.mutable_accepted()->set_protocol_version(kProtocolVersion);
    return Send(accepted);
  }

  // A message on a data stream: a page frame, or Flush.
  bool OnData(const std::vector<absl::Span<const uint8_t>>& spans) {
    ferry::v1::SourceMessage m;
    if (!spans.empty() && !spans[0].empty() && spans[0][0] == kPageFrame) {
      absl::Status s = session_->OnDataFrame(spans, &bounce_);
      if (!s.ok()) {
        Reply(s);
        return false;
      }
      ++frames_;
      return true;
    }
    if (ParseControlFrame(spans, &m) && m.has_flush()) {
      ferry::v1::DestinationMessage flushed;
      flushed.mutable_flushed()->set_seq(m.flush().seq());
      flushed.mutable_flushed()->set_frames(frames_);
      return Send(flushed);
    }
    Reply(absl::InvalidArgumentError(
        "protocol: a data stream carries page frames and Flush only"));
    return false;
  }

  // Error to the source, then the end of this stream.
  void Reply(const absl::Status& s) {
    (void)Send(ToErrorMessage(s));
    Finish(s);
  }

  void StartNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    write_buf_ = std::move(outbox_.front());
    outbox_.pop_front();
    StartWrite(&write_buf_);
  }
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finished_ = true;
    ServerBidiReactor::Finish(final_status_);
  }

  MigrationService* const service_;
  const DestinationOptions options_;
  grpc::ByteBuffer read_buf_;
  std::shared_ptr<DestinationSession> session_;
  // Between Challenge and StreamProof: the first message, the session it
  // named and the nonce this end sent.
  bool challenged_ = false;
  ferry::v1::SourceMessage first_;
  std::shared_ptr<DestinationSession> pending_;
  std::string dest_nonce_;
  bool data_ = false;        // a data stream (after Join)
  uint64_t frames_ = 0;      // data stream: page frames installed
  std::vector<uint8_t> bounce_;
  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> outbox_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer write_buf_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

MigrationService::MigrationService(DestinationOptions options, MigratedFn on_migrated)
    : options_(std::move(options)), on_migrated_(std::move(on_migrated)) {
  reaper_ = std::thread(&MigrationService::ReaperLoop, this);
}

void MigrationService::ReaperLoop() {
  for (;;) {
    // Declared before the lock: destroyed (joining their threads) after it
    // is released.
    std::vector<std::shared_ptr<DestinationSession>> reaped;
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), kReapInterval)) return;
    PruneLocked(&reaped);
  }
}

MigrationService::~MigrationService() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  reaper_.join();
  std::map<DestinationSession*, std::shared_ptr<DestinationSession>> sessions;
  {
    absl::MutexLock lock(&mu_);
    auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reactors_ == 0; };
    mu_.Await(absl::Condition(&none));
    sessions.swap(sessions_);
  }
  // Paused migrations (no stream) end now; the sessions' threads are
  // joined as they go.
  for (auto& [raw, s] : sessions) s->Abandon(absl::AbortedError("the destination agent stopped"));
  sessions.clear();
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* MigrationService::Migrate(
    grpc::CallbackServerContext*) {
  DestinationOptions options = options_;
  options.adopt = on_migrated_;
  absl::Status refuse;
  {
    absl::MutexLock lock(&mu_);
    if (reactors_ >= kMaxOpenStreams)
      refuse = absl::ResourceExhaustedError(absl::StrFormat(
          "this agent has %d migration streams open, its limit", kMaxOpenStreams));
    ++reactors_;
  }
  return new Reactor(this, std::move(options), refuse);
}

void MigrationService::ReactorDone() {
  absl::MutexLock lock(&mu_);
  --reactors_;
}

void MigrationService::Add(std::shared_ptr<DestinationSession> s) {
  // Declared before the lock: reaped sessions (whose destructors join
  // their threads) are destroyed after it is released.
  std::vector<std::shared_ptr<DestinationSession>> reaped;
  absl::MutexLock lock(&mu_);
  PruneLocked(&reaped);
  sessions_[s.get()] = std::move(s);
}

void MigrationService::PruneLocked(std::vector<std::shared_ptr<DestinationSession>>* reaped) {
  // Ended sessions stay a while to answer a late Reconnect; the oldest go
  // first past kMaxEnded.
  const int64_t now = MonotonicNowNanos();
  std::vector<std::pair<int64_t, DestinationSession*>> ended;
  std::vector<DestinationSession*> never_admitted;
  for (auto& [raw, session] : sessions_) {
    const int64_t at = raw->ended_at_ns();
    if (at == 0) continue;
    // A check, or a Hello refused: no migration to answer a Reconnect for,
    // so it holds none of the kMaxEnded places.
    if (raw->migration_id().empty()) {
      never_admitted.push_back(raw);
    } else {
      ended.push_back({at, raw});
    }
  }
  for (DestinationSession* raw : never_admitted) {
    auto it = sessions_.find(raw);
    reaped->push_back(std::move(it->second));
    sessions_.erase(it);
  }
  std::sort(ended.begin(), ended.end());
  for (size_t i = 0; i < ended.size(); ++i) {
    const bool old = now - ended[i].first > absl::ToInt64Nanoseconds(kEndedRetention);
    if (old || ended.size() - i > kMaxEnded) {
      auto it = sessions_.find(ended[i].second);
      reaped->push_back(std::move(it->second));
      sessions_.erase(it);
    }
  }
}

std::shared_ptr<DestinationSession> MigrationService::FindShared(
    const std::string& migration_id) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<DestinationSession> found;  // a live one over an ended one
  for (auto& [raw, s] : sessions_)
    if (raw->migration_id() == migration_id && (!found || !raw->ended())) found = s;
  return found;
}

DestinationSession* MigrationService::Find(const std::string& migration_id) {
  return FindShared(migration_id).get();  // the service keeps its reference
}

bool MigrationService::HasIncompletePostcopy() const {
  absl::MutexLock lock(&mu_);
  for (auto& [s, unused] : sessions_) {
    if (MustFinish(s->state())) return true;
  }
  return false;
}

std::vector<DestinationSession::Info> MigrationService::Incoming() const {
  std::vector<std::shared_ptr<DestinationSession>> sessions;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [raw, s] : sessions_) sessions.push_back(s);
  }
  std::vector<DestinationSession::Info> out;
  for (const auto& s : sessions) {
    if (s->ended()) continue;
    DestinationSession::Info info = s->GetInfo();
    if (!info.migration_id.empty()) out.push_back(std::move(info));  // past Hello
  }
  return out;
}

std::optional<DestinationSession::Info> MigrationService::IncomingInfo(
    const std::string& migration_id) {
  std::shared_ptr<DestinationSession> s = FindShared(migration_id);
  if (s == nullptr) return std::nullopt;
  return s->GetInfo();
}

int MigrationService::active() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [raw, s] : sessions_) n += raw->ended() ? 0 : 1;
  return n;
}

void ConfigureBulkServer(grpc::ServerBuilder* builder) {
  builder->SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder->SetMaxSendMessageSize(kMaxMessageBytes);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 20);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 4 << 20);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  builder->AddChannelArgument(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  builder->AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  builder->AddChannelArgument(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
  // Liveness: a peer that stops answering HTTP/2 pings (gone, stopped,
  // partitioned) loses its connection within kServerKeepaliveTimeMs +
  // kServerKeepaliveTimeoutMs, which ends its streams (postcopy: the
  // migration pauses and waits for the source to reconnect). The peers'
  // pings are welcome every 2.5 s or less often.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kServerKeepaliveTimeMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kServerKeepaliveTimeoutMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              kKeepaliveTimeMs / 2);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // Bounds per connection: streams at once, and the handshake.
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxStreamsPerConnection);
  builder->AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, kHandshakeTimeoutMs);
}

}  // namespace ferry::migration
