// The operator's view through the real binaries: help and versions, flags
// and names checked before anything runs, and exit codes with one meaning
// each (docs/cli.md), against real ferryd agents.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/net.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "base/eventually.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Bench() { return Runfile("bench/ferry-bench"); }

TEST(CliHelp, EveryCommandHasItsOwnHelpWithAnExample) {
  const std::vector<std::vector<std::string>> commands = {{"vm", "create"},
                                                          {"vm", "list"},
                                                          {"vm", "get"},
                                                          {"vm", "stats"},
                                                          {"vm", "verify"},
                                                          {"vm", "resume"},
                                                          {"vm", "snapshot"},
                                                          {"vm", "restore"},
                                                          {"vm", "resize"},
                                                          {"vm", "memory"},
                                                          {"vm", "delete"},
                                                          {"migrate"},
                                                          {"migration", "list"},
                                                          {"migration", "get"},
                                                          {"migration", "watch"},
                                                          {"migration", "cancel"},
                                                          {"migration", "recover"},
                                                          {"migration", "set"},
                                                          {"migration", "postcopy"},
                                                          {"demo"},
                                                          {"completion"}};
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
      {{"vm", "create", "web", "--agent", a, "--workload", "hotset", "--hot-fraction", "0"},
       "--hot-fraction must be above 0 and at most 1"},
      {{"vm", "create", "web", "--agent", a, "--hot-access", "1.5"},
       "--hot-access must be above 0 and at most 1"},
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
    // Once the migration is listed (a loaded machine may start it late).
    std::string sid;
    EXPECT_TRUE(Eventually([&] {
      CliResult list = RunCli({"migration", "list", "--agent", a, "--json"});
      const size_t slow = list.out.rfind("\"vm_name\":\"slow\"");
      const size_t idat = slow == std::string::npos ? slow : list.out.rfind("\"id\":\"", slow);
      if (idat == std::string::npos) return false;
      sid = list.out.substr(idat + 6, list.out.find('"', idat + 6) - idat - 6);
      return true;
    }));
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
  // An endless guest is verified by replaying what it did: bounded by the
  // timeout, refused with the reason once the replay would take longer.
  ASSERT_EQ(RunCli({"vm", "create", "busy", "--agent", a, "--memory", "16M", "--workload",
                    "uniform"}).exit_code, 0);
  EXPECT_TRUE(Eventually([&] {  // once it has run ops that take a while to replay
    const std::string vm = RunCli({"vm", "get", "busy", "--agent", a, "--json"}).out;
    const size_t at = vm.find("\"guest_ops\":");
    return at != std::string::npos && std::stoull(vm.substr(at + 12)) >= 1'000'000;
  }));
  const auto t1 = std::chrono::steady_clock::now();
  r = RunCli({"vm", "verify", "busy", "--agent", a, "--timeout-ms", "20"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("cannot verify VM 'busy' within 20 ms"));
  // At once: not after the 20 ms nor the replay's time, only the CLI's own
  // start and one call (a loaded machine was seen to take 3.1 s for that, so
  // the bound is a hang's, far below the replay's estimate in the message).
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(30));
  r = RunCli({"vm", "verify", "busy", "--agent", a});  // the default 60 s is enough
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("MATCH"));
}

// In a forked child: becomes `ferry args...`.
[[noreturn]] void ExecFerry(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {Ferry()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> c;
  for (auto& a : argv) c.push_back(a.data());
  c.push_back(nullptr);
  execv(c[0], c.data());
  _exit(127);
}

// The ferry CLI as a child whose stdout and stderr go into a pipe, read as
// they come.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      dup2(fds[1], 2);
      close(fds[0]);
      ExecFerry(args);
    }
    close(fds[1]);
    fd_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
    if (fd_ >= 0) close(fd_);
  }
  // Reads until `text` appeared or the timeout; true if it did.
  bool ReadUntil(const std::string& text, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out_.find(text) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) return out_.find(text) != std::string::npos;
      out_.append(buf, n);
    }
    return true;
  }
  bool Running() {
    int status;
    return waitpid(pid_, &status, WNOHANG) == 0;
  }
  void Signal(int sig) { kill(pid_, sig); }
  int Wait() {
    ReadUntil("\x01never", std::chrono::milliseconds(0));
    int status = 0;
    waitpid(pid_, &status, 0);
    exited_ = true;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd_, buf, sizeof(buf))) > 0) out_.append(buf, n);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  const std::string& out() const { return out_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool exited_ = false;
  std::string out_;
};

