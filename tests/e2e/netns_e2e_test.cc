// Two hosts: each ferryd runs in its own network namespace, joined by a
// veth pair whose both directions are shaped by tc tbf. The operator's CLI
// runs inside the source host's namespace. Skips, saying why, where network
// namespaces cannot be created (no root, no iproute2).
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;

constexpr char kRate[] = "200mbit";

// iproute2's tools live in /usr/sbin, which a test's PATH may not include.
std::string Tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string path = std::string(dir) + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return name;
}

class TwoHosts : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string id = std::to_string(getpid() % 100000);
    ns_a_ = "ferry-a-" + id;
    ns_b_ = "ferry-b-" + id;
    dev_a_ = "fva" + id;
    dev_b_ = "fvb" + id;
    ip_ = Tool("ip");
    tc_ = Tool("tc");
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root; running as uid " << geteuid();
    CliResult probe = RunCommand({ip_, "netns", "add", ns_a_});
    if (probe.exit_code != 0)
      GTEST_SKIP() << "cannot create a network namespace here (ip netns add: " << probe.out << ")";
    created_ = true;
    for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
             {ip_, "netns", "add", ns_b_},
             {ip_, "link", "add", dev_a_, "type", "veth", "peer", "name", dev_b_},
             {ip_, "link", "set", dev_a_, "netns", ns_a_},
             {ip_, "link", "set", dev_b_, "netns", ns_b_},
             {ip_, "-n", ns_a_, "addr", "add", "10.251.0.1/24", "dev", dev_a_},
             {ip_, "-n", ns_b_, "addr", "add", "10.251.0.2/24", "dev", dev_b_},
             {ip_, "-n", ns_a_, "link", "set", "lo", "up"},
             {ip_, "-n", ns_b_, "link", "set", "lo", "up"},
             {ip_, "-n", ns_a_, "link", "set", dev_a_, "up"},
             {ip_, "-n", ns_b_, "link", "set", dev_b_, "up"},
             {tc_, "-n", ns_a_, "qdisc", "add", "dev", dev_a_, "root", "tbf", "rate", kRate,
              "burst", "256kb", "latency", "100ms"},
             {tc_, "-n", ns_b_, "qdisc", "add", "dev", dev_b_, "root", "tbf", "rate", kRate,
              "burst", "256kb", "latency", "100ms"}}) {
      CliResult r = RunCommand(cmd);
      ASSERT_EQ(r.exit_code, 0) << cmd[0] << " " << cmd[1] << " " << cmd[2] << ": " << r.out;
    }
  }

  void TearDown() override {
    a_.reset();
    b_.reset();
    if (created_) {
      RunCommand({ip_, "netns", "del", ns_a_});
      RunCommand({ip_, "netns", "del", ns_b_});
    }
  }

  CliResult InA(std::vector<std::string> args) {
    std::vector<std::string> argv = {ip_, "netns", "exec", ns_a_, Ferry()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }
  CliResult InB(std::vector<std::string> args) {
    std::vector<std::string> argv = {ip_, "netns", "exec", ns_b_, Ferry()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  std::string ns_a_, ns_b_, dev_a_, dev_b_, ip_, tc_;
  bool created_ = false;
  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(TwoHosts, MigratesAcrossAShapedLink) {
  // Reachable from the other "host": the pool's token, and plaintext on
  // this private link said explicitly (--insecure).
  const std::vector<std::string> flags = {"--migration-token", "netns-pool", "--insecure"};
  auto a = agent::AgentProcess::Start({ip_, "netns", "exec", ns_a_, Ferryd()}, "10.251.0.1:0",
                                      flags, TempDir() + "/netns-a.log");
  auto b = agent::AgentProcess::Start({ip_, "netns", "exec", ns_b_, Ferryd()}, "10.251.0.2:0",
                                      flags, TempDir() + "/netns-b.log");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
  b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  EXPECT_THAT(a_->address(), HasSubstr("10.251.0.1:"));

  CliResult r = InA({"vm", "create", "web", "--agent", a_->address(), "--memory", "32M",
                     "--workload", "zipf", "--zero-fraction", "0.2"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // The source host cannot reach the destination by loopback: only over the link.
  r = InA({"migrate", "web", "--from", a_->address(), "--to", b_->address(), "--mode",
           "hybrid", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\"outcome\":\"completed\""));
  // 32 MiB, most of it non-zero, cannot cross a 200 Mbit/s link in under a second.
  const size_t at = r.out.find("\"total_ms\":");
  ASSERT_NE(at, std::string::npos);
  const double total_ms = std::stod(r.out.substr(at + 11));
  EXPECT_GT(total_ms, 1000) << "the link was not shaped: " << r.out;
  r = InB({"vm", "verify", "web", "--agent", b_->address()});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("MATCH"));
  EXPECT_EQ(InA({"vm", "get", "web", "--agent", a_->address()}).exit_code, 4);
}

}  // namespace
}  // namespace ferry::e2e
