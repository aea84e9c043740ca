#include "bench/compare_run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/errno_status.h"
#include "base/file.h"
#include "base/status_macros.h"

extern char** environ;

namespace ferry::bench {

std::vector<std::vector<std::string>> DefaultCompareScenarios() {
  return {
      {"reference", "--tcp-bytes", "256M", "--rtt-samples", "5000"},
      {"migrate", "--memory", "512M", "--workload", "idle", "--mode", "precopy"},
      {"migrate", "--memory", "256M", "--workload", "uniform", "--mode", "postcopy"},
  };
}

absl::Status CheckBuildDir(const std::string& dir) {
  std::vector<std::string> missing;
  for (const char* name : {"ferry-bench", "ferryd", "ferry-vmm"})
    if (access(absl::StrCat(dir, "/", name).c_str(), X_OK) != 0) missing.push_back(name);
  if (missing.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(dir, " is no build directory: no executable ",
                                                 absl::StrJoin(missing, ", "),
                                                 " in it (`./dev bench-snapshot DIR` makes one)"));
}

std::string BuildLabel(const std::string& dir) {
  auto text = ReadFileToString(absl::StrCat(dir, "/build.txt"));
  if (!text.ok()) return "";
  return std::string(absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
}

namespace {

// The last `lines` lines of `text`.
std::string Tail(const std::string& text, int lines) {
  size_t at = text.size();
  if (at > 0 && text[at - 1] == '\n') --at;
  for (int i = 0; i < lines && at != std::string::npos && at > 0; ++i)
    at = text.rfind('\n', at - 1);
  return at == std::string::npos ? text : text.substr(at + 1);
}

// Runs DIR/ferry-bench `args` with the build's agents in its environment;
// returns what it printed on stdout. Its stderr goes to a temporary file
// whose end is quoted in the error when the run fails.
absl::StatusOr<std::string> RunBench(const std::string& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv_s = {absl::StrCat(dir, "/ferry-bench")};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e)
    if (!absl::StartsWith(*e, "FERRYD=") && !absl::StartsWith(*e, "FERRY_VMM="))
      env_s.push_back(*e);
  env_s.push_back(absl::StrCat("FERRYD=", dir, "/ferryd"));
  env_s.push_back(absl::StrCat("FERRY_VMM=", dir, "/ferry-vmm"));
  std::vector<char*> argv, envp;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  char err_path[] = "/tmp/ferry-bench-compare-XXXXXX";
  const int err = mkostemp(err_path, O_CLOEXEC);
  if (err < 0) return ErrnoStatus("mkostemp", errno);
  unlink(err_path);  // read back through `err`
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(err);
    return ErrnoStatus("pipe2", errno);
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(err);
    close(out[0]);
    close(out[1]);
    return ErrnoStatus("fork", errno);
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    dup2(out[1], 1);
    dup2(err, 2);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(out[1]);

  std::string output;
  bool timed_out = false;
  const absl::Time deadline = absl::Now() + kRunTimeout;
  char buf[65536];
  for (;;) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd p{out[0], POLLIN, 0};
    const int ready =
        left > 0 ? poll(&p, 1, static_cast<int>(std::min<int64_t>(left, INT_MAX))) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::string err_text;
  lseek(err, 0, SEEK_SET);
  for (ssize_t n; (n = read(err, buf, sizeof(buf))) > 0;) err_text.append(buf, n);
  close(err);

  const std::string command = absl::StrJoin(argv_s, " ");
  if (timed_out)
    return absl::DeadlineExceededError(absl::StrCat(command, " did not end within ",
                                                    absl::FormatDuration(kRunTimeout),
                                                    "; its stderr:\n", Tail(err_text, 20)));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return absl::AbortedError(absl::StrCat(command, " failed (",
                                           WIFEXITED(status)
                                               ? absl::StrCat("exit status ", WEXITSTATUS(status))
                                               : absl::StrCat("signal ", WTERMSIG(status)),
                                           "); its stderr:\n", Tail(err_text, 20)));
  return output;
}

}  // namespace

absl::StatusOr<std::vector<ScenarioComparison>> RunCompare(const CompareOptions& o) {
  // Absolute: the children's FERRYD and FERRY_VMM hold these paths.
  std::string dirs[2] = {o.old_dir, o.new_dir};
  const char* names[2] = {"old", "new"};
  for (std::string& dir : dirs) {
    char resolved[PATH_MAX];
    if (realpath(dir.c_str(), resolved) == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("build directory ", dir, ": not found"));
    dir = resolved;
    RETURN_IF_ERROR(CheckBuildDir(dir));
  }
  std::vector<std::vector<std::string>> commands = o.scenarios;
  for (auto& c : commands)
    if (std::find(c.begin(), c.end(), "--json") == c.end()) c.push_back("--json");
  // runs[s][b][i]: scenario s, build b (0 old, 1 new), repetition i.
  std::vector<std::vector<std::vector<RunFigures>>> runs(commands.size(),
                                                         std::vector<std::vector<RunFigures>>(2));
  const int total = o.repeat * static_cast<int>(commands.size()) * 2;
  int done = 0;
  for (int i = 0; i < o.repeat; ++i) {
    for (size_t s = 0; s < commands.size(); ++s) {
      for (int k = 0; k < 2; ++k) {
        const int b = i % 2 == 0 ? k : 1 - k;
        const std::string command = absl::StrJoin(commands[s], " ");
        const absl::Time t0 = absl::Now();
        ASSIGN_OR_RETURN(std::string output, RunBench(dirs[b], commands[s]));
        auto figures = ParseRunOutput(output);
        if (!figures.ok())
          return absl::AbortedError(
              absl::StrCat(dirs[b], "/ferry-bench ", command, ": ", figures.status().message()));
        if (figures->empty())
          return absl::AbortedError(
              absl::StrCat(dirs[b], "/ferry-bench ", command, " printed no JSON object on stdout"));
        runs[s][b].push_back(*std::move(figures));
        std::fprintf(stderr, "[%d/%d] %s: %s (%.1f s)\n", ++done, total, names[b], command.c_str(),
                     absl::ToDoubleSeconds(absl::Now() - t0));
      }
    }
  }
  std::vector<ScenarioComparison> result;
  for (size_t s = 0; s < commands.size(); ++s)
    result.push_back(
        {absl::StrJoin(commands[s], " "), CompareRuns(runs[s][0], runs[s][1], o.tolerance)});
  return result;
}

}  // namespace ferry::bench
