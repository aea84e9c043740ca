// PhaseTimeline: when one side of a migration entered each phase, on the
// agent's wall clock. A session notes its phase at every state change
// (Note); the timeline keeps the changes (Timings, for the report and
// `migration get`) and hands each to a listener (the agent's events).
//
// Notes of the phase already in force are ignored, so a session may note
// after every state change, whether or not the coarse phase moved. Once a
// final phase (completed, failed, cancelled) is noted the timeline is
// closed: later notes are ignored.
//
// Threads: thread-safe. The listener runs on the thread that called Note,
// after the timeline's own lock is released but under whatever lock the
// caller holds (the sessions note under their state lock, so changes reach
// the listener in order); it must not call back into the session.
//
//   PhaseTimeline timeline([](const PhaseChange& c) { Publish(c); });
//   timeline.Note(ferry::v1::MIGRATION_PHASE_SETUP);
//   ...
//   *report.mutable_phase_timings() = timeline.Timings();
#ifndef FERRY_MIGRATION_PHASE_TIMELINE_H_
#define FERRY_MIGRATION_PHASE_TIMELINE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "ferry/v1/control.pb.h"
#include "migration/report.h"

namespace ferry::migration {

// One change of phase. `from` is UNSPECIFIED for the first note.
struct PhaseChange {
  ferry::v1::MigrationPhase from = ferry::v1::MIGRATION_PHASE_UNSPECIFIED;
  ferry::v1::MigrationPhase to = ferry::v1::MIGRATION_PHASE_UNSPECIFIED;
  int64_t unix_ms = 0;
};

// Milliseconds since the Unix epoch now (absl::Now()).
int64_t WallClockUnixMs();

class PhaseTimeline {
 public:
  using Listener = std::function<void(const PhaseChange&)>;
  // `now_unix_ms` reads the wall clock (tests inject their own).
  explicit PhaseTimeline(Listener listener = nullptr,
                         std::function<int64_t()> now_unix_ms = WallClockUnixMs);

  // The side is in `phase` now.
  void Note(ferry::v1::MigrationPhase phase);

  // The phases so far, in order, the final one not listed: each ends when
  // the next began; the one in force (if not final) ends now, so far.
  PhaseTimings Timings() const;

 private:
  const Listener listener_;
  const std::function<int64_t()> now_unix_ms_;
  mutable absl::Mutex mu_;
  std::vector<PhaseChange> changes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_PHASE_TIMELINE_H_
