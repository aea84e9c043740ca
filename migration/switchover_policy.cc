#include "migration/switchover_policy.h"

#include "absl/strings/str_format.h"

namespace ferry::migration {
namespace {

constexpr int kRoundsWithoutProgress = 3;

}  // namespace

const char* DecisionName(Decision d) {
  switch (d) {
    case Decision::kNextRound:
      return "next round";
    case Decision::kStopAndCopy:
      return "stop-and-copy";
    case Decision::kPostcopy:
      return "postcopy";
    case Decision::kFail:
      return "fail";
  }
  return "unknown";
}

void TrackConvergence(RoundFacts* facts, uint64_t pages_to_send) {
  facts->pages_to_send = pages_to_send;
  if (facts->rounds_done <= 1 || pages_to_send < facts->smallest_to_send * 9 / 10) {
    facts->rounds_without_progress = 0;
  } else {
    ++facts->rounds_without_progress;
  }
  if (facts->rounds_done <= 1 || pages_to_send < facts->smallest_to_send)
    facts->smallest_to_send = pages_to_send;
}

PolicyDecision DecideAfterRound(const MigrationOptions& options, const RoundFacts& f) {
  const double bytes = static_cast<double>(f.pages_to_send) * f.page_size;
  const double est_ms = f.bandwidth_bps > 0 ? bytes / f.bandwidth_bps * 1e3 : 1e18;
  if (f.pages_to_send == 0 || est_ms <= options.downtime_target_ms)
    return {Decision::kStopAndCopy,
            absl::StrFormat("%d pages left fit the %d ms downtime target (%.1f ms at "
                            "%.0f MB/s)",
                            f.pages_to_send, options.downtime_target_ms, est_ms,
                            f.bandwidth_bps / 1e6)};
  if (options.mode == MigrationMode::kPostcopy)
    return {Decision::kPostcopy, "postcopy mode"};
  std::string stuck;
  if (f.rounds_done >= options.max_rounds)
    stuck = absl::StrFormat("%d precopy rounds (the limit) did not converge",
                            f.rounds_done);
  else if (f.rounds_without_progress >= kRoundsWithoutProgress)
    stuck = absl::StrFormat(
        "precopy stopped converging: %d pages dirty per round (%.1f ms to send at "
        "%.0f MB/s) against a %d ms downtime target",
        f.pages_to_send, est_ms, f.bandwidth_bps / 1e6, options.downtime_target_ms);
  if (stuck.empty()) return {Decision::kNextRound, ""};
  if (options.mode == MigrationMode::kHybrid) return {Decision::kPostcopy, stuck};
  return {Decision::kFail, stuck};
}

}  // namespace ferry::migration