// A second agent on a port in use is refused at start (gRPC would have
// shared the port and split calls between the two); limits are checked.
TEST_F(CliAgentsTest, TheAgentRefusesAPortInUseAndBadLimits) {
  CliResult second = RunCommand({Ferryd(), "--listen", a_->address(), "--in-process"});
  EXPECT_EQ(second.exit_code, 1) << second.out;
  EXPECT_THAT(second.out, HasSubstr("the port is in use"));
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--max-vms", "-3"}, {"--max-vms", "0"}, {"--max-migrations", "0"},
           {"--max-memory", "1K"}, {"--max-vms"}, {"--fault-handlers", "-1"}}) {
    std::vector<std::string> argv = {Ferryd(), "--listen", "127.0.0.1:0"};
    argv.insert(argv.end(), bad.begin(), bad.end());
    CliResult r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << bad[0] << ": " << r.out;
    EXPECT_THAT(r.out, HasSubstr(bad[0])) << r.out;
  }
  // The first agent still answers, alone.
  EXPECT_EQ(RunCli({"vm", "list", "--agent", a_->address()}).exit_code, 0);
}

// Finished migrations are kept for a bounded count (and time), then go.
TEST(CliAgents, FinishedMigrationsAreKeptWithinBounds) {
  auto agent = agent::AgentProcess::Start(Ferryd(), {"--keep-finished", "2"},
                                          TempDir() + "/keep.log");
  ASSERT_TRUE(agent.ok()) << agent.status();
  const std::string a = agent->address();
  ASSERT_EQ(RunCli({"vm", "create", "v", "--agent", a, "--memory", "16M"}).exit_code, 0);
  for (int i = 0; i < 4; ++i)  // each fails at once: nothing listens there
    EXPECT_EQ(RunCli({"migrate", "v", "--from", a, "--to", "127.0.0.1:1"}).exit_code, 5);
  CliResult list = RunCli({"migration", "list", "--agent", a, "--json"});
  ASSERT_EQ(list.exit_code, 0);
  int ids = 0;
  for (size_t at = list.out.find("\"id\":"); at != std::string::npos;
       at = list.out.find("\"id\":", at + 1))
    ++ids;
  EXPECT_EQ(ids, 2) << list.out;
}

std::string ReadAll(const std::string& path) { return ReadFileToString(path).value_or(""); }

