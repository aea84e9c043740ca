// The one place each default of the operator-facing API is written: the
// CLI's flags, the agent (for a request field left at 0 or UNSPECIFIED),
// the engine's MigrationOptions, the demo and ferry-bench all read them
// here. Dependency-free, so every layer may include it.
#ifndef FERRY_MIGRATION_API_DEFAULTS_H_
#define FERRY_MIGRATION_API_DEFAULTS_H_

#include <cstdint>

namespace ferry::api {

// Migrations.
inline constexpr const char* kDefaultMode = "hybrid";
inline constexpr const char* kDefaultFaultMode = "exit";
inline constexpr int64_t kDefaultDowntimeTargetMs = 50;
inline constexpr int kDefaultMaxRounds = 30;
// Auto-converge (off unless asked): the guest's throttle, in percent of
// each vCPU's time, when precopy first cannot converge; what each further
// round that cannot converge adds; the ceiling (QEMU's cpu-throttle-initial,
// -increment and -max). Each is 1 to 99.
inline constexpr int kDefaultThrottleInitial = 20;
inline constexpr int kDefaultThrottleStep = 10;
inline constexpr int kDefaultThrottleMax = 99;
// After switchover, how long a broken migration tries to reconnect (the
// source) or waits for it (the destination) before it fails.
inline constexpr int64_t kDefaultRecoveryTimeoutMs = 10 * 60 * 1000;
inline constexpr int64_t kMaxRecoveryTimeoutMs = 24 * 60 * 60 * 1000;

// VMs (`ferry vm create`, the demo, ferry-bench).
inline constexpr uint64_t kDefaultMemoryBytes = 1ull << 30;
inline constexpr int kDefaultVcpus = 2;
inline constexpr const char* kDefaultWorkload = "zipf";
inline constexpr uint64_t kDefaultDirtyBytesPerSec = 16ull << 20;
inline constexpr double kDefaultWriteFraction = 0.5;
inline constexpr double kDefaultHotFraction = 0.1;        // hotset: of the pages
inline constexpr double kDefaultHotAccessFraction = 0.9;  // hotset: of the ops
// Software vCPUs unless asked: the same VM on every host ("auto" picks KVM
// where /dev/kvm opens).
inline constexpr const char* kDefaultBackend = "soft";
// The demo's VM: half of its pages start as zero pages.
inline constexpr double kDemoZeroFraction = 0.5;

// Agents.
inline constexpr const char* kDefaultAgentAddress = "127.0.0.1:7070";

}  // namespace ferry::api

#endif  // FERRY_MIGRATION_API_DEFAULTS_H_
