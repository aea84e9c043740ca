#include "migration/agent/live_control.h"

#include <algorithm>

namespace ferry::agent {

absl::Status SetParameters(migration::SourceSession& session,
                           const ferry::v1::SetMigrationParametersRequest& request) {
  migration::ParameterUpdate update;
  if (request.has_max_bandwidth()) update.max_bandwidth = request.max_bandwidth();
  if (request.has_downtime_target_ms()) update.downtime_target_ms = request.downtime_target_ms();
  if (request.has_streams()) update.streams = static_cast<int>(std::min(request.streams(), 1000u));
  return session.SetParameters(update);
}

void DescribeLive(const migration::SourceSession& session, bool with_report,
                  ferry::v1::MigrationResource& r) {
  ferry::v1::MigrationProgress* p = r.mutable_progress();
  p->set_max_bandwidth(session.max_bandwidth());
  p->set_downtime_target_ms(session.downtime_target_ms());
  p->set_streams(static_cast<uint32_t>(session.streams()));
  if (!with_report) return;
  for (const migration::ParameterChange& c : session.parameter_changes()) {
    ferry::v1::ParameterChange* out = r.mutable_report()->add_parameter_changes();
    out->set_time_ms(c.time_ms);
    out->set_parameter(c.parameter);
    out->set_old_value(c.old_value);
    out->set_new_value(c.new_value);
  }
}

}  // namespace ferry::agent
