#include "migration/agent/migration_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry::agent {

std::string RequestDifference(const OutgoingMigration& e, const std::string& vm_name,
                              const std::string& destination,
                              const migration::MigrationOptions& o) {
  std::vector<std::string> d;
  auto field = [&](const char* name, const std::string& was, const std::string& now) {
    if (was != now) d.push_back(absl::StrCat(name, " ", was, " (now ", now, ")"));
  };
  field("vm", e.vm_name, vm_name);
  field("destination", e.destination, destination);
  field("mode", migration::MigrationModeName(e.options.mode), migration::MigrationModeName(o.mode));
  field("fault mode", vmm::FaultModeName(e.options.fault_mode), vmm::FaultModeName(o.fault_mode));
  field("downtime target ms", absl::StrCat(e.options.downtime_target_ms),
        absl::StrCat(o.downtime_target_ms));
  field("max bandwidth", absl::StrCat(e.options.max_bandwidth), absl::StrCat(o.max_bandwidth));
  field("max rounds", absl::StrCat(e.options.max_rounds), absl::StrCat(o.max_rounds));
  field("streams", absl::StrCat(e.options.streams), absl::StrCat(o.streams));
  field("auto-converge",
        absl::StrCat(e.options.auto_converge, " ", e.options.throttle_initial, "/",
                     e.options.throttle_step, "/", e.options.throttle_max),
        absl::StrCat(o.auto_converge, " ", o.throttle_initial, "/", o.throttle_step, "/",
                     o.throttle_max));
  return absl::StrJoin(d, ", ");
}

absl::StatusOr<std::shared_ptr<OutgoingMigration>> MigrationTable::FindRequest(
    const std::string& request_id, const std::string& vm_name, const std::string& destination,
    const migration::MigrationOptions& options) const {
  if (request_id.empty()) return nullptr;
  auto it = by_request_id_.find(request_id);
  if (it == by_request_id_.end()) return nullptr;
  std::shared_ptr<OutgoingMigration> existing = migrations_.at(it->second);
  // The same request again is the same migration; the same id with other
  // parameters is a different request, refused by name.
  const std::string diff = RequestDifference(*existing, vm_name, destination, options);
  if (!diff.empty())
    return absl::AlreadyExistsError(absl::StrCat("request id '", request_id,
                                                 "' was already used for migration ", existing->id,
                                                 " with other parameters: ", diff));
  return existing;
}

void MigrationTable::Add(std::shared_ptr<OutgoingMigration> m) {
  if (!m->request_id.empty()) by_request_id_[m->request_id] = m->id;
  const std::string id = m->id;
  migrations_[id] = std::move(m);
}

absl::StatusOr<std::shared_ptr<OutgoingMigration>> MigrationTable::Find(
    const std::string& id) const {
  auto it = migrations_.find(id);
  if (it == migrations_.end())
    return absl::NotFoundError(
        absl::StrCat("no migration '", id,
                     "' on this agent (migrations live on their source agent; "
                     "see `ferry migration list`)"));
  return it->second;
}

std::vector<std::shared_ptr<OutgoingMigration>> MigrationTable::All() const {
  std::vector<std::shared_ptr<OutgoingMigration>> all;
  all.reserve(migrations_.size());
  for (const auto& [id, m] : migrations_) all.push_back(m);
  return all;
}

int MigrationTable::Running() const {
  int running = 0;
  for (const auto& [id, m] : migrations_) {
    absl::MutexLock lock(&m->mu);
    running += !m->done;
  }
  return running;
}

std::vector<std::shared_ptr<OutgoingMigration>> MigrationTable::Prune(absl::Time now) {
  std::vector<std::pair<absl::Time, std::string>> finished;  // oldest first
  for (const auto& [id, m] : migrations_) {
    absl::MutexLock lock(&m->mu);
    if (m->done) finished.push_back({m->finished, id});
  }
  std::sort(finished.begin(), finished.end());
  const absl::Time cutoff = now - retention_.keep_finished;
  const size_t keep = static_cast<size_t>(std::max(retention_.keep_count, 0));
  const size_t over = finished.size() > keep ? finished.size() - keep : 0;
  std::vector<std::shared_ptr<OutgoingMigration>> gone;
  for (size_t i = 0; i < finished.size(); ++i) {
    if (i >= over && finished[i].first >= cutoff) continue;
    auto it = migrations_.find(finished[i].second);
    if (!it->second->request_id.empty()) by_request_id_.erase(it->second->request_id);
    gone.push_back(std::move(it->second));
    migrations_.erase(it);
  }
  return gone;
}

}  // namespace ferry::agent
