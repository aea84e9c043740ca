#include "migration/agent/vmm_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/errno_status.h"
#include "base/file.h"
#include "base/status_macros.h"

namespace ferry::agent {

std::string VmmDir(const std::string& state_dir, const std::string& key) {
  return absl::StrCat(state_dir, "/vmm/", key);
}

std::string VmmRunDir(const std::string& vmm_dir) { return vmm_dir + "/run"; }

std::string ControlSocket(const std::string& vmm_dir) {
  struct stat st{};
  if (stat(VmmRunDir(vmm_dir).c_str(), &st) != 0 && stat((vmm_dir + "/control").c_str(), &st) == 0)
    return vmm_dir + "/control";
  return VmmRunDir(vmm_dir) + "/control";
}

std::string NewVmmKey(const std::string& name) {
  std::random_device rd;
  return absl::StrFormat("%s.%08x", name, rd());
}

absl::Status WriteRecord(const std::string& vmm_dir, const VmmRecord& r) {
  const std::string text = absl::StrFormat(
      "key=%s\nname=%s\nrole=%s\nmigration_id=%s\npid=%d\nmigration_port=%d\nfetch_port=%d\n"
      "memory_bytes=%d\nmax_memory_bytes=%d\nstarted_unix_ms=%d\n",
      r.key, r.name, r.role, r.migration_id, r.pid, r.migration_port, r.fetch_port, r.memory_bytes,
      r.max_memory_bytes, r.started_unix_ms);
  const std::string tmp = vmm_dir + "/record.tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", tmp), errno);
  const bool ok =
      write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && fsync(fd) == 0;
  const int err = errno;
  close(fd);
  if (!ok) return ErrnoStatus(absl::StrCat("write ", tmp), err);
  if (rename(tmp.c_str(), (vmm_dir + "/record").c_str()) != 0)
    return ErrnoStatus(absl::StrCat("rename ", tmp), errno);
  return absl::OkStatus();
}

absl::StatusOr<VmmRecord> ReadRecord(const std::string& vmm_dir) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(vmm_dir + "/record"));
  if (text.size() > 4096)
    return absl::DataLossError(absl::StrCat(vmm_dir, "/record is ", text.size(), " bytes"));
  VmmRecord r;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    const std::string& k = kv.first;
    const std::string& v = kv.second;
    bool ok = true;
    int64_t n = 0;
    if (k == "key")
      r.key = v;
    else if (k == "name")
      r.name = v;
    else if (k == "role")
      r.role = v;
    else if (k == "migration_id")
      r.migration_id = v;
    else if (k == "pid")
      ok = absl::SimpleAtoi(v, &n) && n > 0 && (r.pid = n, true);
    else if (k == "migration_port")
      ok = absl::SimpleAtoi(v, &r.migration_port);
    else if (k == "fetch_port")
      ok = absl::SimpleAtoi(v, &r.fetch_port);
    else if (k == "memory_bytes")
      ok = absl::SimpleAtoi(v, &r.memory_bytes);
    else if (k == "max_memory_bytes")
      ok = absl::SimpleAtoi(v, &r.max_memory_bytes);
    else if (k == "started_unix_ms")
      ok = absl::SimpleAtoi(v, &r.started_unix_ms);
    if (!ok) return absl::DataLossError(absl::StrCat(vmm_dir, "/record: bad line '", line, "'"));
  }
  if (r.key.empty() || r.name.empty() || r.pid <= 0 || r.migration_port <= 0 ||
      r.migration_port > 65535)
    return absl::DataLossError(absl::StrCat(vmm_dir, "/record is incomplete"));
  return r;
}

absl::StatusOr<std::vector<std::string>> ListVmmDirs(const std::string& state_dir) {
  std::vector<std::string> out;
  const std::string root = state_dir + "/vmm";
  DIR* d = opendir(root.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return ErrnoStatus(absl::StrCat("opendir ", root), errno);
  }
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    out.push_back(root + "/" + n);
  }
  closedir(d);
  return out;
}

void RemoveVmmDir(const std::string& vmm_dir) {
  const std::string run = VmmRunDir(vmm_dir);
  unlink((run + "/control").c_str());
  if (rmdir(run.c_str()) != 0 && errno != ENOENT) return;
  std::error_code ec;
  std::filesystem::remove_all(vmm_dir, ec);
}

bool IsOurVmm(pid_t pid, const std::string& dir) {
  auto cmdline = ReadFileToString(absl::StrCat("/proc/", pid, "/cmdline"));
  if (!cmdline.ok()) return false;
  return absl::StrContains(*cmdline, "ferry-vmm") && absl::StrContains(*cmdline, dir);
}

void EndStateDir(const std::string& state_dir, absl::Duration grace) {
  // The processes still running for this directory (their records stay
  // after they exit: only a running ferryd removes them).
  auto running = [&] {
    std::vector<pid_t> pids;
    if (auto dirs = ListVmmDirs(state_dir); dirs.ok())
      for (const std::string& d : *dirs)
        if (auto r = ReadRecord(d); r.ok() && r->pid > 0 && IsOurVmm(r->pid, d))
          pids.push_back(r->pid);
    return pids;
  };
  const absl::Time give_up = absl::Now() + grace;
  while (!running().empty() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(50));
  for (pid_t pid : running()) kill(pid, SIGKILL);
  RemoveVmmDir(state_dir);
}

std::string FindFerryVmm() {
  if (const char* e = getenv("FERRY_VMM"); e != nullptr && *e) return e;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = 0;
    std::string dir(self);
    dir = dir.substr(0, dir.rfind('/'));
    const std::string next = dir + "/ferry-vmm";
    if (access(next.c_str(), X_OK) == 0) return next;
  }
  return "ferry-vmm";
}

