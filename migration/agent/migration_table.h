// MigrationTable: the outgoing migrations of this agent by id, the client
// request ids that started them (StartMigration is idempotent per request
// id), and how long finished ones are kept (AgentOptions::keep_finished,
// keep_finished_count).
//
// Ownership: entries are shared; a pruned entry is handed to the caller,
// who joins its thread outside any lock.
//
// Threads: thread-compatible. The table has no lock of its own; its owner
// (Agent) serializes every call under its mutex. An entry's `mu` guards
// its outcome; lock order is the owner's mutex, then an entry's `mu`.
//
//   MigrationTable table({.keep_finished = absl::Hours(1), .keep_count = 100});
//   ASSIGN_OR_RETURN(auto same, table.FindRequest(id, vm, dest, options));
//   if (same != nullptr) return Describe(*same);   // the same request again
//   table.Add(entry);
//   ...
//   for (auto& gone : table.Prune(absl::Now())) gone->thread.join();
#ifndef FERRY_MIGRATION_AGENT_MIGRATION_TABLE_H_
#define FERRY_MIGRATION_AGENT_MIGRATION_TABLE_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/options.h"
#include "migration/report.h"
#include "migration/source_session.h"

namespace ferry::agent {

// One outgoing migration. The fields above `mu` are set before the entry
// is added to a table and not changed after.
struct OutgoingMigration {
  std::string id;
  std::string request_id;
  std::string vm_name;
  std::string destination;
  migration::MigrationOptions options;
  std::unique_ptr<migration::SourceSession> session;
  std::thread thread;                // runs the session; joined by whoever removes the entry
  absl::Time started = absl::Now();  // wall clock, for the resource
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Time finished ABSL_GUARDED_BY(mu);
  absl::Status result ABSL_GUARDED_BY(mu);
  migration::MigrationReport report ABSL_GUARDED_BY(mu);
};

// What differs between a migration and a request for one, e.g.
// "destination a:1 (now b:2)"; empty when they are the same.
std::string RequestDifference(const OutgoingMigration& was, const std::string& vm_name,
                              const std::string& destination,
                              const migration::MigrationOptions& now);

class MigrationTable {
 public:
  struct Retention {
    absl::Duration keep_finished = absl::Hours(1);  // finished ones, at most this long
    int keep_count = 100;                           // and at most this many
  };
  explicit MigrationTable(Retention retention) : retention_(retention) {}

  // The migration `request_id` started, if it asked for the same: null when
  // the id is empty or new; AlreadyExists, naming what differs, when it
  // started a migration with other parameters.
  absl::StatusOr<std::shared_ptr<OutgoingMigration>> FindRequest(
      const std::string& request_id, const std::string& vm_name, const std::string& destination,
      const migration::MigrationOptions& options) const;
  // Adds `m` (its id must be new), remembering its request id.
  void Add(std::shared_ptr<OutgoingMigration> m);
  // NotFound names where migrations live.
  absl::StatusOr<std::shared_ptr<OutgoingMigration>> Find(const std::string& id) const;
  std::vector<std::shared_ptr<OutgoingMigration>> All() const;
  // Migrations not done.
  int Running() const;
  // Removes the finished migrations past the retention as of `now` (the
  // oldest first when there are too many) with their request ids, and
  // returns them.
  std::vector<std::shared_ptr<OutgoingMigration>> Prune(absl::Time now);

 private:
  const Retention retention_;
  std::map<std::string, std::shared_ptr<OutgoingMigration>> migrations_;
  std::map<std::string, std::string> by_request_id_;
};

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_MIGRATION_TABLE_H_
