// The operator's polish through the real binaries (docs/cli.md): one JSON
// shape for every command and for errors, migration get/list, units,
// progress that makes sense, connection errors that say what is wrong,
// settings from the environment and config files, completion and man
// pages.
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/eventually.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Bench() { return Runfile("bench/ferry-bench"); }

// `ferry args...` with `env` ("K=V") set, stdout only in .out; stderr in
// *err when given.
CliResult RunFerry(const std::vector<std::string>& env, const std::vector<std::string>& args,
                   std::string* err = nullptr) {
  const std::string err_file = TempDir() + "/stderr.txt";
  std::vector<std::string> argv = {"env"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.insert(argv.end(), {"sh", "-c", "exec \"$0\" \"$@\" 2>" + err_file, Ferry()});
  argv.insert(argv.end(), args.begin(), args.end());
  CliResult r = RunCommand(argv);
  if (err != nullptr) *err = RunCommand({"cat", err_file}).out;
  return r;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

std::string Field(const std::string& json, const std::string& key) {
  const std::string k = "\"" + key + "\":\"";
  const size_t at = json.find(k);
  if (at == std::string::npos) return "";
  return json.substr(at + k.size(), json.find('"', at + k.size()) - at - k.size());
}

class CliOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/out-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/out-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }
  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(CliOutputTest, VmsPrintTheSameJsonShapeAsMigrations) {
  const std::string a = a_->address();
  CliResult c = RunCli({"vm", "create", "j", "--agent", a, "--memory", "16M", "--json"});
  ASSERT_EQ(c.exit_code, 0) << c.out;
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"vm", "get", "j"}, {"vm", "list"}, {"vm", "stats", "j"}}) {
    std::vector<std::string> args = argv;
    args.insert(args.end(), {"--agent", a, "--json"});
    CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    // Short enum names, numbers as numbers: no protobuf JSON.
    EXPECT_THAT(r.out, ContainsRegex("\"state\":\"(running|halted)\"")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("\"memory_bytes\":16777216")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("\"backend\":\"soft\"")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("\"kind\":\"zipf\"")) << r.out;
    EXPECT_THAT(r.out, Not(HasSubstr("VM_STATE_"))) << r.out;
    EXPECT_THAT(r.out, Not(ContainsRegex("\"[a-z_]+\":\"[0-9]+\""))) << r.out;
  }
  CliResult stats = RunCli({"vm", "stats", "j", "--agent", a, "--json"});
  EXPECT_THAT(stats.out, ContainsRegex("\"guest_ops_per_sec\":[0-9]"));
  EXPECT_THAT(stats.out, ContainsRegex("\"vcpus\":\\[\\{\"index\":0,"));
  // The first stats call already has a rate: over the VM's life so far.
  ASSERT_EQ(RunCli({"vm", "create", "st", "--agent", a, "--memory", "16M", "--workload",
                    "uniform"}).exit_code, 0);
  CliResult first;
  EXPECT_TRUE(Eventually([&] {  // once the guest ran some ops
    first = RunCli({"vm", "get", "st", "--agent", a, "--json"});
    return first.out.find("\"guest_ops\":0,") == std::string::npos;
  }));
  first = RunCli({"vm", "stats", "st", "--agent", a});
  EXPECT_THAT(first.out, Not(HasSubstr("guest ops/s 0 "))) << first.out;
}

