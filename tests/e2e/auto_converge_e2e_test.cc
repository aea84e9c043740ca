// Auto-converge through the real binaries: a guest that writes memory four
// times faster than the link may carry cannot converge in precopy; without
// --auto-converge the migration fails, naming auto-converge among the
// remedies, and the VM runs on at the source; with it the guest is
// throttled step by step until precopy converges, the migration completes
// with a matching digest, and the report shows the throttle.
//
// Why this holds at any machine speed: the guest is paced (32 MB/s of
// page writes) and the link capped (8 MiB/s), so the guest outruns the
// link by the same factor on a fast or a loaded machine; a throttle's
// sleeps are sleeps, so the throttled guest writes slower by the same
// factor everywhere. Nothing is compared with a wall-clock figure; the
// timeouts only bound a hang.
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;

class AutoConvergeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/ac-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/ac-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }

  // Creates VM `name` (16 MiB, one vCPU writing 32 MB/s) and starts its
  // precopy migration on an 8 MiB/s link with `extra` flags; returns the id.
  std::string Start(const std::string& name, const std::vector<std::string>& extra) {
    const std::string a = a_->address(), b = b_->address();
    CliResult c = RunCli({"vm", "create", name, "--agent", a, "--memory", "16M", "--vcpus", "1",
                          "--workload", "dirty-rate", "--dirty-rate", "32M"});
    EXPECT_EQ(c.exit_code, 0) << c.out;
    // The guest's baseline speed for the guest-impact figures needs 350 ms
    // of it running before the migration (without, they are not measured
    // and the test asserts nothing on them).
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    std::vector<std::string> args = {"migrate", name,      "--from",          a,    "--to",    b,
                                     "--mode",  "precopy", "--max-bandwidth", "8M", "--detach"};
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult d = RunCli(args);
    EXPECT_EQ(d.exit_code, 0) << d.out;
    return d.out.empty() || d.exit_code != 0 ? "" : d.out.substr(0, d.out.size() - 1);
  }

  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(AutoConvergeTest, WithoutItPrecopyFailsAndNamesItAsARemedy) {
  const std::string id = Start("noac", {});
  ASSERT_FALSE(id.empty());
  auto stub_a = Stub(a_->address());
  ferry::v1::MigrationResource m =
      AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 110000);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_FAILED) << m.error();
  EXPECT_THAT(m.error(), HasSubstr("remedies"));
  EXPECT_THAT(m.error(), HasSubstr("--auto-converge"));
  EXPECT_FALSE(m.report().auto_converge());
  EXPECT_EQ(m.report().max_throttle_percent(), 0u);
  EXPECT_EQ(m.report().throttle_changes_size(), 0);
  // The VM runs on at the source.
  ferry::v1::Vm vm;
  ASSERT_EQ(GetVmCode(*stub_a, "noac", &vm), grpc::StatusCode::OK);
  EXPECT_EQ(vm.state(), ferry::v1::VM_STATE_RUNNING);
}

TEST_F(AutoConvergeTest, WithItTheThrottledGuestConvergesAndTheReportShowsTheThrottle) {
  // 50%, then 75%, then 99%: at 75% the guest still writes about as fast as
  // the link carries.
  const std::string id = Start("ac", {"--auto-converge", "--throttle-initial", "50",
                                      "--throttle-step", "25", "--throttle-max", "99"});
  ASSERT_FALSE(id.empty());
  auto stub_a = Stub(a_->address()), stub_b = Stub(b_->address());
  ferry::v1::MigrationResource m =
      AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 110000);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << m.error();
  EXPECT_TRUE(VerifyVm(*stub_b, "ac"));

  const ferry::v1::MigrationReport& r = m.report();
  EXPECT_TRUE(r.auto_converge());
  EXPECT_GE(r.max_throttle_percent(), 50u);
  // Raised from 0 one step at a time, then released at the switchover.
  ASSERT_GE(r.throttle_changes_size(), 2) << r.DebugString();
  EXPECT_EQ(r.throttle_changes(0).old_percent(), 0u);
  EXPECT_EQ(r.throttle_changes(0).new_percent(), 50u);
  EXPECT_THAT(r.throttle_changes(0).reason(), HasSubstr("auto-converge"));
  uint32_t highest = 0;
  for (int i = 0; i + 1 < r.throttle_changes_size(); ++i) {
    const ferry::v1::ThrottleChange& c = r.throttle_changes(i);
    EXPECT_GT(c.new_percent(), c.old_percent()) << r.DebugString();
    EXPECT_EQ(c.new_percent(), std::min(99u, c.old_percent() == 0 ? 50u : c.old_percent() + 25));
    highest = c.new_percent();
    if (i > 0) {
      EXPECT_GE(c.time_ms(), r.throttle_changes(i - 1).time_ms());
    }
  }
  EXPECT_EQ(highest, r.max_throttle_percent());
  const ferry::v1::ThrottleChange& last = r.throttle_changes(r.throttle_changes_size() - 1);
  EXPECT_EQ(last.new_percent(), 0u);
  EXPECT_EQ(last.reason(), "switchover");
  // The throttle is what the guest-impact figures measure: a guest that
  // slept half of its time and more ran below its baseline (the 75% step
  // lasts a whole round, far longer than 100 ms).
  if (r.impact_measured()) {
    EXPECT_LT(r.precopy_mgu_100ms(), 0.6) << r.DebugString();
    EXPECT_GT(r.precopy_below_half_ms(), 0) << r.DebugString();
  }

  // The CLI shows it (text and JSON).
  const std::string a = a_->address();
  CliResult get = RunCli({"migration", "get", id, "--agent", a});
  std::printf("%s", get.out.c_str());  // the report, in the test's log
  EXPECT_THAT(get.out, HasSubstr(absl::StrCat("auto-converge: the guest was throttled up to ",
                                              r.max_throttle_percent(), "%")))
      << get.out;
  CliResult json = RunCli({"migration", "get", id, "--agent", a, "--json"});
  EXPECT_THAT(json.out, HasSubstr("\"throttle_changes\"")) << json.out;
  EXPECT_THAT(json.out,
              HasSubstr(absl::StrCat("\"max_throttle_percent\":", r.max_throttle_percent())))
      << json.out;
}

TEST_F(AutoConvergeTest, BadThrottleFlagsAreRefusedWithTheReason) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "flags", "--agent", a, "--memory", "16M", "--workload", "idle"})
                .exit_code,
            0);
  struct Case {
    std::vector<std::string> flags;
    const char* says;
  } cases[] = {
      {{"--auto-converge", "--throttle-max", "100"}, "--throttle-max 100: a throttle is 1 to 99"},
      {{"--auto-converge", "--throttle-initial", "0"}, "--throttle-initial 0"},
      {{"--auto-converge", "--throttle-initial", "60", "--throttle-max", "40"},
       "--throttle-initial 60 is above --throttle-max 40"},
      {{"--throttle-step", "5"}, "give --auto-converge too"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"migrate", "flags", "--from", a, "--to", b, "--detach"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_THAT(r.out, HasSubstr(c.says));
  }
  // The API checks the same (a client other than this CLI).
  grpc::ClientContext ctx;
  ferry::v1::StartMigrationRequest req;
  req.set_vm_name("flags");
  req.set_destination(b);
  req.set_auto_converge(true);
  req.set_throttle_initial(80);
  req.set_throttle_max(30);
  ferry::v1::MigrationResource out;
  grpc::Status s = Stub(a)->StartMigration(&ctx, req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("above the throttle max"));
}

}  // namespace
}  // namespace ferry::e2e
