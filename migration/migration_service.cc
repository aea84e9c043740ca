#include "migration/migration_service.h"

#include <deque>
#include <vector>

#include "base/grpc_status.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "migration/protocol.h"

namespace ferry::migration {

// One stream: reads are handed to the session as they complete; writes
// queue. Deletes itself in OnDone, after the session ended.
class MigrationService::Reactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
      public DestinationSink {
 public:
  Reactor(MigrationService* service, DestinationOptions options)
      : service_(service), session_(std::move(options), this) {
    service_->Add(&session_);
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
      session_.OnStreamLost();
      return;
    }
    std::vector<grpc::Slice> slices;
    std::vector<absl::Span<const uint8_t>> spans;
    if (read_buf_.Dump(&slices).ok()) {
      spans.reserve(slices.size());
      for (const grpc::Slice& s : slices) spans.emplace_back(s.begin(), s.size());
    }
    const bool more = session_.OnReceive(spans);
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

  void OnCancel() override {
    // The source went away: a pending read completes with !ok and the
    // session fails then.
  }

  void OnDone() override {
    // Every operation is over. The session may still have its completer
    // thread finishing the sink; wait for it to end before deleting.
    (void)session_.Wait();
    service_->Remove(&session_);
    delete this;
  }

 private:
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
  grpc::ByteBuffer read_buf_;
  DestinationSession session_;
  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> outbox_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer write_buf_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

MigrationService::MigrationService(DestinationOptions options, MigratedFn on_migrated)
    : options_(std::move(options)), on_migrated_(std::move(on_migrated)) {}

MigrationService::~MigrationService() {
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reactors_ == 0; };
  mu_.Await(absl::Condition(&none));
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* MigrationService::Migrate(
    grpc::CallbackServerContext*) {
  DestinationOptions options = options_;
  options.adopt = on_migrated_;
  return new Reactor(this, std::move(options));
}

void MigrationService::Add(DestinationSession* s) {
  absl::MutexLock lock(&mu_);
  sessions_[s] = true;
  ++reactors_;
}

void MigrationService::Remove(DestinationSession* s) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(s);
  --reactors_;
}

DestinationSession* MigrationService::Find(const std::string& migration_id) {
  absl::MutexLock lock(&mu_);
  for (auto& [s, unused] : sessions_)
    if (s->migration_id() == migration_id) return s;
  return nullptr;
}

bool MigrationService::HasIncompletePostcopy() const {
  absl::MutexLock lock(&mu_);
  for (auto& [s, unused] : sessions_)
    if (s->state() == DestinationState::kPostcopy) return true;
  return false;
}

int MigrationService::active() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(sessions_.size());
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
}

}  // namespace ferry::migration