// Levelled key=value log lines for every lifecycle event, a refused token
// included, and the VMs an agent destroys when it stops.
TEST(CliAgents, AgentsLogEveryLifecycleEventAsKeyValueLines) {
  const std::string log_a = TempDir() + "/log-a.log", log_b = TempDir() + "/log-b.log";
  {
    auto a = agent::AgentProcess::Start(Ferryd(), {"--migration-token", "one"}, log_a);
    auto b = agent::AgentProcess::Start(Ferryd(), {"--migration-token", "two"}, log_b);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(RunCli({"vm", "create", "lg", "--agent", a->address(), "--memory", "16M"})
                  .exit_code, 0);
    // The tokens differ: the destination refuses, and says so.
    EXPECT_EQ(RunCli({"migrate", "lg", "--from", a->address(), "--to", b->address()}).exit_code,
              1);
    EXPECT_EQ(RunCli({"vm", "delete", "lg", "--agent", a->address()}).exit_code, 0);
    ASSERT_EQ(RunCli({"vm", "create", "kept", "--agent", a->address(), "--memory", "16M"})
                  .exit_code, 0);
  }  // both agents stop (SIGTERM)
  const std::string a = ReadAll(log_a), b = ReadAll(log_b);
  // Every line is structured: a timestamp, a level, an event.
  for (const std::string* text : {&a, &b}) {
    std::istringstream lines(*text);
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      ++n;
      EXPECT_THAT(line, ::testing::MatchesRegex(
                            "ts=[0-9T:.Z-]+ level=(info|warn|error) event=[a-z_.]+( .*)?"))
          << line;
    }
    EXPECT_GT(n, 3);
  }
  EXPECT_THAT(a, HasSubstr("level=info event=agent.started"));
  EXPECT_THAT(a, HasSubstr("event=vm.created vm=lg memory_mib=16"));
  EXPECT_THAT(a, ::testing::ContainsRegex("event=migration.started migration=mig-[0-9a-f]+ vm=lg"));
  EXPECT_THAT(a, ::testing::ContainsRegex("level=error event=migration.failed migration=mig-"));
  EXPECT_THAT(a, HasSubstr("event=vm.deleted vm=lg"));
  EXPECT_THAT(a, HasSubstr("level=warn event=vm.destroyed vm=kept reason=\"agent stopped\""));
  EXPECT_THAT(a, HasSubstr("event=agent.stopped"));
  // Every event of the agent's event stream is a log line too.
  EXPECT_THAT(a, HasSubstr("level=info event=event.vm_created seq=1 vm=lg"));
  EXPECT_THAT(a, ::testing::ContainsRegex("event=event.migration_ended seq=[0-9]+ vm=lg "
                                          "migration=mig-[0-9a-f]+ side=source outcome=failed"));
  EXPECT_THAT(b, ::testing::ContainsRegex("level=warn event=event.request_refused seq=[0-9]+ "
                                          "migration=mig-[0-9a-f]+ rpc=\"incoming migration\" "
                                          "code=UNAUTHENTICATED"));
  EXPECT_THAT(b, ::testing::ContainsRegex(
                     "level=warn event=migration.refused direction=incoming migration=mig-[0-9a-f]+ "
                     "code=UNAUTHENTICATED reason=.*token"));
}

// On a terminal the live line is cut to its width: an 80-column terminal
// never sees a line wrap (each update would leave a new line behind).
TEST_F(CliAgentsTest, TheLiveLineFitsTheTerminal) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "tty", "--agent", a, "--memory", "128M", "--workload",
                    "uniform"}).exit_code, 0);
  int master = -1;
  winsize ws{};
  ws.ws_col = 60;
  ws.ws_row = 24;
  const pid_t pid = forkpty(&master, nullptr, nullptr, &ws);
  ASSERT_GE(pid, 0);
  if (pid == 0)
    ExecFerry({"migrate", "tty", "--from", a, "--to", b, "--mode", "postcopy",
               "--max-bandwidth", "64M"});
  std::string out;
  char buf[4096];
  while (true) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 30000) <= 0) break;
    const ssize_t n = read(master, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, n);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(master);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  // Each live update starts with \r and a clear; none is wider than 59.
  int updates = 0;
  for (size_t at = out.find("\r\033[K"); at != std::string::npos;
       at = out.find("\r\033[K", at + 1)) {
    const size_t begin = at + 4;
    size_t end = out.find_first_of("\r\n", begin);
    if (end == std::string::npos) end = out.size();
    EXPECT_LE(end - begin, 59u) << out.substr(begin, end - begin);
    ++updates;
  }
  EXPECT_GT(updates, 2) << out;
}

// The same request id with other parameters is refused through the CLI too.
TEST_F(CliAgentsTest, ARequestIdReusedWithOtherParametersIsRefused) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "rq", "--agent", a, "--memory", "256M", "--workload",
                    "uniform"}).exit_code, 0);
  CliResult first = RunCli({"migrate", "rq", "--from", a, "--to", b, "--mode", "precopy",
                            "--max-bandwidth", "8M", "--request-id", "r1", "--detach"});
  ASSERT_EQ(first.exit_code, 0) << first.out;
  CliResult other = RunCli({"migrate", "rq", "--from", a, "--to", b, "--mode", "postcopy",
                            "--max-bandwidth", "8M", "--request-id", "r1"});
  EXPECT_EQ(other.exit_code, 6) << other.out;
  EXPECT_THAT(other.out, HasSubstr("mode precopy (now postcopy)"));
  CliResult same = RunCli({"migrate", "rq", "--from", a, "--to", b, "--mode", "precopy",
                           "--max-bandwidth", "8M", "--request-id", "r1", "--detach"});
  EXPECT_EQ(same.exit_code, 0) << same.out;
  EXPECT_EQ(same.out, first.out);  // the same migration's id
}

