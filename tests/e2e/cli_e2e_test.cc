// The operator's view through the real binaries: help and versions, flags
// and names checked before anything runs, and exit codes with one meaning
// each (docs/cli.md), against real ferryd agents.
#include <chrono>
#include <thread>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Bench() { return Runfile("bench/ferry-bench"); }

TEST(CliHelp, EveryCommandHasItsOwnHelpWithAnExample) {
  const std::vector<std::vector<std::string>> commands = {
      {"vm", "create"}, {"vm", "list"},      {"vm", "get"},           {"vm", "stats"},
      {"vm", "verify"}, {"vm", "delete"},    {"migrate"},             {"migration", "list"},
      {"migration", "get"}, {"migration", "watch"}, {"migration", "cancel"}, {"demo"}};
  for (const auto& words : commands) {
    std::vector<std::string> help = {"help"};
    help.insert(help.end(), words.begin(), words.end());
    CliResult by_help = RunCli(help);
    EXPECT_EQ(by_help.exit_code, 0) << by_help.out;
    EXPECT_THAT(by_help.out, HasSubstr("usage: ferry " + words[0])) << by_help.out;
    EXPECT_THAT(by_help.out, HasSubstr("example: ferry")) << by_help.out;
    // The same text from --help and -h after the command.
    std::vector<std::string> flag = words;
    flag.push_back("--help");
    EXPECT_EQ(RunCli(flag).out, by_help.out);
    flag.back() = "-h";
    EXPECT_EQ(RunCli(flag).out, by_help.out);
  }
  // Help explains the workload kinds and the units.
  CliResult create = RunCli({"vm", "create", "--help"});
  for (const char* s : {"zipf", "dirty-rate", "Zipf(1)", "bytes per second", "fraction of pages"})
    EXPECT_THAT(create.out, HasSubstr(s));
  // A name after the command still gives the command's help.
  EXPECT_EQ(RunCli({"vm", "create", "web", "-h"}).out, create.out);
  // The overview.
  for (const std::vector<std::string>& argv :
       std::vector<std::vector<std::string>>{{"-h"}, {"--help"}, {"help"}}) {
    CliResult r = RunCli(argv);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_THAT(r.out, HasSubstr("exit codes"));
    EXPECT_THAT(r.out, HasSubstr("migration watch ID"));
  }
  CliResult none = RunCli({});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_THAT(none.out, HasSubstr("no command given"));
  CliResult unknown = RunCli({"help", "frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.out, HasSubstr("unknown command"));
}

TEST(CliHelp, EveryBinaryReportsItsVersion) {
  CliResult ferry = RunCli({"--version"});
  EXPECT_EQ(ferry.exit_code, 0);
  EXPECT_THAT(ferry.out, ::testing::MatchesRegex("ferry [0-9]+\\.[0-9]+\\.[0-9]+\n"));
  CliResult ferryd = RunCommand({Ferryd(), "--version"});
  EXPECT_EQ(ferryd.exit_code, 0);
  EXPECT_THAT(ferryd.out, ::testing::MatchesRegex(
                              "ferryd [0-9]+\\.[0-9]+\\.[0-9]+ \\(migration protocol [0-9]+\\)\n"));
  CliResult bench = RunCommand({Bench(), "--version"});
  EXPECT_EQ(bench.exit_code, 0);
  EXPECT_THAT(bench.out, ::testing::MatchesRegex("ferry-bench [0-9]+\\.[0-9]+\\.[0-9]+\n"));
  // One version for all three, from the build.
  const std::string version = ferry.out.substr(6, ferry.out.size() - 7);  // "0.5.0"
  EXPECT_EQ(ferryd.out.substr(7, version.size()), version);
  EXPECT_EQ(bench.out, "ferry-bench " + version + "\n");
  CliResult help = RunCommand({Ferryd(), "-h"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("example: ferryd"));
}

class CliAgentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/cli-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/cli-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }
  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(CliAgentsTest, BadArgumentsAreRefusedBeforeAnythingRuns) {
  const std::string a = a_->address();
  // -h is help, never a VM name.
  CliResult r = RunCli({"vm", "create", "-h", "--agent", a});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: ferry vm create"));
  // A flag spelled with one dash, names that break the rule, a flag with no
  // value, extra arguments, an unknown flag: exit 2, and nothing created.
  struct Case {
    std::vector<std::string> argv;
    const char* says;
  } cases[] = {
      {{"vm", "create", "web", "-x", "--agent", a}, "unknown flag '-x'"},
      {{"vm", "create", "..", "--agent", a}, "a name has 1 to 64 characters"},
      {{"vm", "create", "...", "--agent", a}, "the first a letter or a digit"},
      {{"vm", "create", "-", "--agent", a}, "the first a letter or a digit"},
      {{"vm", "create", "a/b", "--agent", a}, "letters, digits"},
      {{"vm", "create", std::string(65, 'x'), "--agent", a}, "a VM name of 65 characters"},
      {{"vm", "create", "web", "--memory", "--agent", a}, "--memory needs a value"},
      {{"vm", "create", "web", "--agent", a, "--memory"}, "--memory needs a value"},
      {{"vm", "create", "web", "extra", "--agent", a}, "unexpected argument 'extra'"},
      {{"vm", "list", "extra", "--agent", a}, "unexpected argument 'extra'"},
      {{"vm", "get", "web", "extra", "--agent", a}, "unexpected argument 'extra'"},
      {{"migration", "list", "x", "--agent", a}, "unexpected argument 'x'"},
      {{"migration", "get", "id", "x", "--agent", a}, "unexpected argument 'x'"},
      {{"migrate", "web", "x", "--from", a, "--to", b_->address()}, "unexpected argument 'x'"},
      {{"vm", "create", "web", "--agent", a, "--colour", "red"}, "unknown flag --colour"},
      {{"vm", "create", "web", "--agent", a, "--vcpus", "two"}, "not an integer"},
      {{"migrate", "web", "--from", a, "--to", a}, "the same agent"},
      {{"vm", "create"}, "needs a VM name"},
      {{"migration", "frob", "x"}, "unknown migration command"},
  };
  for (const Case& c : cases) {
    CliResult res = RunCli(c.argv);
    EXPECT_EQ(res.exit_code, 2) << c.says << ": " << res.out;
    EXPECT_THAT(res.out, HasSubstr(c.says));
  }
  r = RunCli({"vm", "list", "--agent", a, "--json"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, Not(HasSubstr("\"name\"")));  // nothing was created
  // The agent enforces the same rule for any client.
  CliResult ok = RunCli({"vm", "create", "web-1.a_b", "--agent", a, "--memory", "16M"});
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
}

TEST_F(CliAgentsTest, ExitCodesHaveOneMeaningEach) {
  const std::string a = a_->address(), b = b_->address();
  // 5: nothing listens there; refused at once, not after the timeout.
  const auto t0 = std::chrono::steady_clock::now();
  CliResult r = RunCli({"vm", "list", "--agent", "127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 5) << r.out;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // 1 for a migration that failed, and for watching it.
  ASSERT_EQ(RunCli({"vm", "create", "taken", "--agent", b, "--memory", "16M"}).exit_code, 0);
  ASSERT_EQ(RunCli({"vm", "create", "taken", "--agent", a, "--memory", "16M"}).exit_code, 0);
  r = RunCli({"migrate", "taken", "--from", a, "--to", b, "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  const size_t at = r.out.find("\"migration_id\":\"");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string id = r.out.substr(at + 16, r.out.find('"', at + 16) - at - 16);
  // 5 for a migration whose destination cannot be reached.
  r = RunCli({"migrate", "taken", "--from", a, "--to", "127.0.0.1:1"});
  EXPECT_EQ(r.exit_code, 5) << r.out;
  // Watching a failed migration: 1.
  r = RunCli({"migration", "watch", id, "--agent", a});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("failed"));
  // Watching a cancelled one: 1. A capped migration is slow enough to cancel.
  ASSERT_EQ(RunCli({"vm", "create", "slow", "--agent", a, "--memory", "256M",
                    "--workload", "uniform"}).exit_code, 0);
  std::thread cancel([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    CliResult list = RunCli({"migration", "list", "--agent", a, "--json"});
    const size_t slow = list.out.rfind("\"vm_name\":\"slow\"");
    const size_t idat = list.out.rfind("\"id\":\"", slow);
    if (slow == std::string::npos || idat == std::string::npos) return;
    const std::string sid = list.out.substr(idat + 6, list.out.find('"', idat + 6) - idat - 6);
    RunCli({"migration", "cancel", sid, "--agent", a});
  });
  r = RunCli({"migrate", "slow", "--from", a, "--to", b, "--mode", "precopy",
              "--max-bandwidth", "16M"});
  cancel.join();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("cancelled"));
  // 4: no such VM or migration.
  EXPECT_EQ(RunCli({"migration", "get", "mig-nope", "--agent", a}).exit_code, 4);
  // 6: already exists.
  EXPECT_EQ(RunCli({"vm", "create", "slow", "--agent", a, "--memory", "16M"}).exit_code, 6);
  // 1, not 5, for a verify that times out (the agent answered).
  ASSERT_EQ(RunCli({"vm", "create", "long", "--agent", a, "--memory", "16M", "--workload",
                    "dirty-rate", "--dirty-rate", "4K", "--ops", "1000000"}).exit_code, 0);
  r = RunCli({"vm", "verify", "long", "--agent", a, "--timeout-ms", "100"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
}

}  // namespace
}  // namespace ferry::e2e
