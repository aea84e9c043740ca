// Loopback: both ends of a migration in one process, on 127.0.0.1 — a source
// host's page server and a destination host's gRPC server running the
// ferry.v1.Migration service — with real sockets, real gRPC and a real fetch
// channel. Used by the in-process end-to-end tests and the benchmarks.
//
//   ASSIGN_OR_RETURN(auto lb, Loopback::Start());
//   SourceSession session(vm, lb->SourceConfig(options));
//   RETURN_IF_ERROR(session.Run());
//   std::unique_ptr<vmm::Vm> moved = lb->TakeMigrated(session.migration_id());
#ifndef FERRY_MIGRATION_LOOPBACK_H_
#define FERRY_MIGRATION_LOOPBACK_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "migration/fetch/page_server.h"
#include "migration/migration_service.h"
#include "migration/source_session.h"

namespace ferry::migration {

class Loopback {
 public:
  static absl::StatusOr<std::unique_ptr<Loopback>> Start(
      DestinationOptions destination = {});
  ~Loopback();

  // A SourceConfig that migrates to this loopback's destination.
  SourceConfig MakeSourceConfig(const MigrationOptions& options) const;

  // The destination's VM once its migration completed: waits up to
  // `timeout` for the destination to hand it over (it does so just after the
  // source has seen Completed); null if it does not.
  std::unique_ptr<vmm::Vm> TakeMigrated(const std::string& migration_id,
                                        absl::Duration timeout = absl::Seconds(10));
  MigrationService& service() { return *service_; }
  fetch::PageServer& page_server() { return *page_server_; }
  int destination_port() const { return port_; }

 private:
  Loopback() = default;
  std::unique_ptr<fetch::PageServer> page_server_;
  std::unique_ptr<MigrationService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<vmm::Vm>> migrated_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_LOOPBACK_H_
