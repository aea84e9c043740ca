// The two-host quickstart of docs/operations.md ("Running agents on two
// hosts"), run as written.
//
// The contract with the doc:
// - A block is a fenced ```sh block on the line after a marker
//   `<!-- quickstart: ROLE -->`; ROLE is operator, copy, host-a or host-b.
//   Blocks run in the doc's order, each as a file by `sh -e` (bounded by
//   `timeout`), with the built ferry and ferryd first on PATH.
// - Host A is 10.0.0.1 and host B 10.0.0.2, as the doc says: the test makes
//   two network namespaces joined by a veth pair holding those addresses,
//   so the commands' addresses are used unchanged and reach nothing else.
// - operator blocks run in host A's namespace with HOME a temp dir; host-a
//   and host-b blocks in their own namespace, where `/etc/ferry` and
//   `/var/log` are replaced by directories of the test's (the only
//   substitutions; a block that still names /etc/ or /var/ fails the test
//   rather than touch this machine).
// - The copy block is not run (it is ssh and scp): each line
//   `scp FILE... root@IP:/etc/ferry/` is done by copying FILEs from the
//   operator's ~/ferry-pki to that host's /etc/ferry; `ssh` lines are skipped.
// - The last operator block must migrate the VM (its report says
//   "completed") and verify it at the destination ("MATCH").
// Agents the blocks start in the background are ended by pid (every process
// left in the test's namespaces: SIGTERM, then SIGKILL after 10 s) and the
// namespaces deleted, on failure too. Skips, saying why, without root or
// where namespaces cannot be created.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kHostA[] = "10.0.0.1";
constexpr char kHostB[] = "10.0.0.2";
// Bounds a hang only, no performance goal: the blocks wait for conditions
// (an agent's start line or exit; the migration's end; verify's replay,
// given 300 s), not for a time.
constexpr char kBlockTimeoutS[] = "600";

struct Block {
  std::string role;
  std::string text;
  int line = 0;  // of the marker, for messages
};

// Every marked block of `doc`, in order.
std::vector<Block> ExtractBlocks(const std::string& doc) {
  std::vector<Block> blocks;
  std::istringstream in(doc);
  std::string line;
  int n = 0;
  const std::string marker = "<!-- quickstart: ";
  while (std::getline(in, line)) {
    ++n;
    if (line.rfind(marker, 0) != 0) continue;
    Block b;
    b.line = n;
    b.role = line.substr(marker.size(), line.find(' ', marker.size()) - marker.size());
    if (!std::getline(in, line) || line != "```sh") {
      b.role = "(marker not followed by ```sh)";
      blocks.push_back(b);
      continue;
    }
    ++n;
    while (std::getline(in, line) && line != "```") {
      ++n;
      b.text += line + "\n";
    }
    ++n;
    blocks.push_back(b);
  }
  return blocks;
}

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

std::string Tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string path = std::string(dir) + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return name;
}

