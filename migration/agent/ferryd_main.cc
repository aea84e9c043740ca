// ferryd: the Ferry host agent. See docs/operations.md.
//
//   ferryd --listen 127.0.0.1:7070 --migration-ports 7100-7199
//
// Serves ferry.v1.Control, ferry.v1.Migration and grpc.health.v1 on
// --listen (port 0 picks a free port; the chosen port is printed on one
// line on stdout). Each VM runs in a ferry-vmm process of its own (its
// migration and fetch ports from --migration-ports), unless --in-process:
// then ferryd runs the VMs and the fetch channel on --fetch-listen.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/args.h"
#include "base/config_file.h"
#include "base/file.h"
#include "base/log_line.h"
#include "base/man_page.h"
#include "base/net.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "base/version.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "migration/agent/agent.h"
#include "migration/agent/authz.h"
#include "migration/agent/control_service.h"
#include "migration/agent/metrics_server.h"
#include "migration/agent/migration_router.h"
#include "migration/agent/peer_tls.h"
#include "migration/agent/supervisor.h"
#include "migration/protocol.h"
#include "migration/send_path.h"

namespace ferry::agent {
namespace {

// Where VM processes are recorded unless --state-dir says (or --in-process).
constexpr char kDefaultStateDir[] = "/run/ferry";

constexpr char kUsage[] = R"help(ferryd: the Ferry host agent

usage: ferryd [flags]

