#include "migration/agent/agent_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"

namespace ferry::agent {

std::string FindFerryd() {
  if (const char* env = getenv("FERRYD"); env != nullptr && *env) return env;
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    dir = dir.substr(0, dir.rfind('/'));
    for (const std::string& candidate :
         {dir + "/../agent/ferryd", dir + "/../migration/agent/ferryd", dir + "/ferryd"})
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "ferryd";
}

absl::StatusOr<AgentProcess> AgentProcess::Start(const std::string& ferryd,
                                                 const std::vector<std::string>& extra_args,
                                                 const std::string& log_path) {
  return Start(std::vector<std::string>{ferryd}, "127.0.0.1:0", extra_args, log_path);
}

absl::StatusOr<AgentProcess> AgentProcess::Start(const std::vector<std::string>& command,
                                                 const std::string& listen,
                                                 const std::vector<std::string>& extra_args,
                                                 const std::string& log_path, bool own_session) {
  const std::string& ferryd = command.back();
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return ErrnoStatus(absl::StrCat("open ", log_path), errno);
  std::vector<std::string> argv_s = command;
  argv_s.push_back("--listen");
  argv_s.push_back(listen);
  argv_s.insert(argv_s.end(), extra_args.begin(), extra_args.end());
  if (std::find(extra_args.begin(), extra_args.end(), "--state-dir") == extra_args.end() &&
      std::find(extra_args.begin(), extra_args.end(), "--in-process") == extra_args.end())
    argv_s.push_back("--in-process");
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork", errno);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    if (own_session) setsid();
    dup2(out[1], 1);
    dup2(log, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(log);
  // Its first line names the ports.
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  char c;
  while (line.find('\n') == std::string::npos) {
    pollfd p{out[0], POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (left <= 0 || poll(&p, 1, left) <= 0) break;
    if (read(out[0], &c, 1) != 1) break;
    line += c;
  }
  close(out[0]);
  const std::string key = "listening on ";
  size_t at = line.find(key);
  if (at == std::string::npos || line.find(' ', at + key.size()) == std::string::npos) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return absl::UnavailableError(absl::StrCat(
        "ferryd (", ferryd, ") did not start; see ", log_path,
        " (set FERRYD to its path if it is not found)"));
  }
  const size_t begin = at + key.size();
  return AgentProcess(pid, line.substr(begin, line.find(' ', begin) - begin));
}

AgentProcess::AgentProcess(AgentProcess&& other) noexcept
    : pid_(other.pid_), address_(std::move(other.address_)), status_(other.status_) {
  other.pid_ = -1;
}

AgentProcess::~AgentProcess() { Stop(); }

bool AgentProcess::Signal(int signal) { return pid_ > 0 && kill(pid_, signal) == 0; }

std::optional<int> AgentProcess::Wait(int timeout_ms) {
  if (pid_ <= 0) return status_;
  for (int waited = 0;; waited += 10) {
    if (waitpid(pid_, &status_, WNOHANG) == pid_) {
      pid_ = -1;
      return status_;
    }
    if (waited >= timeout_ms) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int AgentProcess::Stop(int timeout_ms) {
  if (pid_ <= 0) return status_;
  kill(pid_, SIGTERM);
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    if (waitpid(pid_, &status_, WNOHANG) == pid_) {
      pid_ = -1;
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status_, 0);
  pid_ = -1;
  return status_;
}

}  // namespace ferry::agent
