#include "tests/e2e/agent_harness.h"

#include "base/net.h"

#include <chrono>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migration/convert.h"
#include "vmm/workload.h"

namespace ferry::e2e {

std::string Runfile(const std::string& path) {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* ws = getenv("TEST_WORKSPACE");
  if (srcdir && ws) return std::string(srcdir) + "/" + ws + "/" + path;
  return path;  // run by hand from the workspace's bazel-bin
}

// $FERRYD and $FERRY override the runfiles (the nested KVM suite copies the
// test binaries and the agents into its guest).
std::string Ferryd() {
  const char* env = getenv("FERRYD");
  return env ? env : Runfile("migration/agent/ferryd");
}
std::string Ferry() {
  const char* env = getenv("FERRY");
  return env ? env : Runfile("migration/cli/ferry");
}

std::string TempDir() {
  const char* t = getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

std::unique_ptr<ferry::v1::Control::Stub> Stub(const std::string& address) {
  return ferry::v1::Control::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

CliResult RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {Ferry()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

CliResult RunCommand(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd += " '" + a + "'";
  cmd += " 2>&1";
  CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

void CreateVm(ferry::v1::Control::Stub& stub, const ferry::v1::CreateVmRequest& request) {
  grpc::ClientContext ctx;
  ferry::v1::Vm vm;
  grpc::Status s = stub.CreateVm(&ctx, request, &vm);
  EXPECT_TRUE(s.ok()) << "create VM " << request.name() << ": " << s.error_message();
}

bool VerifyVm(ferry::v1::Control::Stub& stub, const std::string& name) {
  grpc::ClientContext ctx;
  ferry::v1::VerifyVmRequest r;
  r.set_name(name);
  // A hang guard, not a speed check: an endless guest is verified by
  // replaying everything it ran, which on a loaded machine can take minutes.
  r.set_timeout_ms(600'000);
  ferry::v1::VerifyVmResponse out;
  grpc::Status s = stub.VerifyVm(&ctx, r, &out);
  EXPECT_TRUE(s.ok()) << "verify VM " << name << ": " << s.error_message();
  return s.ok() && out.match();
}

int FreePort() {
  auto l = ListenTcp("127.0.0.1:0");
  return l.ok() ? l->port : 0;
}

ferry::v1::MigrationResource GetMigration(ferry::v1::Control::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  ferry::v1::GetMigrationRequest r;
  r.set_id(id);
  ferry::v1::MigrationResource out;
  grpc::Status s = stub.GetMigration(&ctx, r, &out);
  EXPECT_TRUE(s.ok()) << "get migration " << id << ": " << s.error_message();
  return out;
}

ferry::v1::MigrationResource AwaitPhase(ferry::v1::Control::Stub& stub, const std::string& id,
                                        ferry::v1::MigrationPhase phase, int timeout_ms) {
  ferry::v1::MigrationResource m;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    m = GetMigration(stub, id);
    if (m.phase() == phase) return m;
    const bool ended = m.phase() == ferry::v1::MIGRATION_PHASE_COMPLETED ||
                       m.phase() == ferry::v1::MIGRATION_PHASE_FAILED ||
                       m.phase() == ferry::v1::MIGRATION_PHASE_CANCELLED;
    if (ended && !m.report().outcome().empty()) return m;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return m;
}

grpc::StatusCode GetVmCode(ferry::v1::Control::Stub& stub, const std::string& name,
                           ferry::v1::Vm* out) {
  grpc::ClientContext ctx;
  ferry::v1::GetVmRequest r;
  r.set_name(name);
  ferry::v1::Vm vm;
  grpc::StatusCode code = stub.GetVm(&ctx, r, &vm).error_code();
  if (out) *out = vm;
  return code;
}

ferry::v1::CreateVmRequest VmRequest(const std::string& name, const std::string& workload,
                                     uint64_t memory, uint64_t ops) {
  ferry::v1::CreateVmRequest r;
  r.set_name(name);
  r.set_memory_bytes(memory);
  r.set_vcpus(2);
  vmm::WorkloadSpec w;
  w.kind = *vmm::ParseWorkloadKind(workload);
  w.ops_per_vcpu = ops;
  w.zero_fraction = 0.25;
  w.dirty_bytes_per_sec = 8ull << 20;
  *r.mutable_workload() = migration::ToWorkload(w);
  return r;
}

}  // namespace ferry::e2e