std::string ReadyLine(pid_t pid, int migration_port, int fetch_port) {
  return absl::StrFormat("ferry-vmm: ready pid %d migration %d fetch %d\n", pid, migration_port,
                         fetch_port);
}

absl::Status ParseReadyLine(const std::string& line, VmmRecord* record) {
  int pid = 0, m = 0, f = 0;
  if (std::sscanf(line.c_str(), "ferry-vmm: ready pid %d migration %d fetch %d", &pid, &m, &f) !=
          3 ||
      pid <= 0 || m <= 0 || m > 65535 || f <= 0 || f > 65535)
    return absl::InternalError(absl::StrCat("ferry-vmm printed '", line, "', not its ready line"));
  record->pid = pid;
  record->migration_port = m;
  record->fetch_port = f;
  return absl::OkStatus();
}

namespace {

std::string LogTail(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok() || text->empty()) return "(its log is empty)";
  std::string t = *text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  if (t.size() > 600) t = "..." + t.substr(t.size() - 600);
  return t;
}

}  // namespace

absl::StatusOr<VmmRecord> LaunchVmm(const VmmLaunch& launch, int timeout_ms) {
  VmmRecord record = launch.record;
  const std::string dir = VmmDir(launch.state_dir, record.key);
  if (mkdir((launch.state_dir + "/vmm").c_str(), 0700) != 0 && errno != EEXIST)
    return ErrnoStatus(absl::StrCat("mkdir ", launch.state_dir, "/vmm"), errno);
  if (mkdir(dir.c_str(), 0700) != 0) return ErrnoStatus(absl::StrCat("mkdir ", dir), errno);
  const std::string socket = ControlSocket(dir);
  if (socket.size() >= 108) {
    RemoveVmmDir(dir);
    return absl::InvalidArgumentError(absl::StrFormat(
        "the state directory's path is too long for a Unix socket (%s is %d bytes, at most "
        "107): choose a shorter --state-dir",
        socket, socket.size()));
  }
  std::vector<std::string> argv = {
      launch.binary,
      "--dir",
      dir,
      "--name",
      record.name,
      "--listen-host",
      launch.listen_host,
      "--migration-port",
      absl::StrCat(record.migration_port),
      "--fetch-port",
      absl::StrCat(record.fetch_port),
      "--max-memory",
      absl::StrCat(std::max(record.memory_bytes, record.max_memory_bytes), "B"),
      "--token-stdin"};
  if (!launch.fetch_advertise_host.empty()) {
    argv.push_back("--fetch-advertise");
    argv.push_back(launch.fetch_advertise_host);
  }
  argv.insert(argv.end(), launch.args.begin(), launch.args.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return ErrnoStatus("pipe2", errno);
  }
  const std::string log = dir + "/log";
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) return ErrnoStatus(absl::StrCat("open ", log), errno);
  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork", errno);
  if (pid == 0) {
    // The child: only async-signal-safe calls until execv.
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(log_fd, 2);
    execv(cargv[0], cargv.data());
    static const char kMsg[] = "ferry-vmm: cannot execute the binary\n";
    (void)!write(2, kMsg, sizeof(kMsg) - 1);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(log_fd);
  const std::string token = launch.migration_token + "\n";
  (void)!write(in[1], token.data(), token.size());
  close(in[1]);

  auto fail = [&](absl::Status why) -> absl::Status {
    close(out[0]);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    std::string tail = LogTail(log);
    RemoveVmmDir(dir);
    return absl::Status(why.code(), absl::StrCat(why.message(), ": ", tail));
  };
  std::string line;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  while (line.find('\n') == std::string::npos) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0)
      return fail(absl::DeadlineExceededError(
          absl::StrFormat("ferry-vmm (%s) was not ready within %d ms", launch.binary, timeout_ms)));
    pollfd p{out[0], POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[256];
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n <= 0)
      return fail(
          absl::UnavailableError(absl::StrFormat("ferry-vmm (%s) exited at start", launch.binary)));
    line.append(buf, n);
    if (line.size() > 1024) return fail(absl::InternalError("ferry-vmm's ready line is too long"));
  }
  close(out[0]);
  out[0] = -1;
  line = line.substr(0, line.find('\n'));
  if (absl::Status s = ParseReadyLine(line, &record); !s.ok()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    RemoveVmmDir(dir);
    return s;
  }
  if (record.pid != pid) record.pid = pid;
  record.started_unix_ms = absl::ToUnixMillis(absl::Now());
  if (absl::Status s = WriteRecord(dir, record); !s.ok()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    RemoveVmmDir(dir);
    return s;
  }
  return record;
}

absl::Status SetThreadNiceOf(pid_t pid, const std::string& thread_name, int nice) {
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return ErrnoStatus(absl::StrCat("opendir ", tasks), errno);
  absl::Status result = absl::NotFoundError(
      absl::StrCat("process ", pid, " has no thread named ", thread_name));
  while (const dirent* e = readdir(dir)) {
    int tid = 0;
    if (!absl::SimpleAtoi(e->d_name, &tid)) continue;
    absl::StatusOr<std::string> comm = ReadFileToString(absl::StrCat(tasks, "/", tid, "/comm"));
    if (!comm.ok() || absl::StripTrailingAsciiWhitespace(*comm) != thread_name) continue;
    result = setpriority(PRIO_PROCESS, static_cast<id_t>(tid), nice) == 0
                 ? absl::OkStatus()
                 : ErrnoStatus(absl::StrCat("setpriority of thread ", tid), errno);
    break;
  }
  closedir(dir);
  return result;
}

}  // namespace ferry::agent
