// Preflight checks through the real binaries: `ferry migrate ... --check`
// runs every check that can fail before a page moves, prints each with its
// result, exits 0 only when all pass, and leaves no record anywhere: no
// migration on either agent, no VM or reservation at the destination (a
// real migration of the same VM goes ahead afterwards).
//
// Each failure case is caught by name: an unreachable destination, a wrong
// token, the name taken at the destination, its limits, a fetch channel the
// destination cannot reach, a VM that is not there. (TLS:
// trust_e2e_test.cc; protocol version, a bad fetch secret, a bad layout:
// destination_session_test.cc.)
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The line of check `name` in `ferry migrate --check` output, "" if none.
std::string CheckLine(const std::string& out, const std::string& name) {
  size_t pos = 0;
  while ((pos = out.find('\n', pos)) != std::string::npos) {
    ++pos;
    const size_t end = out.find('\n', pos);
    const std::string line = out.substr(pos, end == std::string::npos ? end : end - pos);
    if (line.size() > 8 && line.substr(8, name.size()) == name) return line;
  }
  return "";
}

bool Passed(const std::string& out, const std::string& name) {
  return CheckLine(out, name).rfind("  ok", 0) == 0;
}
bool Failed(const std::string& out, const std::string& name) {
  return CheckLine(out, name).rfind("  FAIL", 0) == 0;
}

// No migration listed on the agent at `address`, in either direction.
void ExpectNoMigrations(const std::string& address) {
  auto stub = Stub(address);
  grpc::ClientContext ctx;
  ferry::v1::ListMigrationsResponse out;
  ASSERT_TRUE(stub->ListMigrations(&ctx, ferry::v1::ListMigrationsRequest(), &out).ok());
  EXPECT_EQ(out.migrations_size(), 0) << "a check left a migration record at " << address;
}