// Secure by default: an agent other hosts can reach needs TLS and the
// pool's token, or an explicit --insecure (which it logs as a warning).
TEST(CliAgents, AnAgentReachableFromOtherHostsIsSecureByDefault) {
  CliResult plain = RunCommand({Ferryd(), "--listen", "0.0.0.0:0", "--fetch-listen",
                                "127.0.0.1:0", "--migration-token", "t"});
  EXPECT_EQ(plain.exit_code, 2) << plain.out;
  EXPECT_THAT(plain.out, HasSubstr("serve TLS"));
  CliResult no_ca = RunCommand({Ferryd(), "--listen", "0.0.0.0:0", "--fetch-listen",
                                "127.0.0.1:0", "--tls-cert", "/nonexistent", "--tls-key",
                                "/nonexistent", "--migration-token", "t"});
  EXPECT_EQ(no_ca.exit_code, 2) << no_ca.out;
  EXPECT_THAT(no_ca.out, HasSubstr("give --tls-ca"));
  CliResult no_token = RunCommand({Ferryd(), "--listen", "0.0.0.0:0", "--fetch-listen",
                                   "127.0.0.1:0", "--tls-cert", "/nonexistent",
                                   "--tls-key", "/nonexistent", "--tls-ca", "/nonexistent"});
  EXPECT_EQ(no_token.exit_code, 2) << no_token.out;
  EXPECT_THAT(no_token.out, HasSubstr("--migration-token"));
  const std::string log = TempDir() + "/insecure.log";
  {
    auto a = agent::AgentProcess::Start({Ferryd()}, "0.0.0.0:0",
                                        {"--fetch-listen", "127.0.0.1:0", "--insecure"}, log);
    ASSERT_TRUE(a.ok()) << a.status();
  }
  EXPECT_THAT(ReadAll(log), ::testing::ContainsRegex(
                                "level=warn event=agent.insecure tls=off migration_token=none"));
}