// A memory change prints the regions after it; vm get and list carry the
// regions, the maximum and the number of changes; a refusal is the agent's
// reason, in JSON on stderr under --json.
TEST_F(CliOutputTest, MemoryChangesPrintTheRegionsAfterThem) {
  const std::string a = a_->address();
  ASSERT_EQ(RunCli({"vm", "create", "m", "--agent", a, "--memory", "16M", "--max-memory", "64M",
                    "--workload", "uniform"})
                .exit_code,
            0);
  CliResult resize = RunCli({"vm", "resize", "m", "--agent", a, "--memory", "32MiB", "--json"});
  ASSERT_EQ(resize.exit_code, 0) << resize.out;
  EXPECT_EQ(Lines(resize.out).size(), 1u) << resize.out;
  EXPECT_THAT(resize.out, ContainsRegex(R"(^\{"name":"m","regions":\[\{"name":"ram","gpa":0,)"
                                        R"("size_bytes":33554432\}\],"memory_bytes":33554432,)"
                                        R"("held_off_us":[0-9]+,"apply_us":[0-9]+,)"
                                        // Software vCPUs: no memslots.
                                        R"("slots_kept":0,"slots_recreated":0,"slots_created":0,)"
                                        R"("slots_deleted":0,"stage2_bytes_dropped":0,)"
                                        R"("slots_resized":0\})"))
      << resize.out;
  CliResult add = RunCli({"vm", "memory", "add", "m", "--agent", a, "--region", "hot-1", "--gpa",
                          "1G", "--size", "16M"});
  ASSERT_EQ(add.exit_code, 0) << add.out;
  const std::vector<std::string> lines = Lines(add.out);
  ASSERT_EQ(lines.size(), 2u) << add.out;
  EXPECT_THAT(lines[0], ContainsRegex(R"(^m: add hot-1 \(16 MiB at 0x40000000\): done; its )"
                                      R"(vCPUs were held off [0-9]+\.[0-9][0-9][0-9] ms$)"));
  EXPECT_EQ(lines[1], "regions: hot-1 16 MiB at 0x40000000, ram 32 MiB at 0x0 (48 MiB in all)");
  CliResult get = RunCli({"vm", "get", "m", "--agent", a, "--json"});
  EXPECT_THAT(get.out, HasSubstr(R"("regions":[{"name":"hot-1","gpa":1073741824,)"
                                 R"("size_bytes":16777216},{"name":"ram","gpa":0,)"
                                 R"("size_bytes":33554432}],"max_memory_bytes":67108864,)"
                                 R"("memory_changes":2)"))
      << get.out;
  EXPECT_THAT(get.out, HasSubstr(R"("memory_bytes":50331648)")) << get.out;
  CliResult list = RunCli({"vm", "list", "--agent", a});
  EXPECT_THAT(list.out, ContainsRegex("\nm +running +48M ")) << list.out;
  std::string err;
  CliResult over =
      RunFerry({}, {"vm", "resize", "m", "--agent", a, "--memory", "64M", "--json"}, &err);
  EXPECT_EQ(over.exit_code, 6);
  EXPECT_EQ(over.out, "");
  EXPECT_THAT(err, ContainsRegex(R"(^\{"error":\{"code":"resource_exhausted","exit_code":6,)"
                                 R"("message":"resize ram to 64 MiB of VM m \(agent [^)]+\): )"
                                 R"(the transaction leaves 80 MiB of memory; this VM's maximum )"
                                 R"(is 64 MiB"\}\})"))
      << err;
}

TEST_F(CliOutputTest, ErrorsUnderJsonAreJsonOnStderrWithTheSameExitCodes) {
  std::string err;
  CliResult r = RunFerry({}, {"vm", "get", "nope", "--agent", a_->address(), "--json"}, &err);
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(err, ContainsRegex(
                       "^\\{\"error\":\\{\"code\":\"not_found\",\"exit_code\":4,\"message\":\""));
  r = RunFerry({}, {"vm", "create", "x", "--memory", "12Q", "--json"}, &err);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(err, HasSubstr("\"code\":\"invalid_argument\",\"exit_code\":2"));
  r = RunFerry({}, {"vm", "list", "--agent", "127.0.0.1:1", "--json"}, &err);
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_THAT(err, HasSubstr("\"code\":\"unavailable\""));
  // Without --json: the sentence.
  r = RunFerry({}, {"vm", "get", "nope", "--agent", a_->address()}, &err);
  EXPECT_THAT(err, HasSubstr("ferry: get VM nope"));
}