class CheckTest : public ::testing::Test {
 protected:
  // Agents a (source) and b (destination), b with `b_args`.
  void StartAgents(std::vector<std::string> a_args, std::vector<std::string> b_args) {
    auto a = agent::AgentProcess::Start(Ferryd(), a_args, TempDir() + "/check-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), b_args, TempDir() + "/check-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }

  void CreateVm(const std::string& agent, const std::string& name, const std::string& memory) {
    CliResult c = RunCli(
        {"vm", "create", name, "--agent", agent, "--memory", memory, "--workload", "uniform"});
    ASSERT_EQ(c.exit_code, 0) << c.out;
  }

  CliResult Check(const std::string& name, const std::string& to,
                  const std::string& mode = "hybrid") {
    return RunCli(
        {"migrate", name, "--from", a_->address(), "--to", to, "--mode", mode, "--check"});
  }

  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(CheckTest, APassingCheckStartsNothingAndTheMigrationThenGoesAhead) {
  ASSERT_NO_FATAL_FAILURE(StartAgents({}, {}));
  ASSERT_NO_FATAL_FAILURE(CreateVm(a_->address(), "web", "64M"));
  CliResult r = Check("web", b_->address());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  for (const char* name :
       {"request", "source vm", "source limits", "destination agent", "protocol version", "token",
        "vm name", "destination limits", "free memory", "backend", "fault mode", "fetch channel"})
    EXPECT_TRUE(Passed(r.out, name)) << name << " in:\n" << r.out;
  EXPECT_THAT(r.out, HasSubstr(" 0 failed: nothing was started"));
  ExpectNoMigrations(a_->address());
  ExpectNoMigrations(b_->address());
  EXPECT_EQ(GetVmCode(*Stub(b_->address()), "web"), grpc::StatusCode::NOT_FOUND);

  // JSON: one object with every check.
  CliResult j = RunCli(
      {"migrate", "web", "--from", a_->address(), "--to", b_->address(), "--check", "--json"});
  EXPECT_EQ(j.exit_code, 0) << j.out;
  EXPECT_THAT(j.out, HasSubstr("\"ok\":true"));
  EXPECT_THAT(j.out, HasSubstr("\"name\":\"fetch channel\""));

  // The check reserved nothing: the migration itself goes ahead.
  CliResult m = RunCli(
      {"migrate", "web", "--from", a_->address(), "--to", b_->address(), "--mode", "postcopy"});
  EXPECT_EQ(m.exit_code, 0) << m.out;
  EXPECT_TRUE(VerifyVm(*Stub(b_->address()), "web"));
}

TEST_F(CheckTest, EachFailureIsCaughtByNameAndLeavesNoRecord) {
  const std::string dir = TempDir() + "/check-tokens";
  ASSERT_EQ(RunCommand({"mkdir", "-p", dir}).exit_code, 0);
  // b: another token than a's, room for one 64 MiB VM.
  ASSERT_NO_FATAL_FAILURE(StartAgents({"--migration-token", "pool-token"},
                                      {"--migration-token", "pool-token", "--max-memory", "96M"}));
  auto wrong = agent::AgentProcess::Start(Ferryd(), {"--migration-token", "another-token"},
                                          TempDir() + "/check-c.log");
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  ASSERT_NO_FATAL_FAILURE(CreateVm(a_->address(), "web", "64M"));
  ASSERT_NO_FATAL_FAILURE(CreateVm(a_->address(), "big", "128M"));
  ASSERT_NO_FATAL_FAILURE(CreateVm(b_->address(), "taken", "16M"));
  ASSERT_NO_FATAL_FAILURE(CreateVm(a_->address(), "taken", "16M"));

  struct Case {
    std::string what, vm, to, failed;
  };
  const std::vector<Case> cases = {
      {"unreachable destination", "web", absl::StrCat("127.0.0.1:", FreePort()),
       "destination agent"},
      {"wrong token", "web", wrong->address(), "token"},
      {"name taken at the destination", "taken", b_->address(), "vm name"},
      {"over the destination's memory limit", "big", b_->address(), "destination limits"},
      {"no such VM", "nothing", b_->address(), "source vm"},
  };
  for (const Case& c : cases) {
    CliResult r = Check(c.vm, c.to);
    EXPECT_EQ(r.exit_code, 1) << c.what << ":\n" << r.out;
    EXPECT_TRUE(Failed(r.out, c.failed)) << c.what << ": no FAIL line for " << c.failed << " in:\n"
                                         << r.out;
    EXPECT_THAT(r.out, HasSubstr("checks failed")) << c.what;
  }
  // A wrong token is refused before the destination says anything more.
  CliResult t = Check("web", wrong->address());
  EXPECT_EQ(CheckLine(t.out, "vm name"), "") << t.out;
  ExpectNoMigrations(a_->address());
  ExpectNoMigrations(b_->address());
  ExpectNoMigrations(wrong->address());
  // The source's VMs run on, the destination's are as they were.
  EXPECT_EQ(GetVmCode(*Stub(a_->address()), "web"), grpc::StatusCode::OK);
  EXPECT_EQ(GetVmCode(*Stub(b_->address()), "big"), grpc::StatusCode::NOT_FOUND);
}

// The destination dials the source's fetch channel at the address the
// source advertises: one nothing listens on fails the check for postcopy and
// hybrid, and is no concern of precopy.
TEST_F(CheckTest, AnUnreachableFetchChannelFailsAPostcopyCheck) {
  // 127.0.0.2 is loopback too, but the page server listens on 127.0.0.1.
  ASSERT_NO_FATAL_FAILURE(
      StartAgents({"--fetch-listen", "127.0.0.1:0", "--fetch-advertise", "127.0.0.2"}, {}));
  ASSERT_NO_FATAL_FAILURE(CreateVm(a_->address(), "web", "32M"));
  CliResult r = Check("web", b_->address(), "postcopy");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(Failed(r.out, "fetch channel")) << r.out;
  EXPECT_THAT(CheckLine(r.out, "fetch channel"), HasSubstr("127.0.0.2"));
  CliResult p = Check("web", b_->address(), "precopy");
  EXPECT_EQ(p.exit_code, 0) << p.out;
  EXPECT_TRUE(Passed(p.out, "fetch channel")) << p.out;
  ExpectNoMigrations(a_->address());
  ExpectNoMigrations(b_->address());
}

}  // namespace
}  // namespace ferry::e2e
