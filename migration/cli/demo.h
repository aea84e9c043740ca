// The demo: a live migration between two agents on loopback, end to end.
// A VM runs a guest workload on the source; it is migrated (hybrid by
// default) with a progress line every 250 ms; the destination's guest keeps
// running, is then paused, and its memory is verified against a replay of
// the same per-vCPU operations that never moved; a report follows.
//
// Both agents live in this process for now (migration/loopback.h: real
// sockets, real gRPC, a real fetch channel).
#ifndef FERRY_MIGRATION_CLI_DEMO_H_
#define FERRY_MIGRATION_CLI_DEMO_H_

#include <cstdio>

#include "absl/status/status.h"
#include "migration/options.h"
#include "vmm/vm.h"

namespace ferry::cli {

struct DemoOptions {
  vmm::VmConfig vm;
  migration::MigrationOptions migration;
  bool json = false;
};

// DataLoss if the digest does not match the reference.
absl::Status RunDemo(const DemoOptions& options, FILE* out);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_DEMO_H_
