#include "bench/migrate.h"

#include <thread>

#include "base/status_macros.h"
#include "migration/loopback.h"
#include "migration/source_session.h"

namespace ferry::bench {

absl::StatusOr<migration::MigrationReport> RunMigrate(const MigrateOptions& options) {
  ASSIGN_OR_RETURN(auto lb, migration::Loopback::Start());
  ASSIGN_OR_RETURN(auto source, vmm::Vm::Create(options.vm));
  RETURN_IF_ERROR(source->LoadInitialMemory());
  RETURN_IF_ERROR(source->Start());
  std::this_thread::sleep_for(std::chrono::milliseconds(options.warmup_ms));

  migration::SourceSession session(source.get(), lb->MakeSourceConfig(options.migration));
  absl::Status status = session.Run();
  migration::MigrationReport report = session.report();
  if (!status.ok()) return report;  // the outcome says why

  std::unique_ptr<vmm::Vm> moved = lb->TakeMigrated(session.migration_id());
  if (moved == nullptr) return absl::InternalError("the destination kept no VM");
  if (options.vm.workload.ops_per_vcpu == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    RETURN_IF_ERROR(moved->Pause());
  } else {
    RETURN_IF_ERROR(moved->WaitUntilHalted(absl::Minutes(10)));
  }
  std::vector<uint64_t> ops;
  for (const vmm::VcpuStats& v : moved->Stats().vcpus) ops.push_back(v.counters.ops);
  ASSIGN_OR_RETURN(vmm::MemoryDigest got, moved->Digest());
  moved.reset();  // free its memory before the replay takes as much again
  source.reset();
  ASSIGN_OR_RETURN(vmm::MemoryDigest want, vmm::ReferenceDigest(options.vm, ops));
  report.digest_match = got.digest == want.digest;
  return report;
}

}  // namespace ferry::bench
