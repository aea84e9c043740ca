// SourceStream: the source's end of one ferry.v1.Migration stream, as the
// source session uses it. The production implementation is a gRPC
// bidirectional stream (OpenMigrationStream); tests script a destination
// behind the same interface (tests/migration/source_session_test.cc).
//
// Threads: Write() and WritesDone() from one thread (the session's), Read()
// from one other thread (the session's reader), Cancel() from any thread,
// Finish() once Read() has returned false.
#ifndef FERRY_MIGRATION_SOURCE_STREAM_H_
#define FERRY_MIGRATION_SOURCE_STREAM_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ferry/v1/migration.pb.h"
#include "grpcpp/security/credentials.h"

namespace ferry::migration {

class SourceStream {
 public:
  virtual ~SourceStream() = default;
  // Blocks until `message` is handed to the transport; false once the
  // stream is broken or cancelled.
  virtual bool Write(const ferry::v1::SourceMessage& message) = 0;
  // Blocks for the destination's next message; false when the stream ended.
  virtual bool Read(ferry::v1::DestinationMessage* message) = 0;
  // No more messages from the source.
  virtual void WritesDone() = 0;
  // Why the stream ended (OK: the destination closed it). Call once Read()
  // returned false; later calls return the same status.
  virtual absl::Status Finish() = 0;
  // Makes blocked and later Read() and Write() calls return false.
  virtual void Cancel() = 0;
};

// Opens a gRPC stream to the destination agent at `destination`
// (HOST:PORT) with `credentials` (null: insecure), sized for page batches.
absl::StatusOr<std::unique_ptr<SourceStream>> OpenMigrationStream(
    const std::string& destination, std::shared_ptr<grpc::ChannelCredentials> credentials);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SOURCE_STREAM_H_