class Quickstart : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string id = std::to_string(getpid() % 100000);
    ns_a_ = "ferry-qa-" + id;
    ns_b_ = "ferry-qb-" + id;
    ip_ = Tool("ip");
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root; running as uid " << geteuid();
    if (RunCommand({"openssl", "version"}).exit_code != 0)
      GTEST_SKIP() << "the openssl tool is not installed: the quickstart makes certificates with it";
    CliResult probe = RunCommand({ip_, "netns", "add", ns_a_});
    if (probe.exit_code != 0)
      GTEST_SKIP() << "cannot create a network namespace here (ip netns add: " << probe.out << ")";
    created_ = true;
    const std::string dev_a = "fqa" + id, dev_b = "fqb" + id;
    for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
             {ip_, "netns", "add", ns_b_},
             {ip_, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b},
             {ip_, "link", "set", dev_a, "netns", ns_a_},
             {ip_, "link", "set", dev_b, "netns", ns_b_},
             {ip_, "-n", ns_a_, "addr", "add", std::string(kHostA) + "/24", "dev", dev_a},
             {ip_, "-n", ns_b_, "addr", "add", std::string(kHostB) + "/24", "dev", dev_b},
             {ip_, "-n", ns_a_, "link", "set", "lo", "up"},
             {ip_, "-n", ns_b_, "link", "set", "lo", "up"},
             {ip_, "-n", ns_a_, "link", "set", dev_a, "up"},
             {ip_, "-n", ns_b_, "link", "set", dev_b, "up"}}) {
      CliResult r = RunCommand(cmd);
      ASSERT_EQ(r.exit_code, 0) << cmd[1] << " " << cmd[2] << " " << cmd[3] << ": " << r.out;
    }
    root_ = TempDir() + "/quickstart";
    fs::remove_all(root_);  // a run by hand may leave one behind
    for (const char* d : {"bin", "operator", "host-a/etc", "host-a/log", "host-b/etc", "host-b/log"})
      fs::create_directories(root_ + "/" + d);
    fs::create_symlink(fs::absolute(Ferry()), root_ + "/bin/ferry");
    fs::create_symlink(fs::absolute(Ferryd()), root_ + "/bin/ferryd");
    // The agents' state directories (/run/ferry in the blocks): short
    // paths, for their Unix sockets.
    char state[] = "/tmp/ferry-qs-XXXXXX";
    ASSERT_NE(mkdtemp(state), nullptr);
    state_ = state;
  }

  void TearDown() override {
    if (!created_) return;
    for (const std::string& ns : {ns_a_, ns_b_}) StopEverythingIn(ns);
    RunCommand({ip_, "netns", "del", ns_a_});
    RunCommand({ip_, "netns", "del", ns_b_});
    if (!state_.empty()) fs::remove_all(state_);
  }

  // Ends the processes left in `ns` (the agents the blocks started), by pid.
  void StopEverythingIn(const std::string& ns) {
    for (int sig : {SIGTERM, SIGKILL}) {
      for (int i = 0; i < 100; ++i) {  // 10 s
        std::istringstream pids(RunCommand({ip_, "netns", "pids", ns}).out);
        bool any = false;
        for (pid_t pid; pids >> pid;) {
          any = true;
          if (i == 0) kill(pid, sig);
        }
        if (!any) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }

  // Runs one block in its host's namespace; returns its output.
  CliResult Run(const Block& b, int index) {
    const bool host_b = b.role == "host-b";
    const std::string ns = host_b ? ns_b_ : ns_a_;
    std::string home = root_ + "/operator";
    std::string text = b.text;
    if (b.role == "host-a" || host_b) {
      home = root_ + "/" + b.role;
      text = ReplaceAll(text, "/etc/ferry", home + "/etc");
      text = ReplaceAll(text, "/var/log", home + "/log");
      text = ReplaceAll(text, "/run/ferry", state_ + "/" + b.role);
    }
    const std::string script = root_ + "/block-" + std::to_string(index) + ".sh";
    std::ofstream(script) << "export HOME='" << home << "' PATH='" << root_
                          << "/bin:/usr/sbin:/usr/bin:/sbin:/bin'\ncd \"$HOME\"\n"
                          << text;
    const std::string rest = ReplaceAll(ReplaceAll(b.text, "/etc/ferry", ""), "/var/log", "");
    if (rest.find("/etc/") != std::string::npos || rest.find("/var/") != std::string::npos)
      return {.exit_code = -1, .out = "the block names /etc/ or /var/ beyond what the test replaces"};
    return RunCommand({"timeout", kBlockTimeoutS, ip_, "netns", "exec", ns, "sh", "-e", script});
  }

  // Does the copy block's scp lines with cp (see the top of the file).
  std::string Copy(const Block& b) {
    std::istringstream lines(b.text);
    std::string errors;
    for (std::string line; std::getline(lines, line);) {
      std::istringstream words(line);
      std::vector<std::string> w;
      for (std::string s; words >> s;) w.push_back(s);
      if (w.empty() || w[0] == "ssh") continue;
      const std::string dst_a = std::string("root@") + kHostA + ":/etc/ferry/";
      const std::string dst_b = std::string("root@") + kHostB + ":/etc/ferry/";
      if (w[0] != "scp" || w.size() < 3 || (w.back() != dst_a && w.back() != dst_b)) {
        errors += "cannot do this copy line: " + line + "\n";
        continue;
      }
      const std::string to = root_ + (w.back() == dst_a ? "/host-a/etc/" : "/host-b/etc/");
      for (size_t i = 1; i + 1 < w.size(); ++i) {
        std::error_code ec;
        fs::copy_file(root_ + "/operator/ferry-pki/" + w[i], to + w[i],
                      fs::copy_options::overwrite_existing, ec);
        if (ec) errors += "copy " + w[i] + ": " + ec.message() + "\n";
      }
    }
    return errors;
  }

  std::string ns_a_, ns_b_, ip_, root_, state_;
  bool created_ = false;
};

TEST_F(Quickstart, RunsAsWrittenBetweenTwoHosts) {
  std::ifstream in(Runfile("docs/operations.md"));
  ASSERT_TRUE(in) << "cannot read docs/operations.md from the runfiles";
  std::stringstream doc;
  doc << in.rdbuf();
  const std::vector<Block> blocks = ExtractBlocks(doc.str());
  ASSERT_GE(blocks.size(), 4u) << "docs/operations.md has too few quickstart blocks";
  std::string last_operator_out;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Block& b = blocks[i];
    SCOPED_TRACE("docs/operations.md:" + std::to_string(b.line) + " (" + b.role + ")");
    if (b.role == "copy") {
      ASSERT_EQ(Copy(b), "");
      continue;
    }
    ASSERT_TRUE(b.role == "operator" || b.role == "host-a" || b.role == "host-b")
        << "unknown quickstart role " << b.role;
    CliResult r = Run(b, i);
    ASSERT_EQ(r.exit_code, 0) << r.out << "\nhost A's log:\n"
                              << RunCommand({"cat", root_ + "/host-a/log/ferryd.log"}).out
                              << "\nhost B's log:\n"
                              << RunCommand({"cat", root_ + "/host-b/log/ferryd.log"}).out;
    if (b.role == "operator") last_operator_out = r.out;
    std::cout << "[block " << b.role << " at line " << b.line << "]\n" << r.out;
  }
  EXPECT_THAT(last_operator_out, HasSubstr(": completed"));
  EXPECT_THAT(last_operator_out, HasSubstr("MATCH"));
  // The agents served TLS with a token, as the doc means them to.
  for (const char* host : {"host-a", "host-b"}) {
    const std::string log = RunCommand({"cat", root_ + "/" + host + "/log/ferryd.log"}).out;
    EXPECT_THAT(log, HasSubstr("tls=mutual")) << host << ":\n" << log;
    EXPECT_THAT(log, HasSubstr("migration_token=set")) << host << ":\n" << log;
    EXPECT_THAT(log, Not(HasSubstr("event=agent.insecure"))) << host << ":\n" << log;
  }
}

}  // namespace
}  // namespace ferry::e2e
