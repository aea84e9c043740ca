// The migrate scenario: one migration between two ferryd agents on loopback
// (two processes, as `ferry demo` runs them), of a VM running a guest
// workload, driven through the control API. After completion the
// destination's guest is verified against a replay of the same per-vCPU
// operations (VerifyVm: `digest_match`).
#ifndef FERRY_BENCH_MIGRATE_H_
#define FERRY_BENCH_MIGRATE_H_

#include "absl/status/statusor.h"
#include "migration/options.h"
#include "migration/report.h"
#include "vmm/vm.h"

namespace ferry::bench {

struct MigrateOptions {
  vmm::VmConfig vm;  // ops_per_vcpu 0: the guest runs until stopped
  migration::MigrationOptions migration;
  // Let the guest run this long on the source before migrating: long
  // enough for the guest-impact baseline (a warmed-up second).
  int64_t warmup_ms = 1500;
  // Run each agent as `ferryd --state-dir` (a temporary one): the VM in a
  // ferry-vmm process of its own. Every process is gone when this returns.
  bool vmm_processes = false;
  // Start each agent in a session of its own (setsid), as a service manager
  // starts an agent on its host. Where the kernel's autogroup applies (a
  // task outside any cpu cgroup), each session is a scheduling group of
  // its own; the VMM processes always are. False puts both in-ferryd agents
  // in this process's session: one group, an advantage only a loopback run
  // has (docs/benchmarks.md, "Processes").
  bool own_sessions = true;
};

absl::StatusOr<migration::MigrationReport> RunMigrate(const MigrateOptions& options);

// The same, with how long CreateVm took (the VM running: memory, vCPUs and,
// with vmm_processes, the process started and ready).
struct MigrateRun {
  migration::MigrationReport report;
  double create_ms = 0;
};
absl::StatusOr<MigrateRun> RunMigrateTimed(const MigrateOptions& options);

}  // namespace ferry::bench

#endif  // FERRY_BENCH_MIGRATE_H_