TEST_F(CliOutputTest, WatchStreamsProgressLinesThenTheFinalObject) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "w", "--agent", a, "--memory", "64M", "--workload",
                    "idle"}).exit_code, 0);
  CliResult d = RunCli({"migrate", "w", "--from", a, "--to", b, "--mode", "precopy",
                        "--max-bandwidth", "64Mbit/s", "--detach"});
  ASSERT_EQ(d.exit_code, 0) << d.out;
  const std::string id = d.out.substr(0, d.out.size() - 1);
  CliResult w = RunCli({"migration", "watch", id, "--agent", a, "--json"});
  ASSERT_EQ(w.exit_code, 0) << w.out;
  const std::vector<std::string> lines = Lines(w.out);
  ASSERT_GE(lines.size(), 2u) << w.out;  // 64 MiB at 8 MB/s: seconds of progress
  double last_percent = -1;
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    EXPECT_EQ(lines[i].front(), '{');
    EXPECT_THAT(lines[i], Not(HasSubstr("\"report\"")));
    EXPECT_THAT(lines[i], HasSubstr("\"bandwidth_bytes_per_sec\":"));
    const size_t at = lines[i].find("\"percent\":");
    ASSERT_NE(at, std::string::npos);
    const double percent = std::stod(lines[i].substr(at + 10));
    // Precopy does not open at 100%, and the percent never runs backwards
    // (a later line may show 100% while the destination confirms: on a
    // loaded machine that wait can span a progress interval).
    if (i == 0) EXPECT_LT(percent, 100) << lines[i];
    EXPECT_GE(percent, last_percent) << lines[i];
    last_percent = percent;
  }
  CliResult get = RunCli({"migration", "get", id, "--agent", a, "--json"});
  EXPECT_EQ(lines.back() + "\n", get.out);
  EXPECT_THAT(get.out, HasSubstr("\"error_code\":\"\""));
  EXPECT_THAT(get.out, Not(HasSubstr("bandwidth_bps")));
  EXPECT_THAT(get.out, ContainsRegex("\"start_time_unix_ms\":1[0-9]{12},"));
  EXPECT_THAT(get.out, ContainsRegex("\"end_time_unix_ms\":1[0-9]{12},"));
  // A failed migration's error code is a name, never a number.
  CliResult f = RunCli({"migrate", "w", "--from", b, "--to", "127.0.0.1:1", "--json"});
  EXPECT_EQ(f.exit_code, 5) << f.out;
  EXPECT_THAT(f.out, HasSubstr("\"error_code\":\"unavailable\""));
}

