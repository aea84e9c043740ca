#include "migration/switchover_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ferry::migration {
namespace {

// A round "shrinks" the stale set when it ends below this fraction of the
// round before.
constexpr double kShrink = 0.9;
// During round 0, a guest writing at this fraction of the link's rate or
// more makes precopy wasteful: at 0.5 the pages it makes stale while round 0
// runs already add half of memory to what must be sent again.
constexpr double kWasteful = 0.5;

double Ms(uint64_t pages, uint32_t page_size, double bps) {
  return bps > 0 ? static_cast<double>(pages) * page_size / bps * 1e3 : 1e18;
}

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
    case Decision::kThrottle:
      return "throttle";
  }
  return "unknown";
}

int NextThrottlePercent(const MigrationOptions& options, int current) {
  if (current < options.throttle_initial) return options.throttle_initial;
  return std::min(options.throttle_max, current + options.throttle_step);
}

PolicyDecision DecideAfterRound(const MigrationOptions& options, const RoundFacts& f) {
  const double mbps = f.bandwidth_bps / 1e6;
  const double stale_ms = Ms(f.pages_stale, f.page_size, f.bandwidth_bps);
  if (f.pages_stale == 0 || stale_ms <= options.downtime_target_ms)
    return {Decision::kStopAndCopy,
            absl::StrFormat("%d stale pages fit the %d ms downtime target (%.1f ms at "
                            "%.0f MB/s)",
                            f.pages_stale, options.downtime_target_ms, stale_ms, mbps)};
  if (options.mode == MigrationMode::kPostcopy)
    return {Decision::kPostcopy, "postcopy mode: switch over at once"};

  std::string stuck;
  const double dirty_bps =
      f.round_seconds > 0 ? f.pages_dirtied * static_cast<double>(f.page_size) / f.round_seconds
                          : 0;
  const double hot_ms = Ms(f.pages_hot, f.page_size, f.bandwidth_bps);
  const size_t h = f.history.size();
  if (f.bandwidth_bps > 0 && dirty_bps >= f.bandwidth_bps) {
    stuck = absl::StrFormat(
        "the guest dirties %.0f MB/s (%d pages in %.0f ms), at least the %.0f MB/s the "
        "link carries: precopy cannot converge",
        dirty_bps / 1e6, f.pages_dirtied, f.round_seconds * 1e3, mbps);
  } else if (hot_ms > options.downtime_target_ms) {
    stuck = absl::StrFormat(
        "%d hot pages (dirtied in each of the last two rounds) take %.1f ms at %.0f MB/s, "
        "more than the %d ms downtime target: no pause can fit them",
        f.pages_hot, hot_ms, mbps, options.downtime_target_ms);
  } else if (h >= 2 && f.pages_stale > kShrink * f.history[h - 1] &&
             f.history[h - 1] > kShrink * f.history[h - 2]) {
    stuck = absl::StrFormat(
        "precopy stopped converging: the stale set went %s -> %d pages (%.1f ms at "
        "%.0f MB/s) against a %d ms downtime target",
        absl::StrJoin(f.history.end() - 2, f.history.end(), " -> "), f.pages_stale, stale_ms, mbps,
        options.downtime_target_ms);
  } else if (f.rounds_done >= options.max_rounds) {
    stuck = absl::StrFormat(
        "%d precopy rounds (the limit) did not converge: %d stale pages (%.1f ms at "
        "%.0f MB/s)",
        f.rounds_done, f.pages_stale, stale_ms, mbps);
  }
  if (stuck.empty()) return {Decision::kNextRound, ""};
  if (options.auto_converge && f.throttle_percent < options.throttle_max) {
    const int next = NextThrottlePercent(options, f.throttle_percent);
    return {Decision::kThrottle,
            absl::StrFormat("%s; auto-converge: the guest's throttle goes %d%% -> %d%%", stuck,
                            f.throttle_percent, next),
            next};
  }
  if (options.auto_converge && f.rounds_at_throttle < 2) return {Decision::kNextRound, ""};
  if (options.auto_converge)
    absl::StrAppendFormat(&stuck,
                          ", even with the guest throttled to %d%% (auto-converge's ceiling, "
                          "--throttle-max)",
                          f.throttle_percent);
  if (options.mode == MigrationMode::kHybrid) return {Decision::kPostcopy, stuck};
  return {Decision::kFail,
          absl::StrCat(stuck,
                       "; remedies: --mode hybrid (goes postcopy when precopy stops "
                       "converging) or --mode postcopy, a higher --max-bandwidth (`ferry "
                       "migration set ID --max-bandwidth R` while it runs), ",
                       options.auto_converge
                           ? "a higher --throttle-max (auto-converge's ceiling), "
                           : "--auto-converge (throttles the guest's vCPUs until precopy "
                             "converges), ",
                       "or a longer --downtime-target-ms (docs/operations.md)")};
}

PolicyDecision DecideDuringFirstRound(const MigrationOptions& options, const FirstRoundSample& s) {
  if (options.mode != MigrationMode::kHybrid || options.auto_converge || s.seconds <= 0 ||
      s.bandwidth_bps <= 0)
    return {Decision::kNextRound, ""};
  const double dirty_bps = s.pages_dirtied * static_cast<double>(s.page_size) / s.seconds;
  if (dirty_bps < kWasteful * s.bandwidth_bps) return {Decision::kNextRound, ""};
  return {Decision::kPostcopy,
          absl::StrFormat(
              "in the first %.0f ms of round 0 (%d of %d pages sent) the guest wrote %d pages "
              "(%.0f MB/s), at least half the %.0f MB/s the link carries: precopy would "
              "resend most of what it sends",
              s.seconds * 1e3, s.pages_sent, s.pages_total, s.pages_dirtied, dirty_bps / 1e6,
              s.bandwidth_bps / 1e6)};
}

}  // namespace ferry::migration