// Progress reaches a pipe line by line while the migration runs; Ctrl-C
// cancels a migration that has not switched over; --detach returns at once.
TEST_F(CliAgentsTest, ProgressIsLiveInPipesAndCtrlCCancelsBeforeSwitchover) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "slow", "--agent", a, "--memory", "256M", "--workload",
                    "uniform"}).exit_code, 0);
  // A capped precopy takes seconds: its first progress line must arrive
  // while it runs, not when the command exits.
  Child migrate({"migrate", "slow", "--from", a, "--to", b, "--mode", "precopy",
                 "--max-bandwidth", "16M"});
  ASSERT_TRUE(migrate.ReadUntil("round 0", std::chrono::seconds(10))) << migrate.out();
  EXPECT_TRUE(migrate.Running()) << "a progress line arrived only at exit";
  // Percent is the whole migration's: a capped precopy of 256 MiB is far
  // from done after its first line.
  ASSERT_TRUE(migrate.ReadUntil("ETA", std::chrono::seconds(10))) << migrate.out();
  EXPECT_THAT(migrate.out(), Not(HasSubstr("100.0%")));
  // Interrupted once pages have crossed, so that it ends with its report (a
  // migration cancelled before it sent anything ends with its reason only,
  // which a loaded machine reaches at the first progress line).
  EXPECT_TRUE(Eventually([&] {
    return std::regex_search(RunCli({"migration", "list", "--agent", a, "--json"}).out,
                             std::regex("\"pages_transferred\":[1-9]"));
  }));
  migrate.Signal(SIGINT);
  EXPECT_EQ(migrate.Wait(), 1) << migrate.out();
  EXPECT_THAT(migrate.out(), HasSubstr("interrupted: cancelling migration"));
  EXPECT_THAT(migrate.out(), HasSubstr("cancelled"));
  // The report of a migration that ended in precopy has its figures.
  EXPECT_THAT(migrate.out(), HasSubstr("no switchover"));
  EXPECT_THAT(migrate.out(), Not(HasSubstr("in 0.0 ms")));
  EXPECT_THAT(migrate.out(), Not(HasSubstr("switchover: )")));
  // The VM runs on at the source; the destination has nothing.
  CliResult get = RunCli({"vm", "get", "slow", "--agent", a});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_THAT(get.out, HasSubstr("running"));
  EXPECT_EQ(RunCli({"vm", "get", "slow", "--agent", b}).exit_code, 4);
  // The destination's log names the migration and why it failed.
  const std::string log = ReadAll(TempDir() + "/cli-b.log");
  EXPECT_THAT(log, ::testing::ContainsRegex(
                       "level=info event=vm.arriving vm=slow migration=mig-[0-9a-f]+ source=127"));
  EXPECT_THAT(log, ::testing::ContainsRegex(
                       "level=warn event=vm.not_arrived vm=slow migration=mig-[0-9a-f]+ reason="));

  // --detach: started, the id printed, and the agents carry it out.
  ASSERT_EQ(RunCli({"vm", "create", "calm", "--agent", a, "--memory", "64M", "--workload",
                    "idle"}).exit_code, 0);
  CliResult d = RunCli({"migrate", "calm", "--from", a, "--to", b, "--mode", "precopy",
                        "--detach"});
  ASSERT_EQ(d.exit_code, 0) << d.out;
  // The id alone, so that `ID=$(ferry migrate ... --detach)` works (the
  // sentence goes to stderr only at a terminal).
  EXPECT_THAT(d.out, ::testing::MatchesRegex("mig-[0-9a-f]+\n"));
  const std::string id = d.out.substr(0, d.out.size() - 1);
  CliResult w = RunCli({"migration", "watch", id, "--agent", a});
  EXPECT_EQ(w.exit_code, 0) << w.out;
  EXPECT_THAT(w.out, HasSubstr("completed"));
  // A finished migration keeps its final figures: elapsed time and rate
  // do not go on growing.
  CliResult g1 = RunCli({"migration", "get", id, "--agent", a, "--json"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CliResult g2 = RunCli({"migration", "get", id, "--agent", a, "--json"});
  EXPECT_EQ(g1.out, g2.out);
  EXPECT_THAT(g1.out, HasSubstr("\"percent\":100"));
  // One JSON shape for a migration: watch --json and get --json print the
  // same object; numbers are numbers and phases short names.
  CliResult wj = RunCli({"migration", "watch", id, "--agent", a, "--json"});
  EXPECT_EQ(wj.out, g1.out);
  EXPECT_THAT(g1.out, HasSubstr("\"phase\":\"completed\""));
  EXPECT_THAT(g1.out, HasSubstr("\"mode\":\"precopy\""));
  EXPECT_THAT(g1.out, ::testing::ContainsRegex("\"bytes_sent\":[0-9]"));
  EXPECT_THAT(g1.out, HasSubstr("\"report\":{"));
  EXPECT_THAT(g1.out, Not(HasSubstr("MIGRATION_PHASE")));
  CliResult lj = RunCli({"migration", "list", "--agent", a, "--json"});
  EXPECT_THAT(lj.out, HasSubstr(g1.out.substr(0, g1.out.size() - 1)));  // one of the list
  // And migrate --json prints that shape too.
  ASSERT_EQ(RunCli({"vm", "create", "calm2", "--agent", a, "--memory", "32M", "--workload",
                    "idle"}).exit_code, 0);
  CliResult mj = RunCli({"migrate", "calm2", "--from", a, "--to", b, "--mode", "precopy",
                         "--json"});
  ASSERT_EQ(mj.exit_code, 0) << mj.out;
  const size_t mid = mj.out.find("\"id\":\"");
  const std::string id2 = mj.out.substr(mid + 6, mj.out.find('"', mid + 6) - mid - 6);
  // Progress objects a line while it runs, then the final object, the one
  // migration get --json prints.
  const size_t last = mj.out.rfind('\n', mj.out.size() - 2);
  EXPECT_EQ(mj.out.substr(last == std::string::npos ? 0 : last + 1),
            RunCli({"migration", "get", id2, "--agent", a, "--json"}).out);
}

// Ctrl-C on `migration watch` stops the watching only, and says so.
TEST_F(CliAgentsTest, CtrlCOnWatchStopsWatchingAndTheMigrationGoesOn) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "wt", "--agent", a, "--memory", "256M", "--workload",
                    "idle"}).exit_code, 0);
  CliResult d = RunCli({"migrate", "wt", "--from", a, "--to", b, "--mode", "precopy",
                        "--max-bandwidth", "16M", "--detach"});
  ASSERT_EQ(d.exit_code, 0) << d.out;
  const std::string id = d.out.substr(0, d.out.size() - 1);
  Child watch({"migration", "watch", id, "--agent", a});
  ASSERT_TRUE(watch.ReadUntil("round 0", std::chrono::seconds(10))) << watch.out();
  watch.Signal(SIGINT);
  EXPECT_EQ(watch.Wait(), 130) << watch.out();
  EXPECT_THAT(watch.out(), HasSubstr("stopped watching migration " + id));
  EXPECT_THAT(watch.out(), HasSubstr("the migration goes on"));
  EXPECT_THAT(watch.out(), HasSubstr("ferry migration watch " + id + " --agent " + a));
  // It does go on: still in precopy, until cancelled.
  CliResult get = RunCli({"migration", "get", id, "--agent", a});
  EXPECT_THAT(get.out, HasSubstr("precopy")) << get.out;
  EXPECT_EQ(RunCli({"migration", "cancel", id, "--agent", a}).exit_code, 0);
}

