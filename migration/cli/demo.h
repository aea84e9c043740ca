// The demo (`ferry demo`, what `./dev demo` runs): a live migration between
// two ferryd agents on loopback, end to end, through the control API.
//  1. starts two ferryd processes on 127.0.0.1 (free ports);
//  2. creates a VM on the first (default 1 GiB, 2 vCPUs, zipf);
//  3. migrates it to the second (hybrid by default) with live progress;
//  4. verifies the destination's memory against a replay of the guest;
//  5. prints the report, with guest ops/s before, during and after.
// Both agents stop when the demo exits, also on Ctrl-C.
#ifndef FERRY_MIGRATION_CLI_DEMO_H_
#define FERRY_MIGRATION_CLI_DEMO_H_

#include <cstdio>

#include "absl/status/status.h"
#include "ferry/v1/control.pb.h"

namespace ferry::cli {

// The VM to create (its name is set by the demo) and the migration to start
// (vm name, destination and request id are set by the demo); the agents
// validate both.
struct DemoOptions {
  ferry::v1::CreateVmRequest vm;
  ferry::v1::StartMigrationRequest migration;
  bool json = false;
};

// DataLoss if the digest does not match the reference.
absl::Status RunDemo(const DemoOptions& options, FILE* out);

}  // namespace ferry::cli

#endif  // FERRY_MIGRATION_CLI_DEMO_H_
