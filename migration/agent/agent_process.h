// AgentProcess: a ferryd child process on loopback, for `ferry demo` and the
// end-to-end tests. It is started with --listen 127.0.0.1:0 and, unless
// its arguments name a --state-dir (or --in-process), --in-process: VMs
// inside ferryd, and no two agents of a host fighting over the default
// state directory. Its ports are
// read from its first line of output, its log goes to a file, and it is
// asked to stop (SIGTERM) when the object goes away; it also dies with its
// parent (PR_SET_PDEATHSIG).
#ifndef FERRY_MIGRATION_AGENT_AGENT_PROCESS_H_
#define FERRY_MIGRATION_AGENT_AGENT_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::agent {

class AgentProcess {
 public:
  // Starts `ferryd` (path) with `extra_args`; its log goes to `log_path`.
  static absl::StatusOr<AgentProcess> Start(const std::string& ferryd,
                                            const std::vector<std::string>& extra_args,
                                            const std::string& log_path);
  // The general form: `command` (e.g. {"ip", "netns", "exec", "ns", ferryd})
  // gets --listen `listen` and `extra_args`. With `own_session` the agent
  // runs in a session of its own (setsid), as an agent started by a service
  // manager does: the scheduler then treats it as its own group where
  // autogroup applies (docs/benchmarks.md, "Processes"), which is what a
  // benchmark of two agents on one host must reproduce.
  static absl::StatusOr<AgentProcess> Start(const std::vector<std::string>& command,
                                            const std::string& listen,
                                            const std::vector<std::string>& extra_args,
                                            const std::string& log_path, bool own_session = false);
  AgentProcess(AgentProcess&& other) noexcept;
  AgentProcess& operator=(AgentProcess&&) = delete;
  ~AgentProcess();

  const std::string& address() const { return address_; }  // HOST:PORT it listens on
  pid_t pid() const { return pid_; }
  // SIGTERM, then waits up to `timeout_ms` (SIGKILL after). Returns the
  // exit status as waitpid gives it; idempotent.
  int Stop(int timeout_ms = 10000);
  // Sends `signal`; false once the process is gone (or was never started).
  bool Signal(int signal);
  // Waits up to `timeout_ms` for the process to exit by itself (no signal):
  // its exit status as waitpid gives it, or nullopt if it still runs.
  std::optional<int> Wait(int timeout_ms);

 private:
  AgentProcess(pid_t pid, std::string address) : pid_(pid), address_(std::move(address)) {}
  pid_t pid_ = -1;
  std::string address_;
  int status_ = 0;
};

// Where ferryd is: $FERRYD, else next to the running binary in the Bazel
// layout (../agent/ferryd from ferry, ../migration/agent/ferryd from
// ferry-bench) or in its directory, else "ferryd" on PATH.
std::string FindFerryd();

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_AGENT_PROCESS_H_
