// Live control of a running outgoing migration, the agent's half: turns
// ferry.v1.Control requests into SourceSession calls and the session's
// live state into the MigrationResource. The Agent finds the session; these
// functions hold no state of their own. Any thread.
#ifndef FERRY_MIGRATION_AGENT_LIVE_CONTROL_H_
#define FERRY_MIGRATION_AGENT_LIVE_CONTROL_H_

#include "absl/status/status.h"
#include "ferry/v1/control.pb.h"
#include "migration/source_session.h"

namespace ferry::agent {

// SetMigrationParameters on `session`: all of the request or nothing, with
// the reason (SourceSession::SetParameters).
absl::Status SetParameters(migration::SourceSession& session,
                           const ferry::v1::SetMigrationParametersRequest& request);

// Adds the live parameters to `r`: those in force to its progress, and
// the changes so far to its report (when `with_report`: the migration ended).
void DescribeLive(const migration::SourceSession& session, bool with_report,
                  ferry::v1::MigrationResource& r);

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_LIVE_CONTROL_H_
