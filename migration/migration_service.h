// MigrationService: the destination agent's ferry.v1.Migration service. Each
// stream the source opens runs one DestinationSession on the gRPC handler
// thread (the synchronous API: the session blocks while it installs pages,
// which a callback reactor must never do). A completed migration's VM is
// handed to `on_migrated` before the source is told it completed.
//
// Threads: any number of concurrent migrations, one per stream.
#ifndef FERRY_MIGRATION_MIGRATION_SERVICE_H_
#define FERRY_MIGRATION_MIGRATION_SERVICE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "ferry/v1/migration.grpc.pb.h"
#include "migration/destination_session.h"

namespace ferry::migration {

class MigrationService final : public ferry::v1::Migration::Service {
 public:
  using MigratedFn = std::function<void(const std::string& migration_id,
                                        const std::string& vm_name,
                                        std::unique_ptr<vmm::Vm> vm)>;
  MigrationService(DestinationOptions options, MigratedFn on_migrated);

  grpc::Status Migrate(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<ferry::v1::DestinationMessage,
                                                ferry::v1::SourceMessage>* stream) override;

  // The session of a migration in progress (null when none); valid while it
  // runs. For observability and tests.
  DestinationSession* Find(const std::string& migration_id);
  int active() const;
  // True while an incoming migration has resumed the VM here but pages are
  // still missing (the agent must not exit then).
  bool HasIncompletePostcopy() const;

 private:
  const DestinationOptions options_;
  const MigratedFn on_migrated_;
  mutable absl::Mutex mu_;
  std::map<DestinationSession*, bool> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_MIGRATION_SERVICE_H_