  --listen HOST:PORT          gRPC: ferry.v1.Control, ferry.v1.Migration and
                              grpc.health.v1 (default 127.0.0.1:7070; port 0 picks one)
  --fetch-listen HOST:PORT    with --in-process: the fetch channel (default: --listen's
                              host, port 0); VM processes take --migration-ports
  --fetch-advertise HOST      the address destinations dial for the fetch channel
                              (needed when --listen or --fetch-listen binds 0.0.0.0)
  --migration-token TOKEN     required of incoming migrations and sent with outgoing
                              ones (default: $FERRY_MIGRATION_TOKEN, else none)
  --max-vms N                 VMs this agent hosts at most, 1 to 4096 (default 64)
  --fault-handlers N          incoming VMs in blocking fault mode (KVM VMs, or
                              asked for): fault handler threads per VM
                              (default 0: one per two vCPUs)
  --max-memory SIZE           guest memory of all its VMs together (default 64G)
  --max-migrations N          outgoing migrations at once, 1 to 256 (default 4)
  --metrics-listen HOST:PORT  serve Prometheus metrics over HTTP at /metrics
                              (default: none; port 0 picks one); plain HTTP, so a
                              loopback address unless --insecure
  --keep-finished N           finished migrations (with their reports) kept for
                              migration get/list, at most (default 100)
  --keep-finished-s S         and for at most S seconds (default 3600)
  --tls-cert FILE             PEM certificate: serve gRPC over TLS
  --tls-key FILE              its PEM private key
  --tls-ca FILE               PEM CA: require client certificates signed by it (mutual
                              TLS), and verify destinations (with --tls-cert/--tls-key
                              as this agent's client certificate); required with TLS
                              on a --listen address other hosts can reach
  --authz FILE                who may do what: permissions (read, vm, migrate, all)
                              per client certificate common name, and the agents
                              migrations may go to (docs/security.md); needs --tls-ca
  --config FILE               settings, one `flag = value` a line (# comments), e.g.
                              `listen = 10.0.0.1:7070`; flags given win
  --state-dir DIR             where VM processes are recorded (mode 0700; default
                              /run/ferry): each VM runs in a ferry-vmm process of its
                              own, VMs and their migrations outlive ferryd, and a
                              ferryd started again on DIR re-adopts them
                              (docs/operations.md); one ferryd per DIR
  --in-process                run VMs inside ferryd instead (no ferry-vmm, no state
                              directory): they end with it; for tests and one-shot
                              tools
  --migration-ports LO-HI     the ports VM processes listen on for migrations and the
                              fetch channel, two each (default: any free port)
  --vmm-user USER             VM processes run as USER (and its groups), not as
                              root; each opens /dev/kvm before the switch; see
                              docs/security.md, "The VMM sandbox"
  --log-level LEVEL           debug, info, warn or error: the lowest level logged
                              (default info)
  --man                       print this help as the man page ferryd(8)
  --insecure                  allow a --listen address other hosts can reach without
                              TLS, --tls-ca or a migration token, and a --metrics-listen
                              address they can reach (refused otherwise)
  -h, --help                  this help; --version: this build's version

example: ferryd --listen 10.0.0.1:7070 --migration-ports 7100-7199 \
             --migration-token "$(cat /etc/ferry/token)"

SIGTERM or SIGINT: ferryd exits at once; every VM process and its migrations
go on, and the next ferryd re-adopts them.
SIGTERM or SIGINT with --in-process: refuse new work, cancel migrations that have not switched
over (their VMs keep running on this host), wait for migrations past
switchover to complete (paused ones too: they can still be recovered while
ferryd waits), then exit. A second signal exits at once.
)help";

// One structured line (base/log_line.h) per lifecycle event, on stderr.
// --log-level: lines below it are dropped.
LogLevel min_level = LogLevel::kInfo;

void Log(const std::string& line) {
  if (LevelOfLine(line) >= min_level) std::cerr << line << std::endl;
}
void Log(const LogLine& line) { Log(line.str()); }

// ferryd --state-dir: the supervisor of ferry-vmm processes serves Control
// and admits incoming migrations until a signal, then exits and leaves
// every process running.
// The control port could not be bound.
absl::Status ListenError(const std::string& listen) {
  return absl::UnavailableError(absl::StrFormat(
      "cannot listen on %s: the port is in use (another ferryd?) or the host is not an "
      "address of this machine",
      listen));
}

// What agent.started says of the agent's security, and the agent.insecure
// warning: the same lines whichever layout runs the VMs.
struct SecurityFacts {
  std::string cert_file, ca_file;
  bool token = false;
  bool loopback = true;
};

LogLine& AddSecurity(LogLine& line, const SecurityFacts& f) {
  return line.Kv("tls", f.cert_file.empty() ? "off"
                        : f.ca_file.empty() ? "on"
                                            : "mutual")
      .Kv("migration_token", f.token ? "set" : "none");
}

void WarnIfInsecure(const SecurityFacts& f) {
  if (!f.cert_file.empty() && !f.ca_file.empty() && f.token) return;
  Log(LogLine(LogLevel::kWarn, "agent.insecure")
          .Kv("tls", f.cert_file.empty() ? "off"
                     : f.ca_file.empty() ? "server-only"
                                         : "mutual")
          .Kv("migration_token", f.token ? "set" : "none")
          .Kv("detail", f.loopback ? "listening on loopback only"
                                   : "--insecure: reachable from other hosts without mutual "
                                     "TLS or a migration token"));
}

absl::Status RunSupervisor(SupervisorOptions so, const std::string& listen,
                           std::shared_ptr<grpc::ServerCredentials> server_creds,
                           std::optional<AuthzPolicy> policy, const std::string& metrics_listen,
                           const SecurityFacts& security, sigset_t* signals) {
  auto log = so.agent.log;
  const std::string state_dir = so.state_dir;
  ASSIGN_OR_RETURN(std::unique_ptr<Supervisor> supervisor, Supervisor::Start(std::move(so)));
  ControlService control(supervisor.get(), std::move(policy), log);
  MigrationRouter router(supervisor.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, server_creds, &port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // The same connection policy as an agent with its VMs inside: clients'
  // keepalive pings welcome (without it, a `ferry migration watch` gets
  // GOAWAY too_many_pings), message sizes, stream and handshake bounds.
  migration::ConfigureBulkServer(&builder);
  builder.RegisterService(&control);
  builder.RegisterService(&router);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0)
    return ListenError(listen);
  ASSIGN_OR_RETURN(auto hp, SplitHostPort(listen));
  std::unique_ptr<MetricsServer> metrics;
  if (!metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> m = MetricsServer::Start(
        metrics_listen, [raw = supervisor.get()] { return raw->RenderMetrics(); });
    if (!m.ok())
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", metrics_listen, ": ", m.status().message()));
    metrics = std::move(*m);
  }
  std::string metrics_note;
  if (metrics)
    metrics_note =
        absl::StrFormat("; metrics on http://%s/metrics",
                        JoinHostPort(SplitHostPort(metrics_listen)->first, metrics->port()));
  std::printf(
      "ferryd: listening on %s (control, migration, health); fetch channel on %s:0 "
      "(one per VM process)%s\n",
      JoinHostPort(hp.first, port).c_str(), hp.first.c_str(), metrics_note.c_str());
  std::fflush(stdout);
  LogLine started(LogLevel::kInfo, "agent.started");
  started.Kv("version", FerryVersion())
      .Kv("pid", static_cast<int64_t>(getpid()))
      .Kv("grpc", JoinHostPort(hp.first, port))
      .Kv("processes", "one per VM")
      .Kv("state_dir", state_dir)
      .Kv("metrics", metrics ? absl::StrFormat("%d", metrics->port()) : "off");
  Log(AddSecurity(started, security));
  WarnIfInsecure(security);
  int sig = 0;
  sigwait(signals, &sig);
  Log(LogLine(LogLevel::kInfo, "agent.signal").Kv("signal", sig));
  supervisor->events().Close();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  supervisor.reset();
  Log(LogLine(LogLevel::kInfo, "agent.stopped").Kv("detail", "VM processes go on"));
  return absl::OkStatus();
}

absl::Status Main(int argc, char** argv) {
  // Signals go to the one thread that waits for them. Blocked first, before
  // anything (gRPC's credentials included) starts a thread: a thread made
  // earlier would inherit them unblocked, and a SIGTERM that arrived before
  // the wait would take its default action there and kill the agent.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1, {"insecure", "man", "in-process"}));
  if (args.Bool("man")) {
    RETURN_IF_ERROR(args.Finish());
    std::cout << ManPage("ferryd", 8, "the Ferry host agent",
                         {{"SYNOPSIS", "ferryd [flags]"}, {"DESCRIPTION", kUsage},
                          {"ENVIRONMENT", "FERRY_MIGRATION_TOKEN   --migration-token"},
                          {"SEE ALSO", "ferry(1), ferry-bench(1); docs/operations.md"}});
    return absl::OkStatus();
  }
  if (args.Bool("help")) {
    std::cout << kUsage;
    return absl::OkStatus();
  }
  if (args.Bool("version")) {
    std::cout << "ferryd " << FerryVersion() << " (migration protocol "
              << migration::kProtocolVersion << ")\n";
    return absl::OkStatus();
  }
  // --config FILE: `flag = value` lines, each the default of that flag
  // (the command line wins); a key that is no flag is an error.
  const std::string config = args.String("config", "");
  if (args.Has("config")) {
    if (config.empty()) return absl::InvalidArgumentError("--config needs a value");
    ASSIGN_OR_RETURN(std::vector<ConfigSetting> settings, ReadConfigFile(config));
    for (const ConfigSetting& c : settings) {
      if (c.key == "config")
        return absl::InvalidArgumentError(absl::StrCat(c.origin, ": a config file names no other"));
      args.SetDefault(c.key, c.value, c.origin);
    }
  }
  ASSIGN_OR_RETURN(min_level, ParseLogLevel(args.String("log-level", "info"), "--log-level"));
  const std::string listen = args.String("listen", "127.0.0.1:7070");
  if (args.Has("listen") && listen.empty())
    return absl::InvalidArgumentError("--listen needs a value (HOST:PORT)");
  ASSIGN_OR_RETURN(auto listen_hp, SplitHostPort(listen));
  AgentOptions o;
  o.fetch_listen = args.String("fetch-listen", listen_hp.first.find(':') != std::string::npos
                                                   ? "[" + listen_hp.first + "]:0"
                                                   : listen_hp.first + ":0");
  o.fetch_advertise_host = args.String("fetch-advertise", "");
  const char* env_token = getenv("FERRY_MIGRATION_TOKEN");
  o.migration_token = args.String("migration-token", env_token ? env_token : "");
  ASSIGN_OR_RETURN(int64_t max_vms, args.Int("max-vms", 64));
  ASSIGN_OR_RETURN(o.max_memory, args.Bytes("max-memory", 64ull << 30));
  ASSIGN_OR_RETURN(int64_t max_migrations, args.Int("max-migrations", 4));
  ASSIGN_OR_RETURN(int64_t fault_handlers, args.Int("fault-handlers", 0));
  ASSIGN_OR_RETURN(int64_t keep_s, args.Int("keep-finished-s", 3600));
  ASSIGN_OR_RETURN(int64_t keep_n, args.Int("keep-finished", 100));
  if (keep_s < 0 || keep_s > 30 * 86400)
    return absl::InvalidArgumentError(
        absl::StrCat("--keep-finished-s ", keep_s, " is not in [0, 2592000]"));
  if (keep_n < 0 || keep_n > 100000)
    return absl::InvalidArgumentError(
        absl::StrCat("--keep-finished ", keep_n, " is not in [0, 100000]"));
  o.keep_finished = absl::Seconds(keep_s);
  o.keep_finished_count = static_cast<int>(keep_n);
  if (fault_handlers < 0 || fault_handlers > 256)
    return absl::InvalidArgumentError("--fault-handlers must be 0 (one per two vCPUs) to 256");
  // Every limit in its range: a limit below 1 would refuse all work.
  if (max_vms < 1 || max_vms > 4096)
    return absl::InvalidArgumentError(
        absl::StrCat("--max-vms ", max_vms, " is not in [1, 4096]"));
  if (max_migrations < 1 || max_migrations > 256)
    return absl::InvalidArgumentError(
        absl::StrCat("--max-migrations ", max_migrations, " is not in [1, 256]"));
  if (o.max_memory < (2ull << 20))
    return absl::InvalidArgumentError("--max-memory must be at least 2M (one VM's smallest)");
  o.fault_handlers = static_cast<int>(fault_handlers);
  o.max_vms = static_cast<int>(max_vms);
  o.max_migrations = static_cast<int>(max_migrations);
  const std::string metrics_listen = args.String("metrics-listen", "");
  const bool insecure = args.Bool("insecure");
  const std::string cert_file = args.String("tls-cert", "");
  const std::string key_file = args.String("tls-key", "");
  const std::string ca_file = args.String("tls-ca", "");
  const std::string authz_file = args.String("authz", "");
  const bool in_process = args.Bool("in-process");
  const bool state_dir_given = args.Has("state-dir");
  const std::string state_dir_flag = args.String("state-dir", kDefaultStateDir);
  const std::string state_dir = in_process ? "" : state_dir_flag;
  const std::string port_range = args.String("migration-ports", "");
  const std::string vmm_user = args.String("vmm-user", "");
  const std::string log_level = args.String("log-level", "info");
  RETURN_IF_ERROR(args.Finish());
  RETURN_IF_ERROR(args.CheckDefaultsRead());
  if (!args.positional().empty())
    return absl::InvalidArgumentError("ferryd takes no arguments, only flags (see --help)");
  if (cert_file.empty() != key_file.empty())
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  // Secure by default: an agent others can reach serves TLS and takes
  // migrations only with the pool's token, unless told --insecure.
  const bool loopback = IsLoopbackHost(listen_hp.first);
  if (!loopback && !insecure && cert_file.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", listen, " is reachable from other hosts: serve TLS (--tls-cert, --tls-key, "
        "--tls-ca) or say --insecure to serve in plaintext"));
  // Under TLS, a reachable agent's Control API takes only clients with a
  // certificate from the pool's CA: TLS alone would let anyone create VMs
  // and send the pool token and a migration's secret where it likes.
  if (!loopback && !insecure && !cert_file.empty() && ca_file.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", listen, " is reachable from other hosts: give --tls-ca, the CA whose "
        "client certificates may call this agent (mutual TLS), or say --insecure"));
  if (!loopback && !insecure && o.migration_token.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen ", listen, " is reachable from other hosts: give the pool's "
        "--migration-token (or $FERRY_MIGRATION_TOKEN), or say --insecure to take migrations "
        "from anyone"));
  // The metrics endpoint is plain HTTP: reachable from other hosts only
  // when told so (docs/operations.md: bind it to loopback and scrape it
  // through a local Prometheus agent or a TLS-terminating proxy).
  if (!metrics_listen.empty() && !insecure) {
    ASSIGN_OR_RETURN(auto metrics_hp, SplitHostPort(metrics_listen));
    if (!IsLoopbackHost(metrics_hp.first))
      return absl::InvalidArgumentError(absl::StrCat(
          "--metrics-listen ", metrics_listen, " would serve metrics in plain HTTP to other "
          "hosts: bind it to 127.0.0.1 and scrape through a local agent or a TLS proxy, or say "
          "--insecure"));
  }

