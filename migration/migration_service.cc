#include "migration/migration_service.h"

#include "base/grpc_status.h"

namespace ferry::migration {

MigrationService::MigrationService(DestinationOptions options, MigratedFn on_migrated)
    : options_(std::move(options)), on_migrated_(std::move(on_migrated)) {}

grpc::Status MigrationService::Migrate(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<ferry::v1::DestinationMessage, ferry::v1::SourceMessage>*
        stream) {
  DestinationOptions options = options_;
  options.adopt = on_migrated_;
  DestinationSession session(options);
  {
    absl::MutexLock lock(&mu_);
    sessions_[&session] = true;
  }
  absl::Status status = session.Serve(stream);
  {
    absl::MutexLock lock(&mu_);
    sessions_.erase(&session);
  }
  return ToGrpcStatus(status);
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

}  // namespace ferry::migration
