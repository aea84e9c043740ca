// Soak: migrations back and forth between two real agents leave nothing
// behind. After a warm-up, each agent's file descriptors and threads are
// what they were, and its resident memory stays within a bound: what the
// retained records of ended migrations cost (at most --keep-finished
// reports at the source, 64 ended sessions at the destination), not a leak
// per migration. The VM's memory is checked by digest at the end.
//
// FERRY_SOAK_MIGRATIONS sets how many migrations (default 30; the long run,
// `./dev test-long`, makes 200).
#include <dirent.h>

#include <cstdlib>
#include <iostream>
#include <tuple>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

struct Usage {
  int fds = 0;
  int threads = 0;
  int64_t rss_kib = 0;
};

int CountEntries(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

Usage UsageOf(int pid) {
  Usage u;
  const std::string proc = absl::StrCat("/proc/", pid);
  u.fds = CountEntries(proc + "/fd");
  u.threads = CountEntries(proc + "/task");
  std::ifstream status(proc + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) u.rss_kib = std::stoll(line.substr(6));
  return u;
}

TEST(Soak, MigrationsBackAndForthLeaveNothingBehind) {
  const char* env = std::getenv("FERRY_SOAK_MIGRATIONS");
  const int total = env ? std::max(20, std::atoi(env)) : 30;
  constexpr int kWarmUp = 10;
  auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/soak-a.log");
  auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/soak-b.log");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  auto sa = Stub(a->address()), sb = Stub(b->address());
  CreateVm(*sa, VmRequest("soak", "zipf", 16ull << 20));
  Usage warm_a, warm_b;
  std::string from = a->address(), to = b->address();
  for (int i = 1; i <= total; ++i) {
    const char* mode = i % 2 ? "postcopy" : "hybrid";
    CliResult r = RunCli({"migrate", "soak", "--from", from, "--to", to, "--mode", mode});
    ASSERT_EQ(r.exit_code, 0) << "migration " << i << ": " << r.out;
    std::swap(from, to);
    if (i == kWarmUp) {
      warm_a = UsageOf(a->pid());
      warm_b = UsageOf(b->pid());
    }
  }
  const Usage end_a = UsageOf(a->pid()), end_b = UsageOf(b->pid());
  EXPECT_TRUE(VerifyVm(from == a->address() ? *sa : *sb, "soak")) << "the VM's memory";
  for (const auto& [name, warm, end] :
       {std::tuple{"a", warm_a, end_a}, std::tuple{"b", warm_b, end_b}}) {
    SCOPED_TRACE(name);
    // The VM lives on one agent or the other, so a few descriptors (its
    // userfaultfd, eventfds) and threads (its vCPUs) come and go with it.
    EXPECT_LE(end.fds, warm.fds + 4) << "file descriptors leak";
    EXPECT_LE(end.threads, warm.threads + 4) << "threads leak";
    // Bounded by the retained records, whatever the number of migrations.
    EXPECT_LE(end.rss_kib, warm.rss_kib + (160 << 10)) << "resident memory keeps growing";
    std::cout << name << ": after " << kWarmUp << " migrations " << warm.fds << " fds, "
              << warm.threads << " threads, " << warm.rss_kib / 1024 << " MiB; after " << total
              << ": " << end.fds << " fds, " << end.threads << " threads, "
              << end.rss_kib / 1024 << " MiB\n";
  }
}

}  // namespace
}  // namespace ferry::e2e
