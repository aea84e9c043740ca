#include "migration/loopback.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "migration/protocol.h"

namespace ferry::migration {

absl::StatusOr<std::unique_ptr<Loopback>> Loopback::Start(DestinationOptions destination) {
  std::unique_ptr<Loopback> lb(new Loopback());
  ASSIGN_OR_RETURN(lb->page_server_, fetch::PageServer::Start("127.0.0.1:0"));
  Loopback* raw = lb.get();
  lb->service_ = std::make_unique<MigrationService>(
      destination,
      [raw](const std::string& id, const std::string&, std::unique_ptr<vmm::Vm> vm) {
        absl::MutexLock lock(&raw->mu_);
        raw->migrated_[id] = std::move(vm);
      });
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &lb->port_);
  ConfigureBulkServer(&builder);
  builder.RegisterService(lb->service_.get());
  lb->server_ = builder.BuildAndStart();
  if (lb->server_ == nullptr || lb->port_ == 0)
    return absl::UnavailableError("cannot start the destination gRPC server on 127.0.0.1");
  return lb;
}

Loopback::~Loopback() {
  if (server_) server_->Shutdown();
}

SourceConfig Loopback::MakeSourceConfig(const MigrationOptions& options) const {
  SourceConfig c;
  c.options = options;
  c.destination = absl::StrCat("127.0.0.1:", port_);
  c.page_server = page_server_.get();
  c.fetch_address = absl::StrCat("127.0.0.1:", page_server_->port());
  return c;
}

std::unique_ptr<vmm::Vm> Loopback::TakeMigrated(const std::string& migration_id,
                                                absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return migrated_.count(migration_id) > 0;
  };
  mu_.AwaitWithTimeout(absl::Condition(&arrived), timeout);
  auto it = migrated_.find(migration_id);
  if (it == migrated_.end()) return nullptr;
  auto vm = std::move(it->second);
  migrated_.erase(it);
  return vm;
}

}  // namespace ferry::migration
