#include "migration/source_stream.h"

#include <deque>

#include "absl/synchronization/mutex.h"
#include "base/grpc_status.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "migration/protocol.h"

namespace ferry::migration {
namespace {

constexpr char kMigrateMethod[] = "/ferry.v1.Migration/Migrate";

// The source's stream on gRPC's callback API. Writes are pipelined: Write()
// returns once its message is started, and waits only for the previous
// write (gRPC allows one in flight). A hold keeps the call open until
// WritesDone(), Finish() or the destructor, so no write can start after
// OnDone.
class GrpcSourceStream final : public SourceStream,
                               public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit GrpcSourceStream(std::shared_ptr<grpc::Channel> channel) : stub_(channel) {
    stub_.PrepareBidiStreamingCall(&context_, kMigrateMethod, grpc::StubOptions(), this);
    AddHold();
    StartRead(&read_buf_);
    StartCall();
  }

  ~GrpcSourceStream() override {
    context_.TryCancel();
    ReleaseHold();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
  }

  bool Write(const ferry::v1::SourceMessage& m) override {
    grpc::Slice slice(EncodeControlFrame(m));
    return Send(grpc::ByteBuffer(&slice, 1));
  }

  bool WriteFrame(EncodedFrame frame) override {
    const size_t wire_bytes = frame.wire_bytes();
    if (std::unique_ptr<uint8_t[]> whole = frame.ReleaseWhole()) {
      // A copied frame: gRPC takes its buffer and frees it when sent.
      grpc::Slice slice(whole.release(), wire_bytes,
                        [](void* p) { delete[] static_cast<uint8_t*>(p); });
      return Send(grpc::ByteBuffer(&slice, 1));
    }
    std::vector<grpc::Slice> slices;
    slices.reserve(frame.pieces().size());
    for (const FramePiece& p : frame.pieces()) {
      if (p.guest_memory) {
        // References guest memory: no copy (the memory outlives the call).
        slices.emplace_back(p.data, p.size, grpc::Slice::STATIC_SLICE);
      } else {
        slices.emplace_back(p.data, p.size);  // a header: copied, small
      }
    }
    return Send(grpc::ByteBuffer(slices.data(), slices.size()));
  }

  bool Read(ferry::v1::DestinationMessage* m) override {
    grpc::ByteBuffer buf;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !inbox_.empty() || reads_done_;
      };
      mu_.Await(absl::Condition(&ready));
      if (inbox_.empty()) return false;
      buf = std::move(inbox_.front());
      inbox_.pop_front();
    }
    grpc::Status s = grpc::SerializationTraits<ferry::v1::DestinationMessage>::Deserialize(&buf, m);
    return s.ok();  // an unparsable message ends the stream for the reader
  }

  void WritesDone() override {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &GrpcSourceStream::WriteIdle));
      if (!hold_ || broken_) return;
    }
    StartWritesDone();
    ReleaseHold();
  }

  absl::Status Finish() override {
    ReleaseHold();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return FromGrpcStatus(status_);
  }

  void Cancel() override { context_.TryCancel(); }

  // Reactions, on gRPC's threads.
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) broken_ = true;
  }
  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (!ok) {
      reads_done_ = true;
      return;
    }
    inbox_.push_back(std::move(read_buf_));
    read_buf_.Clear();
    StartRead(&read_buf_);
  }
  void OnWritesDoneDone(bool) override {}
  void OnDone(const grpc::Status& s) override {
    absl::MutexLock lock(&mu_);
    status_ = s;
    reads_done_ = true;
    broken_ = true;
    done_ = true;
  }

 private:
  bool WriteIdle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !writing_ || broken_; }

  bool Send(grpc::ByteBuffer buf) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &GrpcSourceStream::WriteIdle));
      if (broken_ || !hold_) return false;
      writing_ = true;
      write_buf_ = std::move(buf);
    }
    StartWrite(&write_buf_);
    return true;
  }

  void ReleaseHold() {
    {
      absl::MutexLock lock(&mu_);
      if (!hold_) return;
      hold_ = false;
    }
    RemoveHold();
  }

  grpc::ClientContext context_;
  grpc::GenericStub stub_;
  grpc::ByteBuffer read_buf_;   // owned by the reactor's pending read
  grpc::ByteBuffer write_buf_;  // the write in flight
  absl::Mutex mu_;
  bool hold_ ABSL_GUARDED_BY(mu_) = true;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<grpc::ByteBuffer> inbox_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ChannelArguments BulkChannelArguments() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // A window of several frames in flight, large HTTP/2 frames, large
  // socket reads (fewer slices for the receiver to walk).
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 20);
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 4 << 20);
  args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
  // Each channel its own connection (parallel streams).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Liveness (see ConfigureBulkServer): a destination that stops answering
  // pings breaks the stream within seconds.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnection after switchover is the session's (postcopy recovery);
  // within one channel retries back off to at most 1 s. (The minimum is
  // left alone: gRPC also takes it as the connect timeout.)
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return args;
}

absl::StatusOr<std::unique_ptr<SourceStream>> OpenMigrationStream(
    const std::string& destination, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto creds = credentials ? credentials : grpc::InsecureChannelCredentials();
  auto channel = grpc::CreateCustomChannel(destination, creds, BulkChannelArguments());
  if (!channel) return absl::InternalError("could not create a gRPC channel");
  return std::unique_ptr<SourceStream>(new GrpcSourceStream(channel));
}

}  // namespace ferry::migration
