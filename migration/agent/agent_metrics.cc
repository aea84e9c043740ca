#include "migration/agent/agent_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/version.h"
#include "migration/agent/prometheus.h"
#include "migration/api/names.h"
#include "migration/phases.h"
#include "migration/protocol.h"

namespace ferry::agent {
namespace {

constexpr const char* kOutcomeNames[kOutcomes] = {"completed", "failed", "cancelled"};

bool Running(const ferry::v1::MigrationResource& m) {
  if (!migration::FactsOf(m.phase()).under_way) return false;
  // An outgoing migration is over once its report is written.
  return m.direction() != "outgoing" || m.report().outcome().empty();
}

std::string ReadFile(const char* path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

Outcome OutcomeOf(const absl::Status& s) {
  if (s.ok()) return Outcome::kCompleted;
  return s.code() == absl::StatusCode::kCancelled ? Outcome::kCancelled : Outcome::kFailed;
}

const char* OutcomeName(Outcome o) { return kOutcomeNames[static_cast<int>(o)]; }

ProcessFigures ReadProcessFigures() {
  ProcessFigures p;
  // /proc/self/stat: the fields after the command name, which is in
  // parentheses and may hold spaces.
  const std::string stat = ReadFile("/proc/self/stat");
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
    // f[0] is field 3 (state): field N is f[N - 3].
    if (f.size() > 21) {
      const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
      p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / tick;  // utime + stime
      p.threads = std::stoull(f[17]);
      const double start_ticks = std::stod(f[19]);
      p.virtual_bytes = std::stoull(f[20]);
      p.resident_bytes = std::stoull(f[21]) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
      for (absl::string_view line : absl::StrSplit(ReadFile("/proc/stat"), '\n'))
        if (absl::ConsumePrefix(&line, "btime "))
          p.start_time_seconds = std::stod(std::string(line)) + start_ticks / tick;
    }
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++p.open_fds;
    closedir(d);
    if (p.open_fds > 0) --p.open_fds;  // the directory's own fd
  }
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) p.max_fds = nofile.rlim_cur;
  return p;
}

void AgentMetrics::RecordOutgoing(const std::string& migration_id, const absl::Status& result,
                                  const migration::MigrationReport& r) {
  if (r.downtime_ms() > 0) downtime_.Record(static_cast<uint64_t>(r.downtime_ms() * 1e6));
  const Outcome o = OutcomeOf(result);
  blocktime_[static_cast<int>(o)].Record(static_cast<uint64_t>(r.blocktime_ms() * 1e6));
  absl::MutexLock lock(&mu_);
  recorded_outgoing_.insert(migration_id);
  ++outgoing_[OutcomeName(o)];
  bytes_sent_ += r.bytes_sent();
  pages_sent_ += r.pages_sent();
}

void AgentMetrics::RecordIncoming(const std::string& migration_id, bool completed,
                                  const vmm::DemandPagerStats& pager,
                                  const migration::fetch::FetcherStats& fetch) {
  absl::MutexLock lock(&mu_);
  recorded_incoming_.insert(migration_id);
  ++incoming_[completed ? "completed" : "failed"];
  // Faults whose wait is over (the latency histogram's count): a fault a
  // vCPU is still resolving when the migration completes is not in either.
  faults_ += pager.fault_latency.total;
  pages_received_ += pager.pages_installed;
  fetch_requests_ += fetch.requests;
  fault_latency_.Merge(pager.fault_latency);
  fetch_rtt_.Merge(fetch.round_trip);
}

std::string AgentMetrics::Render(
    const std::vector<ferry::v1::Vm>& vms,
    const std::vector<ferry::v1::MigrationResource>& migrations) const {
  PrometheusText t;
  t.Declare("ferry_build_info", "gauge", "This agent's release and migration protocol.");
  t.Sample("ferry_build_info",
           {{"version", FerryVersion()},
            {"protocol", absl::StrCat(migration::kProtocolVersion)}},
           1);
  // VMs by state, every state listed (zero included).
  std::map<std::string, int> by_state;
  for (int s = ferry::v1::VM_STATE_RUNNING; s <= ferry::v1::VM_STATE_INCOMING; ++s)
    by_state[api::Spelling(static_cast<ferry::v1::VmState>(s))] = 0;
  for (const ferry::v1::Vm& v : vms) ++by_state[api::Spelling(v.state())];
  t.Declare("ferry_vms", "gauge", "VMs on this agent by state.");
  for (const auto& [state, n] : by_state) t.Sample("ferry_vms", {{"state", state}}, n);

  // Migrations under way (finished ones are counted by
  // ferry_migrations_finished_total).
  std::map<std::pair<std::string, std::string>, int> phases;
  for (const char* dir : {"outgoing", "incoming"})
    for (int p = ferry::v1::MigrationPhase_MIN; p <= ferry::v1::MigrationPhase_MAX; ++p) {
      const auto phase = static_cast<ferry::v1::MigrationPhase>(p);
      if (migration::FactsOf(phase).under_way) phases[{dir, api::Spelling(phase)}] = 0;
    }
  std::vector<const ferry::v1::MigrationResource*> running;
  for (const ferry::v1::MigrationResource& m : migrations) {
    if (!Running(m)) continue;
    running.push_back(&m);
    ++phases[{m.direction(), api::Spelling(m.phase())}];
  }
  t.Declare("ferry_migrations", "gauge", "Migrations under way, by direction and phase.");
  for (const auto& [k, n] : phases)
    t.Sample("ferry_migrations", {{"direction", k.first}, {"phase", k.second}}, n);

  t.Declare("ferry_migration_progress_ratio", "gauge",
            "How much of the guest's memory the destination holds current (0-1), per "
            "migration under way.");
  for (const auto* m : running)
    t.Sample("ferry_migration_progress_ratio",
             {{"migration", m->id()}, {"vm", m->vm_name()}, {"direction", m->direction()}},
             m->progress().percent() / 100.0);
  t.Declare("ferry_migration_pages_remaining", "gauge",
            "Pages still to send (outgoing) or still missing (incoming), per migration.");
  for (const auto* m : running)
    t.Sample("ferry_migration_pages_remaining",
             {{"migration", m->id()}, {"vm", m->vm_name()}, {"direction", m->direction()}},
             m->progress().pages_remaining());
  t.Declare("ferry_migration_bandwidth_bytes_per_second", "gauge",
            "What an outgoing migration sends at now.");
  t.Declare("ferry_migration_dirty_pages_per_second", "gauge",
            "How fast the guest of an outgoing migration writes pages now.");
  for (const auto* m : running) {
    if (m->direction() != "outgoing") continue;
    const Labels l = {{"migration", m->id()}, {"vm", m->vm_name()}};
    t.Sample("ferry_migration_bandwidth_bytes_per_second", l, m->progress().bandwidth_bytes_per_sec());
    t.Sample("ferry_migration_dirty_pages_per_second", l, m->progress().dirty_pages_per_sec());
  }
  {
    absl::MutexLock lock(&mu_);
    // What the migrations whose end is not recorded add to the counters so
    // far, decided under the lock the recording takes: each migration
    // counts live or finished, never both, and never neither. An outgoing
    // migration is recorded before its report shows in the listing, an
    // incoming one before its phase ends; the session's own phase may say
    // it ended a moment before that (the outgoing one releases its VM
    // first), so that does not stop it counting live.
    uint64_t live_bytes = 0, live_pages = 0, live_faults = 0, live_received = 0;
    std::set<std::string> listed_outgoing, listed_incoming;
    for (const ferry::v1::MigrationResource& m : migrations) {
      if (m.direction() == "outgoing") {
        listed_outgoing.insert(m.id());
        if (recorded_outgoing_.count(m.id()) || m.has_report()) continue;
        live_bytes += m.progress().bytes_sent();
        live_pages += m.progress().pages_transferred();
      } else {
        listed_incoming.insert(m.id());
        if (recorded_incoming_.count(m.id()) || !Running(m)) continue;
        live_faults += m.progress().faults();
        live_received += m.progress().pages_transferred();
      }
    }
    // A recorded migration the listing no longer holds was pruned: its id
    // is not needed again (were it listed again, an outgoing one would show
    // its report, an incoming one its end).
    std::erase_if(recorded_outgoing_,
                   [&](const std::string& id) { return !listed_outgoing.count(id); });
    std::erase_if(recorded_incoming_,
                   [&](const std::string& id) { return !listed_incoming.count(id); });
    t.Declare("ferry_migrations_finished_total", "counter",
              "Migrations that ended, by direction and outcome.");
    for (int o = 0; o < kOutcomes; ++o) {
      const char* name = kOutcomeNames[o];
      auto count = [](const std::map<std::string, uint64_t>& m, const char* k) {
        auto it = m.find(k);
        return it == m.end() ? 0 : it->second;
      };
      t.Sample("ferry_migrations_finished_total", {{"direction", "outgoing"}, {"outcome", name}},
               count(outgoing_, name));
      if (o != static_cast<int>(Outcome::kCancelled))  // never cancelled at the destination
        t.Sample("ferry_migrations_finished_total",
                 {{"direction", "incoming"}, {"outcome", name}}, count(incoming_, name));
    }
    t.Declare("ferry_migration_bytes_sent_total", "counter",
              "Page bytes sent by outgoing migrations, running ones included (all channels).");
    t.Sample("ferry_migration_bytes_sent_total", {}, bytes_sent_ + live_bytes);
    t.Declare("ferry_migration_pages_sent_total", "counter",
              "Pages sent by outgoing migrations, running ones included.");
    t.Sample("ferry_migration_pages_sent_total", {}, pages_sent_ + live_pages);
    t.Declare("ferry_migration_pages_received_total", "counter",
              "Pages installed for VMs arriving here, running migrations included.");
    t.Sample("ferry_migration_pages_received_total", {}, pages_received_ + live_received);
    t.Declare("ferry_faults_total", "counter",
              "Faults on missing pages of VMs arriving here, running migrations included.");
    t.Sample("ferry_faults_total", {}, faults_ + live_faults);
    t.Declare("ferry_fault_latency_seconds", "histogram",
              "Fault latency of VMs that arrived here: from the fault to the install.");
    t.HistogramSeconds("ferry_fault_latency_seconds", {}, fault_latency_);
    t.Declare("ferry_fetch_requests_total", "counter",
              "Fetch-channel requests sent by VMs that arrived here.");
    t.Sample("ferry_fetch_requests_total", {}, fetch_requests_);
    t.Declare("ferry_fetch_round_trip_seconds", "histogram",
              "Fetch-channel round trips of VMs that arrived here.");
    t.HistogramSeconds("ferry_fetch_round_trip_seconds", {}, fetch_rtt_);
  }
  t.Declare("ferry_migration_downtime_seconds", "histogram",
            "Downtime of outgoing migrations that switched over (pause to Resumed).");
  t.HistogramSeconds("ferry_migration_downtime_seconds", {}, downtime_.Snapshot());
  t.Declare("ferry_migration_blocktime_seconds", "histogram",
            "Blocktime of outgoing migrations (vCPU time waiting on missing pages at the "
            "destination, summed over vCPUs), by outcome.");
  for (int o = 0; o < kOutcomes; ++o)
    t.HistogramSeconds("ferry_migration_blocktime_seconds", {{"outcome", kOutcomeNames[o]}},
                       blocktime_[o].Snapshot());

  const ProcessFigures p = ReadProcessFigures();
  t.Declare("process_cpu_seconds_total", "counter", "User and system CPU time spent.");
  t.Sample("process_cpu_seconds_total", {}, p.cpu_seconds);
  t.Declare("process_resident_memory_bytes", "gauge", "Resident memory size.");
  t.Sample("process_resident_memory_bytes", {}, p.resident_bytes);
  t.Declare("process_virtual_memory_bytes", "gauge", "Virtual memory size.");
  t.Sample("process_virtual_memory_bytes", {}, p.virtual_bytes);
  t.Declare("process_open_fds", "gauge", "Open file descriptors.");
  t.Sample("process_open_fds", {}, p.open_fds);
  t.Declare("process_max_fds", "gauge", "The file descriptor limit.");
  t.Sample("process_max_fds", {}, p.max_fds);
  t.Declare("process_threads", "gauge", "Threads of the process.");
  t.Sample("process_threads", {}, p.threads);
  t.Declare("process_start_time_seconds", "gauge", "Start time since the epoch.");
  t.Sample("process_start_time_seconds", {}, p.start_time_seconds);
  return t.text();
}

}  // namespace ferry::agent
