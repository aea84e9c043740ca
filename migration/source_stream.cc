#include "migration/source_stream.h"

#include "absl/synchronization/mutex.h"
#include "base/grpc_status.h"
#include "ferry/v1/migration.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "migration/protocol.h"

namespace ferry::migration {
namespace {

class GrpcSourceStream final : public SourceStream {
 public:
  explicit GrpcSourceStream(std::shared_ptr<grpc::Channel> channel)
      : stub_(ferry::v1::Migration::NewStub(channel)),
        stream_(stub_->Migrate(&context_)) {}

  bool Write(const ferry::v1::SourceMessage& m) override { return stream_->Write(m); }
  bool Read(ferry::v1::DestinationMessage* m) override { return stream_->Read(m); }
  void WritesDone() override { stream_->WritesDone(); }
  absl::Status Finish() override {
    absl::MutexLock lock(&mu_);
    if (!finished_) {
      status_ = FromGrpcStatus(stream_->Finish());
      finished_ = true;
    }
    return status_;
  }
  void Cancel() override { context_.TryCancel(); }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<ferry::v1::Migration::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<ferry::v1::SourceMessage,
                                           ferry::v1::DestinationMessage>>
      stream_;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<SourceStream>> OpenMigrationStream(
    const std::string& destination, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  auto creds = credentials ? credentials : grpc::InsecureChannelCredentials();
  auto channel = grpc::CreateCustomChannel(destination, creds, args);
  if (!channel) return absl::InternalError("could not create a gRPC channel");
  return std::unique_ptr<SourceStream>(new GrpcSourceStream(channel));
}

}  // namespace ferry::migration
