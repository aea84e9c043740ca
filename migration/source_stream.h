// SourceStream: the source's end of one ferry.v1.Migration stream, as the
// source session uses it. The production implementation is a gRPC
// bidirectional stream on the callback API (OpenMigrationStream); tests
// script a destination behind the same interface
// (tests/migration/source_session_test.cc).
//
// Framing (migration/page_frame.h): Write() sends a control message
// (kControlFrame + a serialized SourceMessage), WriteFrame() a page frame
// whose page data gRPC reads straight from guest memory, or (a frame that
// owns a copy: FrameData::kCopy) from the frame's own buffer, which gRPC
// takes over and frees once sent.
//
// Threads: Write(), WriteFrame(), WritesDone() and Finish() from one thread
// (the session's), Read() from one other thread (the session's reader),
// Cancel() from any thread.
#ifndef FERRY_MIGRATION_SOURCE_STREAM_H_
#define FERRY_MIGRATION_SOURCE_STREAM_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ferry/v1/migration.pb.h"
#include "grpcpp/security/credentials.h"
#include "migration/page_frame.h"

namespace ferry::migration {

class SourceStream {
 public:
  virtual ~SourceStream() = default;
  // Hands `message` to the transport; false once the stream is broken or
  // cancelled. May return before the bytes left (one write in flight: the
  // next call waits for it), so a failure can surface one call late.
  virtual bool Write(const ferry::v1::SourceMessage& message) = 0;
  // Like Write, for a page frame. The guest memory the frame references
  // must stay mapped until the stream is destroyed.
  virtual bool WriteFrame(EncodedFrame frame) = 0;
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

// Channel arguments for bulk page streams (both ends' message size limits,
// flow-control window, frame and read sizes, one connection per channel).
grpc::ChannelArguments BulkChannelArguments();

// Opens a gRPC stream to the destination agent at `destination`
// (HOST:PORT) with `credentials` (null: insecure), on a connection of its
// own.
absl::StatusOr<std::unique_ptr<SourceStream>> OpenMigrationStream(
    const std::string& destination, std::shared_ptr<grpc::ChannelCredentials> credentials);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SOURCE_STREAM_H_