// After switchover the destination owns the VM: Ctrl-C does not cancel, it
// says the migration goes on and how to follow it.
TEST_F(CliAgentsTest, CtrlCAfterSwitchoverLeavesTheMigrationRunning) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "pc", "--agent", a, "--memory", "256M", "--workload",
                    "idle"}).exit_code, 0);
  Child migrate({"migrate", "pc", "--from", a, "--to", b, "--mode", "postcopy",
                 "--max-bandwidth", "32M"});
  ASSERT_TRUE(migrate.ReadUntil("postcopy  ", std::chrono::seconds(10))) << migrate.out();
  // Both ends visible: the destination lists the arriving VM and the
  // incoming migration.
  CliResult vms = RunCli({"vm", "list", "--agent", b});
  EXPECT_EQ(vms.exit_code, 0);
  EXPECT_THAT(vms.out, HasSubstr("incoming"));
  EXPECT_THAT(vms.out, HasSubstr("pages missing"));
  CliResult one = RunCli({"vm", "get", "pc", "--agent", b, "--json"});
  EXPECT_EQ(one.exit_code, 0) << one.out;
  EXPECT_THAT(one.out, HasSubstr("\"state\":\"incoming\""));
  CliResult in = RunCli({"migration", "list", "--agent", b});
  EXPECT_EQ(in.exit_code, 0);
  EXPECT_THAT(in.out, HasSubstr("from "));
  EXPECT_THAT(in.out, HasSubstr("postcopy"));
  // Not the destination's to delete or create yet.
  EXPECT_EQ(RunCli({"vm", "delete", "pc", "--agent", b}).exit_code, 6);
  EXPECT_EQ(RunCli({"vm", "create", "pc", "--agent", b, "--memory", "16M"}).exit_code, 6);
  migrate.Signal(SIGINT);
  EXPECT_EQ(migrate.Wait(), 130) << migrate.out();
  EXPECT_THAT(migrate.out(), HasSubstr("continues on the agents"));
  EXPECT_THAT(migrate.out(), HasSubstr("ferry migration watch"));
  // And it completes.
  CliResult list = RunCli({"migration", "list", "--agent", a, "--json"});
  const size_t at = list.out.find("\"id\":\"");
  ASSERT_NE(at, std::string::npos);
  const std::string id = list.out.substr(at + 6, list.out.find('"', at + 6) - at - 6);
  CliResult w = RunCli({"migration", "watch", id, "--agent", a});
  EXPECT_EQ(w.exit_code, 0) << w.out;
}

}  // namespace
}  // namespace ferry::e2e
