// MigrationRouter: ferry.v1.Migration of ferryd --state-dir. It takes a
// migration's first message only:
//   - Hello: admitted by the Supervisor (token, name, limits), which starts
//     the ferry-vmm process that takes the migration; the answer is
//     Redirect with that process's port, and the stream ends. The source
//     sends its Hello again there (migration.proto, Redirect).
//   - anything else (a data stream's Join, a Reconnect, a check): an Error
//     that says where such streams go. Sources send them to the process's
//     port, which they learnt from the Redirect.
#ifndef FERRY_MIGRATION_AGENT_MIGRATION_ROUTER_H_
#define FERRY_MIGRATION_AGENT_MIGRATION_ROUTER_H_

#include "ferry/v1/migration.grpc.pb.h"
#include "migration/agent/supervisor.h"

namespace ferry::agent {

// Raw messages on the callback API, as MigrationService: sources send
// control frames (page_frame.h), not plain protobuf.
class MigrationRouter final
    : public ferry::v1::Migration::WithRawCallbackMethod_Migrate<ferry::v1::Migration::Service> {
 public:
  explicit MigrationRouter(Supervisor* supervisor) : supervisor_(supervisor) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Migrate(
      grpc::CallbackServerContext* context) override;

  // The answer to a stream's first message.
  ferry::v1::DestinationMessage Answer(const ferry::v1::SourceMessage& first);

 private:
  class Reactor;
  Supervisor* const supervisor_;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_MIGRATION_ROUTER_H_