  ASSIGN_OR_RETURN(AgentTls tls, LoadAgentTls(cert_file, key_file, ca_file));
  std::shared_ptr<grpc::ServerCredentials> server_creds = tls.server;
  o.peer_credentials = tls.peer;
  o.log = [](const std::string& line) { Log(line); };
  std::optional<AuthzPolicy> policy;
  if (!authz_file.empty()) {
    // Identities are client certificates' names: only mutual TLS has them.
    if (ca_file.empty())
      return absl::InvalidArgumentError(
          "--authz needs mutual TLS (--tls-cert, --tls-key, --tls-ca): its identities are the "
          "names in client certificates");
    ASSIGN_OR_RETURN(AuthzPolicy p, AuthzPolicy::Read(authz_file));
    policy = std::move(p);
  }

  const SecurityFacts security{cert_file, ca_file, !o.migration_token.empty(), loopback};
  if (args.Has("fetch-listen") && !in_process)
    return absl::InvalidArgumentError(
        "--fetch-listen is for --in-process: each VM process listens for the fetch channel on "
        "--listen's host, on a port from --migration-ports (any free port without it)");
  if (!in_process && state_dir_flag.empty())
    return absl::InvalidArgumentError("--state-dir needs a directory (or say --in-process)");
  if (in_process && state_dir_given)
    return absl::InvalidArgumentError(
        "--in-process runs VMs inside ferryd: it takes no --state-dir");
  if (args.Has("migration-ports") && in_process)
    return absl::InvalidArgumentError(
        "--migration-ports is for VM processes: not with --in-process");
  if (!vmm_user.empty() && in_process)
    return absl::InvalidArgumentError("--vmm-user runs VM processes: not with --in-process");
  if (!state_dir.empty()) {
    SupervisorOptions so;
    so.state_dir = state_dir;
    so.listen_host = listen_hp.first;
    so.fetch_advertise_host = o.fetch_advertise_host;
    so.agent = o;
    if (!port_range.empty()) {
      int lo = 0, hi = 0;
      if (std::sscanf(port_range.c_str(), "%d-%d", &lo, &hi) != 2 || lo < 1 || hi > 65535 ||
          hi < lo + 1)
        return absl::InvalidArgumentError(absl::StrCat("--migration-ports ", port_range,
                                                       " is not LO-HI with 1 <= LO < HI <= 65535"));
      so.first_port = lo;
      so.last_port = hi;
    }
    auto pass = [&](const char* flag, const std::string& value) {
      if (value.empty()) return;
      so.vmm_args.push_back(absl::StrCat("--", flag));
      so.vmm_args.push_back(value);
    };
    pass("tls-cert", cert_file);
    pass("tls-key", key_file);
    pass("tls-ca", ca_file);
    pass("fault-handlers", absl::StrCat(o.fault_handlers));
    pass("keep-finished-s", absl::StrCat(absl::ToInt64Seconds(o.keep_finished)));
    pass("log-level", log_level);
    pass("user", vmm_user);
    return RunSupervisor(std::move(so), listen, server_creds, std::move(policy), metrics_listen,
                         security, &signals);
  }
  // VMs live in this process: how its outgoing frames read guest memory
  // is measured now, not in the first migration (send_path.h).
  (void)migration::ChooseSendPath();
  ASSIGN_OR_RETURN(std::unique_ptr<Agent> agent, Agent::Start(o));
  ControlService control(agent.get(), std::move(policy), o.log);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, server_creds, &port);
  // gRPC sets SO_REUSEPORT by default: a second agent on the same port
  // would start and the kernel would split calls between the two. One
  // agent per port: a port in use is an error at start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  migration::ConfigureBulkServer(&builder);
  builder.RegisterService(&control);
  builder.RegisterService(agent->migration_service());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0)
    return ListenError(listen);
  const std::string host = listen_hp.first.find(':') != std::string::npos
                               ? "[" + listen_hp.first + "]"
                               : listen_hp.first;
  // What destinations show operators as this agent (a wildcard listen
  // address says nothing: the fetch channel's advertised host then).
  const bool wildcard = listen_hp.first.empty() || listen_hp.first == "0.0.0.0" ||
                        listen_hp.first == "::";
  std::string peer_host = host;
  if (wildcard) {
    ASSIGN_OR_RETURN(auto fetch_hp, SplitHostPort(agent->fetch_address()));
    peer_host = fetch_hp.first.find(':') != std::string::npos ? "[" + fetch_hp.first + "]"
                                                              : fetch_hp.first;
  }
  agent->set_control_address(absl::StrFormat("%s:%d", peer_host, port));
  std::unique_ptr<MetricsServer> metrics;
  std::string metrics_note;
  if (!metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> m =
        MetricsServer::Start(metrics_listen, [raw = agent.get()] { return raw->RenderMetrics(); });
    if (!m.ok())
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", metrics_listen, ": ",
                                                 m.status().message()));
    metrics = std::move(*m);
    metrics_note = absl::StrFormat("; metrics on http://%s:%d/metrics",
                                   SplitHostPort(metrics_listen)->first, metrics->port());
  }
  ASSIGN_OR_RETURN(auto fetch_hp, SplitHostPort(o.fetch_listen));
  // One line (whoever started us may read only the first).
  std::printf("ferryd: listening on %s:%d (control, migration, health); fetch channel on "
              "%s:%d%s\n",
              host.c_str(), port, fetch_hp.first.c_str(), agent->fetch_port(),
              metrics_note.c_str());
  std::fflush(stdout);
  LogLine started(LogLevel::kInfo, "agent.started");
  started.Kv("version", FerryVersion())
      .Kv("pid", static_cast<int64_t>(getpid()))
      .Kv("grpc", absl::StrFormat("%s:%d", host, port))
      .Kv("fetch", absl::StrFormat("%s:%d", fetch_hp.first, agent->fetch_port()))
      .Kv("metrics", metrics ? absl::StrFormat("%d", metrics->port()) : "off");
  Log(AddSecurity(started, security));
  Log(LogLine(LogLevel::kDebug, "agent.settings")
          .Kv("config", config.empty() ? "none" : config)
          .Kv("max_vms", static_cast<int64_t>(o.max_vms))
          .Kv("max_memory_mib", static_cast<uint64_t>(o.max_memory >> 20))
          .Kv("max_migrations", static_cast<int64_t>(o.max_migrations)));

  WarnIfInsecure(security);

  int sig = 0;
  sigwait(&signals, &sig);
  Log(LogLine(LogLevel::kInfo, "agent.signal").Kv("signal", sig));
  agent->BeginShutdown();
  // A VM past switchover exists only as both halves: wait for it.
  std::atomic<bool> forced{false};
  std::thread second([&] {
    int s2 = 0;
    sigwait(&signals, &s2);
    forced = true;
  });
  second.detach();
  bool said = false;
  while (agent->HasIncompletePostcopy() && !forced) {
    if (!said)
      Log(LogLine(LogLevel::kWarn, "agent.waiting")
              .Kv("detail", "migrations past switchover must complete (signal again to force)"));
    said = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (forced) {
    Log(LogLine(LogLevel::kError, "agent.forced_exit")
            .Kv("detail", "migrations past switchover are lost"));
    std::_Exit(1);
  }
  agent->events().Close();  // ends the WatchEvents streams, which Shutdown would wait for
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  agent.reset();
  Log(LogLine(LogLevel::kInfo, "agent.stopped"));
  return absl::OkStatus();
}

}  // namespace
}  // namespace ferry::agent

int main(int argc, char** argv) {
  // A closed stdout or peer socket is an error to handle, not a reason to die.
  signal(SIGPIPE, SIG_IGN);
  // Room for the connection limits (page server: 1024, gRPC streams: 256,
  // vCPU fetch lanes) before file descriptors run out: the soft limit up to
  // the hard one.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  ferry::TuneMallocForBulkTransfers();
  absl::Status s = ferry::agent::Main(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "ferryd: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
