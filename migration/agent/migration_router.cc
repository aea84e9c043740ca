#include "migration/agent/migration_router.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/log_line.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "migration/convert.h"
#include "migration/page_frame.h"
#include "migration/preflight.h"

namespace ferry::agent {

namespace v1 = ferry::v1;

// Reads the first message, answers it on a thread of its own (starting a
// process takes a while; gRPC's callback threads must not block), ends.
class MigrationRouter::Reactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit Reactor(MigrationRouter* router) : router_(router) { StartRead(&read_buf_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the stream ended before a message"));
      return;
    }
    std::vector<grpc::Slice> slices;
    std::vector<absl::Span<const uint8_t>> spans;
    if (read_buf_.Dump(&slices).ok())
      for (const grpc::Slice& s : slices) spans.emplace_back(s.begin(), s.size());
    auto first = std::make_shared<v1::SourceMessage>();
    const bool parsed = migration::ParseControlFrame(spans, first.get());
    std::thread([this, first, parsed] {
      v1::DestinationMessage reply = parsed
                                         ? router_->Answer(*first)
                                         : migration::ToErrorMessage(absl::InvalidArgumentError(
                                               "protocol: the first message is no control frame"));
      bool own = false;
      (void)grpc::SerializationTraits<v1::DestinationMessage>::Serialize(reply, &write_buf_, &own);
      StartWriteAndFinish(&write_buf_, grpc::WriteOptions(), grpc::Status::OK);
    }).detach();
  }
  void OnDone() override { delete this; }

 private:
  MigrationRouter* const router_;
  grpc::ByteBuffer read_buf_;
  grpc::ByteBuffer write_buf_;
};

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* MigrationRouter::Migrate(
    grpc::CallbackServerContext*) {
  return new Reactor(this);
}

v1::DestinationMessage MigrationRouter::Answer(const v1::SourceMessage& first) {
  v1::DestinationMessage reply;
  if (first.has_hello()) {
    absl::StatusOr<int> port = supervisor_->AdmitIncoming(first.hello());
    if (port.ok()) {
      reply.mutable_redirect()->set_port(static_cast<uint32_t>(*port));
    } else {
      v1::Event e;
      e.set_kind(v1::EVENT_KIND_REQUEST_REFUSED);
      e.set_migration_id(first.hello().migration_id().substr(0, 64));
      e.set_rpc("Migrate");
      e.set_message(std::string(port.status().message()));
      supervisor_->events().Publish(std::move(e));
      reply = migration::ToErrorMessage(port.status());
    }
  } else if (first.has_check()) {
    // A preflight check is answered here, as a destination agent answers
    // it: nothing reserved, no process started (the host's memory, backend
    // and fault mode are this host's, the fetch handshake is made from it).
    const std::vector<migration::CheckItem> items =
        migration::CheckIncoming(first.check(), supervisor_->migration_token(),
                                 [this](const std::string& name, const vmm::VmConfig& config) {
                                   return supervisor_->AdmitCheck(name, config);
                                 });
    for (const migration::CheckItem& item : items)
      *reply.mutable_check_result()->add_items() = migration::ToProto(item);
  } else {
    reply = migration::ToErrorMessage(absl::FailedPreconditionError(
        "this agent runs each VM in a ferry-vmm process of its own (ferryd --state-dir): a "
        "migration starts with Hello here, and its data streams and reconnections go to the "
        "port its Redirect named"));
  }
  return reply;
}

}  // namespace ferry::agent