TEST_F(CliOutputTest, MigrationGetAndListSayWhenAndFilter) {
  const std::string a = a_->address(), b = b_->address();
  for (const char* vm : {"l1", "l2"})
    ASSERT_EQ(RunCli({"vm", "create", vm, "--agent", a, "--memory", "16M", "--workload",
                      "idle"}).exit_code, 0);
  CliResult m1 = RunCli({"migrate", "l1", "--from", a, "--to", b, "--mode", "postcopy"});
  ASSERT_EQ(m1.exit_code, 0) << m1.out;
  // The outcome is said once (the report), and a postcopy report speaks of
  // no precopy round.
  EXPECT_EQ(m1.out.find("completed"), m1.out.rfind("completed")) << m1.out;
  EXPECT_THAT(m1.out, Not(HasSubstr("round 0 in")));
  CliResult m2 = RunCli({"migrate", "l2", "--from", a, "--to", "127.0.0.1:1"});
  EXPECT_EQ(m2.exit_code, 5);
  // A refused migration is its reason, not a report. A progress line
  // ("  0.25s  precopy ...", one a second and at each phase change) may come
  // first on a loaded machine, where the refusal takes longer to arrive.
  std::vector<std::string> said;
  for (const std::string& line : Lines(m2.out))
    if (!std::regex_search(line, std::regex(R"(^\s*\d+\.\d\ds  )"))) said.push_back(line);
  EXPECT_LE(said.size(), 2u) << m2.out;
  EXPECT_THAT(m2.out, Not(HasSubstr("round 0 in"))) << m2.out;
  EXPECT_THAT(m2.out, HasSubstr("failed"));
  CliResult list = RunCli({"migration", "list", "--agent", a});
  ASSERT_EQ(list.exit_code, 0) << list.out;
  // Oldest first.
  EXPECT_LT(list.out.find(" l1 "), list.out.find(" l2 ")) << list.out;
  EXPECT_THAT(list.out, HasSubstr("STARTED"));
  EXPECT_THAT(list.out, Not(HasSubstr(" 0.0%")));  // the failed one got nowhere: no percent
  CliResult only = RunCli({"migration", "list", "--agent", a, "--vm", "l2"});
  EXPECT_THAT(only.out, Not(HasSubstr(" l1 ")));
  EXPECT_THAT(only.out, HasSubstr(" l2 "));
  only = RunCli({"migration", "list", "--agent", a, "--phase", "completed"});
  EXPECT_THAT(only.out, HasSubstr(" l1 "));
  EXPECT_THAT(only.out, Not(HasSubstr(" l2 ")));
  only = RunCli({"migration", "list", "--agent", a, "--limit", "1"});
  EXPECT_THAT(only.out, Not(HasSubstr(" l1 ")));
  EXPECT_THAT(only.out, HasSubstr(" l2 "));
  CliResult bad = RunCli({"migration", "list", "--agent", a, "--phase", "done"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.out, HasSubstr("--phase: unknown phase 'done'"));
  // get: the report, with wall-clock start and end.
  const std::string id = Field(RunCli({"migration", "list", "--agent", a, "--vm", "l1",
                                       "--json"}).out, "id");
  CliResult get = RunCli({"migration", "get", id, "--agent", a});
  ASSERT_EQ(get.exit_code, 0) << get.out;
  EXPECT_THAT(get.out, ContainsRegex("started 20[0-9-]+ [0-9:]+ [+-][0-9]{4}, ended "));
  EXPECT_THAT(get.out, HasSubstr("downtime"));
  EXPECT_THAT(get.out, HasSubstr("faults"));
}

TEST_F(CliOutputTest, SizesAndRatesFollowOneRule) {
  const std::string a = a_->address(), b = b_->address();
  struct Case {
    std::vector<std::string> argv;
    const char* says;
  } cases[] = {
      {{"vm", "create", "u", "--agent", a, "--memory", "1024"}, "write 1024M for MiB"},
      {{"vm", "create", "u", "--agent", a, "--memory", "1GB"}, "sizes are binary: write 1G"},
      {{"migrate", "u", "--from", a, "--to", b, "--max-bandwidth", "1000"}, "has no unit"},
  };
  for (const Case& c : cases) {
    CliResult r = RunCli(c.argv);
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_THAT(r.out, HasSubstr(c.says));
  }
  ASSERT_EQ(RunCli({"vm", "create", "u", "--agent", a, "--memory", "32MiB", "--workload",
                    "idle"}).exit_code, 0);
  // Each spelling is accepted; the VM goes back and forth.
  std::string from = a, to = b;
  for (const char* rate : {"1Gbit/s", "125MB/s", "1G"}) {
    CliResult r = RunCli({"migrate", "u", "--from", from, "--to", to, "--max-bandwidth", rate,
                          "--mode", "precopy"});
    EXPECT_EQ(r.exit_code, 0) << rate << ": " << r.out;
    EXPECT_THAT(r.out, ContainsRegex("at [0-9.]+ Gbit/s")) << r.out;  // the unit input takes
    std::swap(from, to);
  }
}

TEST(CliOutput, ConnectionErrorsSayWhatIsWrong) {
  if (RunCommand({"openssl", "version"}).exit_code != 0)
    GTEST_SKIP() << "the openssl tool is not installed: cannot make test certificates";
  const std::string d = TempDir() + "/tls-errors";
  ASSERT_EQ(RunCommand({"mkdir", "-p", d}).exit_code, 0);
  std::ofstream(d + "/ext.cnf") << "subjectAltName=IP:127.0.0.1\n"
                                 << "extendedKeyUsage=serverAuth,clientAuth\n";
  const std::string ec = "ec:" + d + "/ecparams";
  std::vector<std::vector<std::string>> steps = {
      {"openssl", "ecparam", "-name", "prime256v1", "-out", d + "/ecparams"}};
  for (const std::string ca : {"ca", "other"}) {
    steps.push_back({"openssl", "req", "-x509", "-newkey", ec, "-nodes", "-keyout",
                     d + "/" + ca + ".key", "-out", d + "/" + ca + ".pem", "-days", "1", "-subj",
                     "/CN=" + ca});
    steps.push_back({"openssl", "req", "-newkey", ec, "-nodes", "-keyout",
                     d + "/" + ca + "-leaf.key", "-out", d + "/" + ca + "-leaf.csr", "-subj",
                     "/CN=leaf"});
    steps.push_back({"openssl", "x509", "-req", "-in", d + "/" + ca + "-leaf.csr", "-CA",
                     d + "/" + ca + ".pem", "-CAkey", d + "/" + ca + ".key", "-CAcreateserial",
                     "-out", d + "/" + ca + "-leaf.pem", "-days", "1", "-extfile",
                     d + "/ext.cnf"});
  }
  for (const auto& step : steps) {
    CliResult r = RunCommand(step);
    ASSERT_EQ(r.exit_code, 0) << step[1] << ": " << r.out;
  }
  auto a = agent::AgentProcess::Start(
      Ferryd(),
      {"--tls-cert", d + "/ca-leaf.pem", "--tls-key", d + "/ca-leaf.key", "--tls-ca",
       d + "/ca.pem"},
      TempDir() + "/tls-errors.log");
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string at = a->address();
  struct Case {
    std::vector<std::string> tls;
    const char* says;
  } cases[] = {
      {{}, "serves TLS, and this client spoke plaintext: give the agents' CA with --tls-ca"},
      {{"--tls-ca", d + "/ca.pem"}, "requires a client certificate"},
      {{"--tls-ca", d + "/other.pem", "--tls-cert", d + "/other-leaf.pem", "--tls-key",
        d + "/other-leaf.key"},
       "is not signed by the CA in --tls-ca"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {"vm", "list", "--agent", at};
    argv.insert(argv.end(), c.tls.begin(), c.tls.end());
    CliResult r = RunCli(argv);
    EXPECT_EQ(r.exit_code, 5) << r.out;
    EXPECT_THAT(r.out, HasSubstr("TLS error")) << r.out;
    EXPECT_THAT(r.out, HasSubstr(c.says)) << r.out;
    EXPECT_THAT(r.out, Not(HasSubstr("is ferryd running there"))) << r.out;
  }
  // The right files work, given by the environment.
  CliResult ok = RunFerry({"FERRY_AGENT=" + at, "FERRY_TLS_CA=" + d + "/ca.pem",
                           "FERRY_TLS_CERT=" + d + "/ca-leaf.pem",
                           "FERRY_TLS_KEY=" + d + "/ca-leaf.key"},
                          {"vm", "list"});
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
}

TEST_F(CliOutputTest, SettingsComeFromFlagsThenEnvironmentThenConfigFile) {
  const std::string a = a_->address(), b = b_->address();
  ASSERT_EQ(RunCli({"vm", "create", "on-a", "--agent", a, "--memory", "16M", "--workload",
                    "idle"}).exit_code, 0);
  const std::string home = TempDir() + "/xdg";
  ASSERT_EQ(RunCommand({"mkdir", "-p", home + "/ferry"}).exit_code, 0);
  std::ofstream(home + "/ferry/config") << "# the pool's agent\nagent = " << a << "\n";
  const std::string xdg = "XDG_CONFIG_HOME=" + home;
  // The file.
  CliResult r = RunFerry({xdg}, {"vm", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("on-a"));
  // The environment wins over the file, the flag over both.
  r = RunFerry({xdg, "FERRY_AGENT=" + b}, {"vm", "list"});
  EXPECT_THAT(r.out, Not(HasSubstr("on-a")));
  r = RunFerry({xdg, "FERRY_AGENT=" + b}, {"vm", "list", "--agent", a});
  EXPECT_THAT(r.out, HasSubstr("on-a"));
  // FERRY_AGENT is migrate's --from too.
  r = RunFerry({"FERRY_AGENT=" + a}, {"migrate", "on-a", "--to", b, "--mode", "precopy"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // An unknown key is an error naming the file and line.
  std::ofstream(home + "/ferry/config") << "agent = " << a << "\ncolour = red\n";
  std::string err;
  r = RunFerry({xdg}, {"vm", "list"}, &err);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(err, HasSubstr(home + "/ferry/config:2: unknown setting 'colour'"));
}

TEST(CliOutput, FerrydTakesAConfigFileAndALogLevel) {
  const std::string dir = TempDir() + "/ferryd-config";
  ASSERT_EQ(RunCommand({"mkdir", "-p", dir}).exit_code, 0);
  std::ofstream(dir + "/ferryd.conf") << "# one VM at most\nmax-vms = 1\nlog-level = warn\n";
  const std::string log = dir + "/agent.log";
  {
    auto a = agent::AgentProcess::Start(Ferryd(), {"--config", dir + "/ferryd.conf"}, log);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(RunCli({"vm", "create", "c1", "--agent", a->address(), "--memory", "16M"})
                  .exit_code, 0);
    CliResult second = RunCli({"vm", "create", "c2", "--agent", a->address(), "--memory", "16M"});
    EXPECT_EQ(second.exit_code, 6) << second.out;  // max-vms = 1 from the file
  }
  const std::string text = RunCommand({"cat", log}).out;
  EXPECT_THAT(text, Not(HasSubstr("level=info"))) << text;
  EXPECT_THAT(text, HasSubstr("level=warn")) << text;
  {
    auto a = agent::AgentProcess::Start(Ferryd(), {"--log-level", "debug"}, log + ".debug");
    ASSERT_TRUE(a.ok()) << a.status();
  }
  EXPECT_THAT(RunCommand({"cat", log + ".debug"}).out, HasSubstr("level=debug event=agent.settings"));
  std::ofstream(dir + "/bad.conf") << "max-vms = 1\nfrobnicate = yes\n";
  CliResult bad = RunCommand({Ferryd(), "--config", dir + "/bad.conf", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(bad.exit_code, 2) << bad.out;
  EXPECT_THAT(bad.out, HasSubstr("unknown setting 'frobnicate' (from " + dir + "/bad.conf:2)"));
  bad = RunCommand({Ferryd(), "--log-level", "loud"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.out, HasSubstr("--log-level: unknown level 'loud'"));
  bad = RunCommand({Ferryd(), "--listen"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.out, HasSubstr("--listen needs a value"));
}

TEST(CliOutput, CompletionAndManPagesComeFromTheHelp) {
  const std::string script = TempDir() + "/ferry-completion.bash";
  CliResult c = RunCli({"completion", "bash"});
  ASSERT_EQ(c.exit_code, 0) << c.out;
  std::ofstream(script) << c.out;
  CliResult syntax = RunCommand({"bash", "-n", script});
  EXPECT_EQ(syntax.exit_code, 0) << syntax.out;
  auto complete = [&](const std::string& words, int cword) {
    return RunCommand({"bash", "-c",
                       "source " + script + "; COMP_WORDS=(" + words + "); COMP_CWORD=" +
                           std::to_string(cword) + "; _ferry; echo \"${COMPREPLY[*]}\""})
        .out;
  };
  EXPECT_EQ(complete("ferry vm c", 2), "create\n");
  EXPECT_EQ(complete("ferry --agent h:1 migration w", 4), "watch\n");
  EXPECT_EQ(complete("ferry vm create web --mem", 4), "--memory\n");
  EXPECT_EQ(complete("ferry mig", 1), "migrate migration\n");
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {Ferry(), "help", "--man"}, {Ferryd(), "--man"}, {Bench(), "help", "--man"}}) {
    CliResult man = RunCommand(argv);
    EXPECT_EQ(man.exit_code, 0) << man.out;
    EXPECT_THAT(man.out, ContainsRegex("^\\.TH FERRY"));
    EXPECT_THAT(man.out, HasSubstr("\n.SH NAME\n"));
    EXPECT_THAT(man.out, HasSubstr("\n.SH DESCRIPTION\n"));
    if (RunCommand({"sh", "-c", "command -v man"}).exit_code == 0) {
      std::ofstream(TempDir() + "/page.1") << man.out;
      CliResult rendered = RunCommand({"man", "-l", TempDir() + "/page.1"});
      EXPECT_EQ(rendered.exit_code, 0) << rendered.out;
    }
  }
  EXPECT_THAT(RunCli({"help", "--man"}).out, HasSubstr("FERRY_TLS_CA"));
}

TEST(CliOutput, SmallThings) {
  // ferry-bench explains one scenario.
  CliResult b = RunCommand({Bench(), "help", "migrate"});
  EXPECT_EQ(b.exit_code, 0) << b.out;
  EXPECT_THAT(b.out, HasSubstr("usage: ferry-bench migrate"));
  EXPECT_THAT(b.out, HasSubstr("--max-rounds"));
  EXPECT_THAT(b.out, Not(HasSubstr("--tcp-bytes")));
  EXPECT_EQ(RunCommand({Bench(), "migrate", "--help"}).out, b.out);
  EXPECT_EQ(RunCommand({Bench(), "help", "nope"}).exit_code, 2);
  // The vm usage line names every subcommand.
  CliResult vm = RunCli({"vm"});
  EXPECT_EQ(vm.exit_code, 2);
  for (const char* verb :
       {"create", "list", "get", "stats", "verify", "resume", "resize", "memory", "delete"})
    EXPECT_THAT(vm.out, HasSubstr(verb));
}

}  // namespace
}  // namespace ferry::e2e
