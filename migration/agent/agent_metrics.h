// AgentMetrics: what ferryd exports on --metrics-listen (Prometheus text;
// docs/operations.md lists every metric). It holds the cumulative figures of
// migrations that ended (they outlive the migrations, which are pruned) and
// renders them together with the live state the agent passes in: its VMs,
// and its migrations in both directions with their progress, so counters
// move while a migration runs and per-migration gauges show where each one
// is. Process metrics (process_*) are read from /proc at render time.
//
// Counters never fall: a migration adds its live figures until its end is
// recorded (by its id), then its final ones, never both, whatever the
// listing passed in says of its phase. A migration whose session says it
// ended but whose end is not recorded yet still counts live (Prometheus
// reads a fall as a counter reset). One exception:
// ferry_migration_pages_sent_total counts distinct pages live but data and
// demand pages (resends included, zero pages not) once recorded, which may
// be fewer.
//
// Threads: every method is thread-safe.
//
//   AgentMetrics m;
//   m.RecordOutgoing(migration_id, status, report);
//   std::string text = m.Render(agent.ListVms(), agent.ListMigrations());
#ifndef FERRY_MIGRATION_AGENT_AGENT_METRICS_H_
#define FERRY_MIGRATION_AGENT_AGENT_METRICS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "base/histogram.h"
#include "ferry/v1/control.pb.h"
#include "migration/fetch/remote_page_source.h"
#include "migration/report.h"
#include "vmm/demand_pager.h"

namespace ferry::agent {

// How a migration ended, from its session's status: the one mapping the
// resource's phase, the log and the metrics use.
enum class Outcome { kCompleted = 0, kFailed, kCancelled };
inline constexpr int kOutcomes = 3;
Outcome OutcomeOf(const absl::Status& s);
const char* OutcomeName(Outcome o);

class AgentMetrics {
 public:
  // A finished outgoing migration, with its session's result and report.
  void RecordOutgoing(const std::string& migration_id, const absl::Status& result,
                      const migration::MigrationReport& report);
  // A finished incoming migration: its pager's and fetcher's final figures.
  void RecordIncoming(const std::string& migration_id, bool completed,
                      const vmm::DemandPagerStats& pager,
                      const migration::fetch::FetcherStats& fetch);

  // The exposition: cumulative figures plus the live ones of `vms` and of
  // `migrations` (as Agent::ListMigrations gives them: outgoing with their
  // progress, incoming with pages and faults).
  std::string Render(const std::vector<ferry::v1::Vm>& vms,
                     const std::vector<ferry::v1::MigrationResource>& migrations) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, uint64_t> outgoing_ ABSL_GUARDED_BY(mu_);  // by outcome
  std::map<std::string, uint64_t> incoming_ ABSL_GUARDED_BY(mu_);  // by outcome
  uint64_t bytes_sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pages_sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t faults_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pages_received_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t fetch_requests_ ABSL_GUARDED_BY(mu_) = 0;
  // Ids of migrations whose end is recorded, while a listing still holds
  // them (Render forgets the others): their live figures no longer count.
  mutable std::set<std::string> recorded_outgoing_ ABSL_GUARDED_BY(mu_);
  mutable std::set<std::string> recorded_incoming_ ABSL_GUARDED_BY(mu_);
  HistogramSnapshot fault_latency_ ABSL_GUARDED_BY(mu_);  // ns, incoming
  HistogramSnapshot fetch_rtt_ ABSL_GUARDED_BY(mu_);      // ns, incoming
  LatencyHistogram downtime_;              // ns, outgoing migrations that switched over
  LatencyHistogram blocktime_[kOutcomes];  // ns, by outcome
};

// This process's resource use, as Prometheus' process collector names it.
struct ProcessFigures {
  double cpu_seconds = 0;
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;
  uint64_t threads = 0;
  double start_time_seconds = 0;  // since the epoch
};
// Reads /proc/self; fields it cannot read stay 0.
ProcessFigures ReadProcessFigures();

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_AGENT_METRICS_H_
