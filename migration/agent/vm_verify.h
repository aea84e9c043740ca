// VerifyGuestMemory: checks a VM's memory against a replay of what its
// guest did (`ferry vm verify`): the digest of its memory now against the
// reference digest of a fresh VM of the same config that ran the same ops.
//
// The replay applies the VM's memory map transactions (Vm::MemoryHistory)
// where the guest met them, so a VM whose map changed verifies too.
//
// A finite guest is waited for until it halts; an endless one is paused
// for the digest and resumed after; a paused one is checked as it is. The
// whole check, replay included, runs within `timeout_ms` (0: a minute);
// past it, DeadlineExceeded says how to do better.
//
// Threads: blocks the caller; the caller keeps `vm` alive and keeps others
// from pausing, migrating or changing its memory meanwhile (Agent checks
// it is not migrating and marks it verifying).
#ifndef FERRY_MIGRATION_AGENT_VM_VERIFY_H_
#define FERRY_MIGRATION_AGENT_VM_VERIFY_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ferry/v1/control.pb.h"
#include "vmm/vm.h"

namespace ferry::agent {

// `name` is the VM's, for messages.
absl::StatusOr<ferry::v1::VerifyVmResponse> VerifyGuestMemory(vmm::Vm& vm, const std::string& name,
                                                              int64_t timeout_ms);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_VM_VERIFY_H_
