#include "migration/hello.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "base/net.h"
#include "base/status_macros.h"
#include "migration/api/defaults.h"
#include "migration/convert.h"
#include "migration/protocol.h"

namespace ferry::migration {

ferry::v1::Hello MakeHello(const vmm::Vm& vm, const HelloParams& params,
                           const fetch::Secret& secret) {
  ferry::v1::Hello hello;
  hello.set_protocol_version(kProtocolVersion);
  hello.set_migration_id(params.migration_id);
  hello.set_auth_token(params.auth_token);
  *hello.mutable_layout() = ToLayout(vm.config(), vm.memory().map(), vm.MemoryHistory());
  hello.set_mode(ToProto(params.mode));
  hello.set_fault_mode(ToProto(params.fault_mode));
  hello.set_fetch_address(params.fetch_address);
  hello.set_source_agent(params.source_agent);
  hello.set_fetch_secret(std::string(secret.begin(), secret.end()));
  hello.set_vm_name(params.vm_name);
  hello.set_data_streams(static_cast<uint32_t>(std::max(params.streams, 1) - 1));
  hello.set_fetch_encrypted(params.fetch_encrypted);
  hello.set_recovery_timeout_ms(static_cast<uint64_t>(params.recovery_timeout_ms));
  return hello;
}

absl::StatusOr<ValidHello> ValidateHello(const ferry::v1::Hello& hello) {
  if (hello.migration_id().empty() || hello.migration_id().size() > kMaxMigrationIdBytes)
    return absl::InvalidArgumentError(
        absl::StrFormat("hello: the migration id must be 1 to %d bytes", kMaxMigrationIdBytes));
  if (hello.data_streams() > kMaxDataStreams)
    return absl::InvalidArgumentError(absl::StrFormat("hello: %d data streams, at most %d",
                                                      hello.data_streams(), kMaxDataStreams));
  if (hello.fetch_secret().size() != fetch::kSecretSize)
    return absl::InvalidArgumentError(
        absl::StrFormat("hello: the fetch secret is %d bytes, it must be %d",
                        hello.fetch_secret().size(), fetch::kSecretSize));
  ValidHello v;
  std::copy(hello.fetch_secret().begin(), hello.fetch_secret().end(), v.secret.begin());
  RETURN_IF_ERROR(SplitHostPort(hello.fetch_address()).status());
  // Shown to operators, not dialled: bounded and well formed, or refused.
  if (!hello.source_agent().empty()) {
    if (hello.source_agent().size() > kMaxAddressBytes)
      return absl::InvalidArgumentError(
          absl::StrFormat("hello: the source agent's address is %d bytes, at most %d",
                          hello.source_agent().size(), kMaxAddressBytes));
    RETURN_IF_ERROR(SplitHostPort(hello.source_agent()).status());
  }
  ASSIGN_OR_RETURN(v.mode, FromProto(hello.mode()));
  ASSIGN_OR_RETURN(v.fault_mode, FromProto(hello.fault_mode()));
  ASSIGN_OR_RETURN(v.config, FromLayout(hello.layout()));
  if (hello.recovery_timeout_ms() > static_cast<uint64_t>(api::kMaxRecoveryTimeoutMs))
    return absl::InvalidArgumentError(
        absl::StrFormat("hello: a recovery timeout of %d ms, at most %d",
                        hello.recovery_timeout_ms(), api::kMaxRecoveryTimeoutMs));
  if (hello.vm_name().size() > kMaxVmNameBytes)
    return absl::InvalidArgumentError(absl::StrFormat(
        "hello: the VM name is %d bytes, at most %d", hello.vm_name().size(), kMaxVmNameBytes));
  v.name = hello.vm_name().empty() ? hello.migration_id() : hello.vm_name();
  return v;
}

}  // namespace ferry::migration
