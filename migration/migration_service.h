// MigrationService: the destination agent's ferry.v1.Migration service, on
// gRPC's callback API with raw messages. Each migration's main stream gets a
// reactor that owns its DestinationSession (shared with the migration's data
// streams, which join it by id): a received message is handed to
// the session on the thread gRPC completed the read on (page frames are
// installed straight from the received slices, no thread hop, no parse into
// a protobuf), and the session's replies are queued and written one at a
// time. A completed migration's VM is handed to `on_migrated` before the
// source is told it completed.
//
// Threads: concurrent migrations, one reactor per stream, at most 256
// streams open at once (more are refused with RESOURCE_EXHAUSTED). Ended
// sessions are kept 15 minutes (at most 64) to answer a late Reconnect.
#ifndef FERRY_MIGRATION_MIGRATION_SERVICE_H_
#define FERRY_MIGRATION_MIGRATION_SERVICE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "ferry/v1/migration.grpc.pb.h"
#include "grpcpp/server_builder.h"
#include "migration/destination_session.h"

namespace ferry::migration {

class MigrationService final
    : public ferry::v1::Migration::WithRawCallbackMethod_Migrate<ferry::v1::Migration::Service> {
 public:
  using MigratedFn = std::function<void(const std::string& migration_id,
                                        const std::string& vm_name,
                                        std::unique_ptr<vmm::Vm> vm)>;
  MigrationService(DestinationOptions options, MigratedFn on_migrated);
  // Waits for every migration's reactor to end (the server must be shut
  // down first).
  ~MigrationService() override;

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Migrate(
      grpc::CallbackServerContext* context) override;

  // The session of a migration in progress (null when none); valid while it
  // runs. For observability and tests.
  DestinationSession* Find(const std::string& migration_id);
  // Every incoming migration this agent is receiving now.
  std::vector<DestinationSession::Info> Incoming() const;
  // The incoming migration `migration_id`, under way or ended while the
  // service keeps it (a live one over an ended one); nullopt if none.
  std::optional<DestinationSession::Info> IncomingInfo(const std::string& migration_id);
  int active() const;
  // True while an incoming migration has resumed the VM here but pages are
  // still missing (the agent must not exit then).
  bool HasIncompletePostcopy() const;

 private:
  class Reactor;
  // Adds a new session; drops ended ones past their retention.
  void Add(std::shared_ptr<DestinationSession> s);
  // Moves ended sessions past their retention (age, or the oldest past the
  // count) into *reaped, for the caller to destroy without mu_.
  void PruneLocked(std::vector<std::shared_ptr<DestinationSession>>* reaped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Prunes every 30 s, so that an idle agent lets go of ended migrations
  // too (not only when the next one arrives).
  void ReaperLoop();
  void ReactorDone();
  // The session receiving `migration_id`, shared with a data stream.
  std::shared_ptr<DestinationSession> FindShared(const std::string& migration_id);

  const DestinationOptions options_;
  const MigratedFn on_migrated_;
  mutable absl::Mutex mu_;
  std::map<DestinationSession*, std::shared_ptr<DestinationSession>> sessions_
      ABSL_GUARDED_BY(mu_);
  int reactors_ ABSL_GUARDED_BY(mu_) = 0;  // streams not yet done
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reaper_;
};

// Server settings for bulk page streams: message sizes, flow-control
// window, HTTP/2 frame size, large socket reads.
void ConfigureBulkServer(grpc::ServerBuilder* builder);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_MIGRATION_SERVICE_H_
