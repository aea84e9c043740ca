// Two ferryd agents move a KVM VM in each mode, and the destination's
// memory digest matches a replay of the guest (docs/kvm.md). Needs
// /dev/kvm: skips with the reason elsewhere; ./dev test-kvm runs it inside
// a nested KVM guest.
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sys/kvm.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;

class KvmAgentsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    absl::StatusOr<sys::Kvm> kvm = sys::Kvm::Open();
    if (!kvm.ok())
      GTEST_SKIP() << "needs /dev/kvm (" << kvm.status().message()
                   << "); ./dev test-kvm runs this inside a nested KVM guest";
    auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/kvm-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/kvm-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }

  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_P(KvmAgentsTest, MovesAKvmVmAndTheDigestMatches) {
  const std::string mode = GetParam();
  const std::string vm = "kvm-" + mode;
  // Precopy must converge, also at the few MB/s of nested KVM under TCG:
  // a paced writer there; a free-running one in the modes that go postcopy.
  const bool precopy = mode == "precopy";
  CliResult create = RunCli({"vm", "create", vm, "--agent", a_->address(), "--backend", "kvm",
                             "--memory", "16M", "--vcpus", "2", "--workload",
                             precopy ? "dirty-rate" : "uniform", "--dirty-rate", "256K",
                             "--zero-fraction", "0.25"});
  ASSERT_EQ(create.exit_code, 0) << create.out;
  EXPECT_THAT(create.out, HasSubstr(" kvm "));
  CliResult get = RunCli({"vm", "get", vm, "--agent", a_->address()});
  EXPECT_THAT(get.out, HasSubstr("backend kvm (as asked): api 12"));
  CliResult migrate = RunCli({"migrate", vm, "--from", a_->address(), "--to", b_->address(),
                              "--mode", mode, "--fault-mode", "exit", "--json"});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.out;
  EXPECT_THAT(migrate.out, HasSubstr("\"outcome\":\"completed\""));
  EXPECT_THAT(migrate.out, HasSubstr("\"backend\":\"kvm\""));
  EXPECT_THAT(migrate.out, HasSubstr("\"destination_paths\":\"kvm vCPUs, blocking faults"));
  if (mode != "postcopy")
    EXPECT_THAT(migrate.out, HasSubstr("\"dirty_log\":\"KVM dirty bitmap"));
  if (!precopy) {
    // Exit mode was asked; KVM vCPUs ran blocking, and the report says why.
    EXPECT_THAT(migrate.out, HasSubstr("\"fault_mode\":\"blocking\""));
    EXPECT_THAT(migrate.out, HasSubstr("exit mode unavailable on this kernel"));
  }
  CliResult verify = RunCli({"vm", "verify", vm, "--agent", b_->address()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_THAT(verify.out, HasSubstr("MATCH"));
  CliResult gone = RunCli({"vm", "get", vm, "--agent", a_->address()});
  EXPECT_NE(gone.exit_code, 0) << "the source released the VM";
}

INSTANTIATE_TEST_SUITE_P(Modes, KvmAgentsTest,
                         ::testing::Values("precopy", "postcopy", "hybrid"));

}  // namespace
}  // namespace ferry::e2e
