// ferry-vmm: one VM's process (docs/architecture.md, "Processes"). ferryd
// --state-dir starts one per VM, in a session of its own, and routes the
// VM's Control calls to it; it outlives ferryd's restarts.
//
// It hosts an Agent limited to one VM: the guest memory and vCPUs, the
// VM's outgoing migration with its page server, or the incoming migration
// that brings the VM here. It serves:
//   - ferry.v1.Control on DIR/control, a Unix socket only its owner reaches
//     (ferryd authorizes callers before it routes a call here);
//   - ferry.v1.Migration on --listen-host:--migration-port (TLS as ferryd);
//   - the fetch channel on --listen-host:--fetch-port.
// When it listens it prints ReadyLine (vmm_process.h) on stdout. The
// migration token comes on stdin (--token-stdin), never in argv or in the
// state directory. It sandboxes itself first thing (--no-sandbox: not, for
// debugging by hand), as --user USER if given (ferryd --vmm-user). SIGTERM: it stops serving and
// exits (its VM with it); ferryd sends it when the VM is deleted or has left.
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/args.h"
#include "base/errno_status.h"
#include "base/log_line.h"
#include "base/net.h"
#include "base/process.h"
#include "base/sandbox.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "migration/agent/agent.h"
#include "migration/agent/control_service.h"
#include "migration/agent/peer_tls.h"
#include "migration/agent/vmm_process.h"
#include "migration/protocol.h"
#include "migration/send_path.h"
#include "sys/kvm.h"
#include "sys/pagemap_scan.h"
#include "sys/userfaultfd.h"

namespace ferry::agent {
namespace {

LogLevel min_level = LogLevel::kInfo;

void Log(const std::string& line) {
  if (LevelOfLine(line) >= min_level) std::cerr << line << std::endl;
}

struct VmmUser {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;  // its supplementary groups (kvm, for /dev/kvm)
};

// What running as `user` needs done as root first: the user's ids and
// groups; /dev/userfaultfd, /dev/kvm and /proc/self/pagemap opened and kept (the
// device is root's by default, and a non-dumpable process's /proc files are
// root's; pagemap is opened with no effective capability, so that it never
// shows physical frame numbers); its run directory `run` made the user's
// (it creates its control socket there) and made the working directory:
// the directories above stay root's 0700, closed to the user.
absl::StatusOr<VmmUser> PrepareUser(const std::string& user, const std::string& run) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("--user ", user, ": no such user"));
  VmmUser u{pw.pw_uid, pw.pw_gid, {}};
  int n = 64;
  std::vector<gid_t> groups(n);
  if (getgrouplist(user.c_str(), u.gid, groups.data(), &n) < 0) {
    groups.resize(n);
    if (getgrouplist(user.c_str(), u.gid, groups.data(), &n) < 0)
      return absl::InternalError(absl::StrCat("--user ", user, ": cannot list its groups"));
  }
  groups.resize(n);
  u.groups = std::move(groups);
  if (absl::Status s = sys::Userfaultfd::HoldDevice(); !s.ok())
    return absl::Status(s.code(),
                        absl::StrCat("--user needs /dev/userfaultfd (Linux 6.1+): ", s.message()));
  RETURN_IF_ERROR(WithoutEffectiveCapabilities([] { return sys::PagemapScan::Hold(); }));
  // /dev/kvm too, where this host has one: the user need not be in group
  // kvm. Without it, KVM VMs fail to create with the reason, as anywhere.
  (void)sys::Kvm::HoldDevice();
  if (chown(run.c_str(), u.uid, u.gid) != 0) return ErrnoStatus(absl::StrCat("chown ", run), errno);
  if (chdir(run.c_str()) != 0) return ErrnoStatus(absl::StrCat("chdir ", run), errno);
  return u;
}

