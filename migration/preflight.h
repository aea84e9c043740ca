// Preflight checks (`ferry migrate --check`, Control.CheckMigration): run
// everything that can fail before a migration moves a page, and start
// nothing.
//
// The source agent checks its own side (the request, the VM, its limits),
// then sends the destination the Hello the migration would send, as
// SourceMessage.check on a stream of its own: reaching the destination
// tests the address, TLS (the peer's certificate as a migration would
// verify it) and the token. The destination judges that Hello as it would a
// real one (CheckIncoming) and, for a migration that will demand-page,
// performs the fetch channel's handshake back to the source's page server
// under a throwaway id and secret the source registered for the check. It
// answers CheckResult and creates nothing.
//
// A failed check is a result, not an error. Every item says what was found
// and, for a failure, why.
#ifndef FERRY_MIGRATION_PREFLIGHT_H_
#define FERRY_MIGRATION_PREFLIGHT_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "ferry/v1/migration.pb.h"
#include "vmm/vm.h"

namespace ferry::migration {

struct SourceConfig;

struct CheckItem {
  std::string name;
  bool ok = false;
  std::string detail;
};

// At most this many items in a CheckResult, each string at most
// kMaxCheckTextBytes: what a source accepts from a destination.
inline constexpr int kMaxCheckItems = 32;
inline constexpr size_t kMaxCheckTextBytes = 1024;

bool AllPassed(const std::vector<CheckItem>& items);
ferry::v1::CheckItem ToProto(const CheckItem& item);
// A peer's answer, bounded (items past kMaxCheckItems dropped with an item
// saying so, strings cut to kMaxCheckTextBytes).
std::vector<CheckItem> FromProto(const ferry::v1::CheckResult& result);

// The destination agent's judgement of whether it would admit a VM `name`
// of `config` now (the name free, its limits), as items; nothing reserved.
using AdmitCheckFn =
    std::function<std::vector<CheckItem>(const std::string& name, const vmm::VmConfig& config)>;

// The destination's checks of a check Hello, in order: protocol version;
// token (a wrong one ends the list, so a stranger learns nothing more);
// the Hello's fields; `admit_check` (if set); free memory; backend; fault
// mode; the fetch channel (its handshake, for a mode that demand-pages).
std::vector<CheckItem> CheckIncoming(const ferry::v1::Hello& hello,
                                     const std::string& expected_token,
                                     const AdmitCheckFn& admit_check);

// The host's part: MemAvailable against the VM's memory, the backend
// (KVM: /dev/kvm opens), and which fault mode `requested` would get.
std::vector<CheckItem> CheckHost(const vmm::VmConfig& config, vmm::FaultMode requested);

// The source's part after its own checks: reaches the destination with the
// Hello a migration of `vm` with `config` would send, and returns
// "destination agent" followed by the destination's items. Bounded by
// `timeout` (the destination's fetch handshake included).
std::vector<CheckItem> CheckDestination(const vmm::Vm& vm, const SourceConfig& config,
                                        absl::Duration timeout = absl::Seconds(20));

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_PREFLIGHT_H_
