#include "migration/phase_timeline.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "migration/phases.h"

namespace ferry::migration {

int64_t WallClockUnixMs() { return absl::ToUnixMillis(absl::Now()); }

PhaseTimeline::PhaseTimeline(Listener listener, std::function<int64_t()> now_unix_ms)
    : listener_(std::move(listener)), now_unix_ms_(std::move(now_unix_ms)) {}

void PhaseTimeline::Note(ferry::v1::MigrationPhase phase) {
  PhaseChange change;
  {
    absl::MutexLock lock(&mu_);
    if (!changes_.empty()) {
      const PhaseChange& last = changes_.back();
      if (last.to == phase || !FactsOf(last.to).under_way) return;  // the same, or closed
      change.from = last.to;
      // Never before the last change, whatever the wall clock did.
      change.unix_ms = std::max(now_unix_ms_(), last.unix_ms);
    } else {
      change.unix_ms = now_unix_ms_();
    }
    change.to = phase;
    changes_.push_back(change);
  }
  if (listener_) listener_(change);
}

PhaseTimings PhaseTimeline::Timings() const {
  absl::MutexLock lock(&mu_);
  PhaseTimings out;
  for (size_t i = 0; i < changes_.size(); ++i) {
    const PhaseChange& c = changes_[i];
    if (!FactsOf(c.to).under_way) break;  // the final phase
    ferry::v1::PhaseTiming* t = out.Add();
    t->set_phase(c.to);
    t->set_start_unix_ms(c.unix_ms);
    t->set_end_unix_ms(i + 1 < changes_.size() ? changes_[i + 1].unix_ms
                                               : std::max(now_unix_ms_(), c.unix_ms));
    t->set_duration_ms(static_cast<double>(t->end_unix_ms() - t->start_unix_ms()));
  }
  return out;
}

}  // namespace ferry::migration