absl::Status Main(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1, {"token-stdin", "no-sandbox"}));
  const std::string dir = args.String("dir", "");
  const std::string name = args.String("name", "");
  const std::string host = args.String("listen-host", "127.0.0.1");
  ASSIGN_OR_RETURN(int64_t migration_port, args.Int("migration-port", 0));
  ASSIGN_OR_RETURN(int64_t fetch_port, args.Int("fetch-port", 0));
  AgentOptions o;
  o.fetch_advertise_host = args.String("fetch-advertise", "");
  ASSIGN_OR_RETURN(o.max_memory, args.Bytes("max-memory", 64ull << 30));
  ASSIGN_OR_RETURN(int64_t fault_handlers, args.Int("fault-handlers", 0));
  ASSIGN_OR_RETURN(int64_t keep_s, args.Int("keep-finished-s", 3600));
  ASSIGN_OR_RETURN(min_level, ParseLogLevel(args.String("log-level", "info"), "--log-level"));
  const std::string cert_file = args.String("tls-cert", "");
  const std::string key_file = args.String("tls-key", "");
  const std::string ca_file = args.String("tls-ca", "");
  const bool token_stdin = args.Bool("token-stdin");
  const bool sandbox = !args.Bool("no-sandbox");
  const std::string user = args.String("user", "");
  RETURN_IF_ERROR(args.Finish());
  if (dir.empty() || name.empty())
    return absl::InvalidArgumentError("ferry-vmm is started by ferryd: --dir and --name needed");
  if (migration_port < 0 || migration_port > 65535 || fetch_port < 0 || fetch_port > 65535)
    return absl::InvalidArgumentError("a port is not in [0, 65535]");
  if (fault_handlers < 0 || fault_handlers > 256)
    return absl::InvalidArgumentError("--fault-handlers must be 0 to 256");
  if (!user.empty() && !sandbox)
    return absl::InvalidArgumentError("--user is part of the sandbox: not with --no-sandbox");
  // Its run directory, made while it may still create it (root's 0700
  // directory above; the filter has no mkdir).
  const std::string run = VmmRunDir(dir);
  if (mkdir(run.c_str(), 0700) != 0 && errno != EEXIST)
    return ErrnoStatus(absl::StrCat("mkdir ", run), errno);
  if (token_stdin) std::getline(std::cin, o.migration_token);
  // Read while the files are readable: as --user they may not be.
  ASSIGN_OR_RETURN(AgentTlsPem tls_pem, ReadAgentTls(cert_file, key_file, ca_file));
  // The sandbox while the process has one thread (base/sandbox.h): every
  // capability dropped, no new privileges, not dumpable, and the seccomp
  // allow list of a VMM (docs/security.md, "The VMM sandbox"). What it
  // needs later (/dev/kvm, /dev/userfaultfd, sockets) root's permission
  // bits still allow; as --user, what the user cannot open is opened first
  // and kept (PrepareUser).
  // How this process's outgoing frames read guest memory: measured now,
  // on a quiet process, not in the first migration (send_path.h).
  (void)migration::ChooseSendPath();
  if (sandbox) {
    SandboxOptions sb;
    sb.seccomp = VmmPolicy();
    sb.non_dumpable = true;
    if (!user.empty()) {
      ASSIGN_OR_RETURN(VmmUser u, PrepareUser(user, run));
      sb.uid = u.uid;
      sb.gid = u.gid;
      sb.groups = u.groups;
    }
    if (absl::Status s = ApplySandbox(sb); !s.ok())
      return absl::Status(s.code(), absl::StrCat("sandbox: ", s.message()));
  }
  const AgentTls tls = MakeAgentTls(tls_pem);
  o.peer_credentials = tls.peer;
  o.fetch_listen = JoinHostPort(host, static_cast<int>(fetch_port));
  o.max_vms = 1;
  o.max_migrations = 1;
  o.fault_handlers = static_cast<int>(fault_handlers);
  o.keep_finished = absl::Seconds(keep_s);
  o.log = [](const std::string& line) { Log(line); };

  ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent, Agent::Start(o));
  // Control: a Unix socket, mode 0600 in a 0700 directory. Its own server,
  // so that the Control API is never served on the TCP port.
  // As --user the directories above its run directory are closed to it:
  // it works from there (PrepareUser made it its cwd), by a relative path.
  const std::string socket = user.empty() ? ControlSocket(dir) : std::string("control");
  unlink(socket.c_str());
  ControlService control(agent.get(), std::nullopt, o.log);
  grpc::ServerBuilder local;
  local.AddListeningPort(absl::StrCat("unix:", socket), grpc::InsecureServerCredentials());
  local.SetMaxSendMessageSize(64 << 20);
  local.RegisterService(&control);
  std::unique_ptr<grpc::Server> local_server = local.BuildAndStart();
  if (local_server == nullptr)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", socket));
  chmod(socket.c_str(), 0600);

  grpc::ServerBuilder remote;
  int port = 0;
  remote.AddListeningPort(JoinHostPort(host, static_cast<int>(migration_port)), tls.server, &port);
  remote.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  migration::ConfigureBulkServer(&remote);
  remote.RegisterService(agent->migration_service());
  std::unique_ptr<grpc::Server> remote_server = remote.BuildAndStart();
  if (remote_server == nullptr || port == 0)
    return absl::UnavailableError(
        absl::StrFormat("cannot listen on %s for migrations: the port is in use",
                        JoinHostPort(host, static_cast<int>(migration_port))));
  agent->set_control_address(JoinHostPort(host, port));
  Log(LogLine(LogLevel::kInfo, "vmm.started")
          .Kv("name", name)
          .Kv("pid", static_cast<int64_t>(getpid()))
          .Kv("migration_port", static_cast<int64_t>(port))
          .Kv("fetch_port", static_cast<int64_t>(agent->fetch_port()))
          .str());
  const std::string ready = ReadyLine(getpid(), port, agent->fetch_port());
  (void)!write(1, ready.data(), ready.size());
  // ferryd reads one line; nothing else goes to stdout.
  freopen("/dev/null", "w", stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  Log(LogLine(LogLevel::kInfo, "vmm.signal").Kv("signal", sig).str());
  agent->BeginShutdown();
  agent->events().Close();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(2);
  remote_server->Shutdown(deadline);
  local_server->Shutdown(deadline);
  agent.reset();
  Log(LogLine(LogLevel::kInfo, "vmm.stopped").str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace ferry::agent

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  ferry::TuneMallocForBulkTransfers();
  absl::Status s = ferry::agent::Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "ferry-vmm: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
