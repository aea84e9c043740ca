// Shared by the end-to-end tests: the built binaries (from the test's
// runfiles), two agents, gRPC stubs, and running the ferry CLI as a process.
#ifndef FERRY_TESTS_E2E_AGENT_HARNESS_H_
#define FERRY_TESTS_E2E_AGENT_HARNESS_H_

#include <memory>
#include <string>
#include <vector>

#include "ferry/v1/control.grpc.pb.h"
#include "migration/agent/agent_process.h"

namespace ferry::e2e {

std::string Runfile(const std::string& path);  // e.g. "migration/agent/ferryd"
std::string Ferryd();  // $FERRYD, else the runfile
std::string Ferry();   // $FERRY, else the runfile
std::string TempDir();

std::unique_ptr<ferry::v1::Control::Stub> Stub(const std::string& address);
// A loopback port nothing listens on now (bound and released).
int FreePort();

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};
CliResult RunCli(const std::vector<std::string>& args);
// Any command (argv), stdout and stderr together.
CliResult RunCommand(const std::vector<std::string>& argv);

// Control API calls the tests share. CreateVm and VerifyVm record a test
// failure when the call fails; VerifyVm is true on a digest match.
void CreateVm(ferry::v1::Control::Stub& stub, const ferry::v1::CreateVmRequest& request);
bool VerifyVm(ferry::v1::Control::Stub& stub, const std::string& name);
// GetVm's status code, and the VM into *out when given.
grpc::StatusCode GetVmCode(ferry::v1::Control::Stub& stub, const std::string& name,
                           ferry::v1::Vm* out = nullptr);

// GetMigration (a test failure when the call fails).
ferry::v1::MigrationResource GetMigration(ferry::v1::Control::Stub& stub, const std::string& id);
// Polls until the migration reaches `phase`, or has ended with its report
// (UNSPECIFIED: until it ends); returns the last state seen. The timeout
// bounds a hang, it is no performance expectation.
ferry::v1::MigrationResource AwaitPhase(ferry::v1::Control::Stub& stub, const std::string& id,
                                        ferry::v1::MigrationPhase phase,
                                        int timeout_ms = 60000);

ferry::v1::CreateVmRequest VmRequest(const std::string& name, const std::string& workload,
                                     uint64_t memory = 64ull << 20, uint64_t ops = 0);

}  // namespace ferry::e2e

#endif  // FERRY_TESTS_E2E_AGENT_HARNESS_H_
