// Hello: the first message of a migration, built by the source and
// validated by the destination, for a real migration and for a preflight
// check (`ferry migrate --check`) alike, so that a check judges exactly
// what the migration would send.
#ifndef FERRY_MIGRATION_HELLO_H_
#define FERRY_MIGRATION_HELLO_H_

#include <string>

#include "absl/status/statusor.h"
#include "ferry/v1/migration.pb.h"
#include "migration/fetch/wire.h"
#include "migration/options.h"
#include "vmm/vm.h"

namespace ferry::migration {

// What the source says about itself and the migration in Hello.
struct HelloParams {
  std::string migration_id;
  std::string auth_token;
  MigrationMode mode = MigrationMode::kHybrid;
  vmm::FaultMode fault_mode = vmm::FaultMode::kExit;
  std::string fetch_address;  // the source's page server, HOST:PORT
  std::string source_agent;   // its Control address (may be empty)
  std::string vm_name;
  int streams = 1;  // all streams, the main one included
  bool fetch_encrypted = false;
  int64_t recovery_timeout_ms = 0;
};

// The Hello for `vm` (its layout as it is now) with `params` and `secret`.
ferry::v1::Hello MakeHello(const vmm::Vm& vm, const HelloParams& params,
                           const fetch::Secret& secret);

// A Hello's fields, checked and converted. Version and token are the
// receiver's to judge (they depend on its configuration) and are not
// looked at here.
struct ValidHello {
  MigrationMode mode = MigrationMode::kHybrid;
  vmm::FaultMode fault_mode = vmm::FaultMode::kExit;
  vmm::VmConfig config;
  std::string name;  // vm_name, else the migration id
  fetch::Secret secret{};
};

// InvalidArgument naming the first field out of bounds or malformed: the
// migration id (1 to 64 bytes), data streams, the fetch secret's size, the
// fetch and source-agent addresses, mode, fault mode, layout, recovery
// timeout.
absl::StatusOr<ValidHello> ValidateHello(const ferry::v1::Hello& hello);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_HELLO_H_
