// ferry-vmm processes as ferryd's supervisor sees them: their records in
// the state directory, and starting one.
//
// State directory layout (ferryd --state-dir, mode 0700):
//   DIR/vmm/KEY/record    the process's record (below), mode 0600
//   DIR/vmm/KEY/control   its ferry.v1.Control Unix socket, mode 0600
//   DIR/vmm/KEY/log       its log (stderr)
// KEY is the VM's name, a dot, and 8 random hex digits. A record holds no
// secret: the migration token reaches the process on its stdin.
#ifndef FERRY_MIGRATION_AGENT_VMM_PROCESS_H_
#define FERRY_MIGRATION_AGENT_VMM_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ferry::agent {

// One ferry-vmm process: why it was started and where it listens.
struct VmmRecord {
  std::string key;
  std::string name;          // its VM's
  std::string role;          // "created", "restored" or "incoming"
  std::string migration_id;  // incoming: the migration that brings the VM
  pid_t pid = 0;
  int migration_port = 0;  // ferry.v1.Migration (TCP, ferryd's listen host)
  int fetch_port = 0;      // its page server
  // The guest memory admitted for it now (its memory map's size: a memory
  // change rewrites the record), and the most it may grow to, which is
  // the process's own --max-memory (0, in a record from before: as
  // memory_bytes).
  uint64_t memory_bytes = 0;
  uint64_t max_memory_bytes = 0;
  int64_t started_unix_ms = 0;
};

// DIR/vmm/KEY.
std::string VmmDir(const std::string& state_dir, const std::string& key);
// DIR/vmm/KEY/run: the one directory the process itself writes (its
// control socket), the --vmm-user's when there is one; the rest of
// DIR/vmm/KEY (record, log) is root's alone.
std::string VmmRunDir(const std::string& vmm_dir);
// DIR/vmm/KEY/run/control (DIR/vmm/KEY/control for a process started by a
// ferryd from before run/).
std::string ControlSocket(const std::string& vmm_dir);
// A new KEY for VM `name`.
std::string NewVmmKey(const std::string& name);

absl::Status WriteRecord(const std::string& vmm_dir, const VmmRecord& record);
absl::StatusOr<VmmRecord> ReadRecord(const std::string& vmm_dir);
// Every DIR/vmm/KEY directory.
absl::StatusOr<std::vector<std::string>> ListVmmDirs(const std::string& state_dir);
// Removes a VMM's directory and what it holds. In run/, which the process
// may own, only the socket is removed by name, never recursively (a
// process could plant links there); if anything else is left in it, the
// directory stays.
void RemoveVmmDir(const std::string& vmm_dir);
// Whether `pid` is a ferry-vmm serving `dir` (a pid of an exited process
// may have been reused).
bool IsOurVmm(pid_t pid, const std::string& dir);
// Ends a state directory made for a while (the demo, ferry-bench, tests:
// VM processes outlive ferryd by design): waits up to `grace` for the
// processes recorded in it (still running as its VMM processes) to exit
// by themselves, SIGKILLs the rest, and removes it.
void EndStateDir(const std::string& state_dir, absl::Duration grace);
// EndStateDir(path, grace) when it goes.
class ScopedStateDir {
 public:
  ScopedStateDir(std::string path, absl::Duration grace) : path_(std::move(path)), grace_(grace) {}
  ~ScopedStateDir() { EndStateDir(path_, grace_); }
  ScopedStateDir(const ScopedStateDir&) = delete;
  ScopedStateDir& operator=(const ScopedStateDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  absl::Duration grace_;
};

struct VmmLaunch {
  std::string binary;  // ferry-vmm
  std::string state_dir;
  VmmRecord record;  // key, name, role, migration_id, ports (0: any), memory
  std::string listen_host;
  std::string fetch_advertise_host;
  std::string migration_token;    // written to its stdin, never to argv
  std::vector<std::string> args;  // more flags (TLS files, limits)
};

// Starts ferry-vmm in a session of its own (a signal to ferryd's process
// group does not reach it), its stderr appended to DIR/vmm/KEY/log, and
// waits up to `timeout_ms` for its ready line; writes and returns its record
// (pid, the ports it bound). On failure the process is killed and its
// directory removed; the error quotes the end of its log.
absl::StatusOr<VmmRecord> LaunchVmm(const VmmLaunch& launch, int timeout_ms = 30000);

// Sets the thread named `thread_name` of process `pid` to nice `nice`
// (setpriority on its tid; needs CAP_SYS_NICE to raise it). ferryd raises a
// new process's page server thread so (kPageServerThreadName), as that
// thread does for itself inside ferryd: the sandboxed process cannot.
// NotFound when no thread has that name.
absl::Status SetThreadNiceOf(pid_t pid, const std::string& thread_name, int nice);

// Where ferry-vmm is: $FERRY_VMM, else next to this executable, else
// "ferry-vmm" on PATH.
std::string FindFerryVmm();

// The ready line ferry-vmm prints on stdout, and its parse.
std::string ReadyLine(pid_t pid, int migration_port, int fetch_port);
absl::Status ParseReadyLine(const std::string& line, VmmRecord* record);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_VMM_PROCESS_H_
