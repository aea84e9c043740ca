#include "migration/source_session.h"

#include <algorithm>
#include <iterator>
#include <optional>

#include "absl/strings/str_format.h"
#include "base/net.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "migration/convert.h"
#include "migration/fetch/wire.h"
#include "migration/guest_impact.h"
#include "migration/hello.h"
#include "migration/page_frame.h"
#include "migration/protocol.h"
#include "migration/send_path.h"
#include "migration/stream_auth.h"

namespace ferry::migration {
namespace {

using ferry::v1::DestinationMessage;
using ferry::v1::SourceMessage;
using S = SourceState;

constexpr absl::Duration kAcceptTimeout = absl::Seconds(30);
constexpr absl::Duration kResumeTimeout = absl::Seconds(30);
// After resume the destination reports progress every 100 ms: this long
// without any message means the stream is dead even if TCP says otherwise
// (a stopped or wedged peer), and recovery starts.
constexpr int64_t kSilenceTimeoutNs = 5'000'000'000;
constexpr absl::Duration kSampleInterval = absl::Milliseconds(100);
// Early discards before a postcopy switchover: at most this many, and none
// once fewer than kSmallDiscard pages are stale (the pause discards those:
// one fallocate per scattered run, so a few hundred pages at most; with
// 2048 the destination's part of the pause was 0.5-4.8 ms, with 256
// 0.4-1.7 ms, zipf hybrid, docs/benchmarks.md).
constexpr int kMaxEarlyDiscards = 8;
// Round 0 goes out in chunks of 64 MiB of 4 KiB pages; the dirty log is
// sampled between chunks at most every 200 ms (a sample costs a scan).
constexpr uint64_t kRoundZeroChunkPages = 16384;
constexpr int64_t kRoundZeroSampleNs = 200'000'000;
constexpr size_t kSmallDiscard = 256;

std::string RandomId() {
  uint8_t b[8];
  (void)fetch::RandomBytes(absl::MakeSpan(b));
  std::string id = "mig-";
  for (uint8_t x : b) absl::StrAppendFormat(&id, "%02x", x);
  return id;
}

SendPath PathOf(FramePhase phase) {
  switch (phase) {
    case FramePhase::kStopAndCopy:
      return SendPath::kStopAndCopy;
    case FramePhase::kPostcopy:
      return SendPath::kPush;
    case FramePhase::kPrecopy:
      return SendPath::kPrecopy;
  }
  return SendPath::kPrecopy;
}

SourcePhase PhaseOf(SourceState s) {
  switch (s) {
    case S::kConnecting:
    case S::kAccepted:
      return SourcePhase::kSetup;
    case S::kPrecopy:
    case S::kDiscarding:
      return SourcePhase::kPrecopy;
    case S::kPaused:
    case S::kSwitchingOver:
      return SourcePhase::kSwitchover;
    case S::kPostcopy:
    case S::kCompleting:
    case S::kReleasing:
      return SourcePhase::kPostcopy;
    case S::kPostcopyPaused:
      return SourcePhase::kPostcopyPaused;
    case S::kCompleted:
      return SourcePhase::kCompleted;
    case S::kCancelled:
      return SourcePhase::kCancelled;
    case S::kFailed:
      return SourcePhase::kFailed;
    case S::kCancelling:
      return SourcePhase::kPrecopy;  // see Progress()
  }
  return SourcePhase::kFailed;
}

}  // namespace

const char* SourcePhaseName(SourcePhase p) { return FactsOf(PhaseOf(p)).name; }

HelloParams HelloParamsFor(const SourceConfig& config, const std::string& migration_id) {
  HelloParams p;
  p.migration_id = migration_id;
  p.auth_token = config.options.auth_token;
  p.mode = config.options.mode;
  p.fault_mode = config.options.fault_mode;
  p.fetch_address = config.fetch_address;
  p.source_agent = config.source_agent;
  p.vm_name = config.vm_name;
  // Hello announces the most data streams a migration may open: the
  // operator can add streams during precopy (SetParameters).
  p.streams = kMaxStreamsPerMigration;
  p.fetch_encrypted = config.encrypt_fetch;
  p.recovery_timeout_ms = config.options.recovery_timeout_ms;
  return p;
}

SourceSession::SourceSession(vmm::Vm* vm, SourceConfig config)
    : vm_(vm),
      map_pin_(vm->PinMemoryMap("it is the source of a migration")),
      config_(std::move(config)),
      clock_(config_.clock),
      id_(config_.options.migration_id.empty() ? RandomId() : config_.options.migration_id),
      num_pages_(vm->memory().num_pages()),
      page_size_(vm->memory().page_size()),
      limiter_(config_.options.max_bandwidth, config_.clock),
      counters_(num_pages_),
      push_order_(num_pages_),
      held_by_destination_(num_pages_, false),
      phases_(config_.on_phase),
      destination_(config_.destination),
      downtime_target_ms_(config_.options.downtime_target_ms) {
  streams_ = config_.options.streams > 0 ? config_.options.streams : DefaultStreams();
  absl::MutexLock lock(&mu_);
  target_streams_ = streams_;  // an operator's change before setup goes over it
}

void SourceSession::NotePhaseLocked() {
  phases_.Note(PhaseOf(PhaseOf(state_ == S::kCancelling ? cancelled_in_ : state_)));
}

SourceSession::~SourceSession() {
  if (stream_) stream_->Cancel();
  if (reader_.joinable()) reader_.join();
  if (sampler_.joinable()) sampler_.join();  // Run() ended in a final state
  if (served_) config_.page_server->Unregister(id_);
}

SourceState SourceSession::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

SourceProgress SourceSession::Progress() const {
  SourceProgress p;
  const SourceCounterValues c = counters_.Values();
  absl::MutexLock lock(&mu_);
  p.state = state_;
  p.phase = PhaseOf(state_ == S::kCancelling ? cancelled_in_ : state_);
  p.round = round_;
  // A migration that ended keeps its final figures (no elapsed time or
  // rate that keeps changing).
  const int64_t now = t_ended_ ? t_ended_ : clock_->NowNanos();
  p.elapsed_ms = t_start_ ? (now - t_start_) / 1e6 : 0;
  p.pages_total = num_pages_;
  p.pages_transferred = c.distinct_pages_sent;
  const bool postcopy =
      p.phase == SourcePhase::kPostcopy || p.phase == SourcePhase::kPostcopyPaused;
  p.pages_remaining = postcopy ? push_order_.left() : round_pages_left_;
  p.reconnects = reconnects_;
  p.destination = destination_;
  p.throttle_percent = throttle_percent_;
  if (state_ == S::kPostcopyPaused) p.paused_reason = paused_reason_;
  p.bytes_sent = c.bytes_sent;
  p.bandwidth_bps = p.elapsed_ms > 0 ? p.bytes_sent / (p.elapsed_ms / 1e3) : 0;
  p.dirty_pages_per_sec = dirty_pages_per_sec_;
  p.faults = last_progress_.faults();
  p.fault_p99_us = last_progress_.fault_p99_us();
  if (t_resumed_ > 0) {
    const double since = (now - t_resumed_) / 1e9;
    p.faults_per_sec = since > 0 ? p.faults / since : 0;
    p.downtime_ms = (t_resumed_ - t_pause_) / 1e6;
  }
  // The whole migration. Precopy: pages not sent in this round, and an
  // estimate of those the guest dirtied since it began, are still owed.
  const double total = static_cast<double>(num_pages_);
  const double bw_pages = p.bandwidth_bps / page_size_;
  double owed = total;
  if (state_ == S::kCompleted || state_ == S::kReleasing) {
    owed = 0;
  } else if (postcopy) {
    owed = static_cast<double>(push_order_.left());
    p.eta_ms = bw_pages > 0 && p.phase == SourcePhase::kPostcopy ? owed / bw_pages * 1e3 : -1;
  } else if (p.phase == SourcePhase::kPrecopy && t_round_start_ == 0) {
    owed = total;  // round 0 has not begun: nothing is owed less yet
  } else if (p.phase == SourcePhase::kPrecopy) {
    const double since_round = t_round_start_ ? (now - t_round_start_) / 1e9 : 0;
    owed = std::min(total, round_pages_left_ + dirty_pages_per_sec_ * since_round);
    const double net = bw_pages - dirty_pages_per_sec_;
    p.eta_ms = net > 0 ? owed / net * 1e3 : -1;
  } else if (p.phase == SourcePhase::kSwitchover) {
    owed = std::min(total, static_cast<double>(round_pages_left_));
  }
  p.percent = total > 0 ? 100.0 * (total - owed) / total : 0;
  const bool completed = state_ == S::kCompleted || state_ == S::kReleasing;
  if (!completed) p.percent = std::min(p.percent, 99.9);  // 100 only once completed
  // Never backwards: the highest estimate so far, which a migration that
  // failed or was cancelled keeps.
  p.percent = std::max(p.percent, max_percent_);
  max_percent_ = p.percent;
  return p;
}

absl::Status SourceSession::TransitionLocked(SourceState to) {
  if (state_ == S::kCancelling && to != S::kCancelled && to != S::kFailed)
    return absl::CancelledError("the migration was cancelled");
  RETURN_IF_ERROR(CheckTransition(state_, to));
  state_ = to;
  NotePhaseLocked();
  return absl::OkStatus();
}

absl::Status SourceSession::Transition(SourceState to) {
  absl::MutexLock lock(&mu_);
  return TransitionLocked(to);
}

absl::Status SourceSession::Cancel() {
  absl::MutexLock lock(&mu_);
  if (DestinationMayRun(state_))  // completed included
    return absl::FailedPreconditionError(
        absl::StrFormat("migration %s is %s: the destination runs the VM, so it can no longer be "
                        "cancelled",
                        id_, SourceStateName(state_)));
  if (IsFinal(state_) || state_ == S::kCancelling)
    return absl::FailedPreconditionError(
        absl::StrFormat("migration %s already ended (%s)", id_, SourceStateName(state_)));
  cancelled_in_ = state_;
  RETURN_IF_ERROR(TransitionLocked(S::kCancelling));
  if (stream_) stream_->Cancel();  // unblocks a Write() in progress
  for (auto& ds : data_streams_) ds->Cancel();
  limiter_.Interrupt();               // and a wait for bandwidth
  SetThrottleLocked(0, "cancelled");  // the guest runs at full speed at once
  return absl::OkStatus();
}

absl::Status SourceSession::SetParameters(const ParameterUpdate& update) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckParameterUpdate(id_, state_, update));
  if (update.streams && config_.options.mode == MigrationMode::kPostcopy)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s runs in postcopy mode: it sends no precopy rounds, and its push uses "
        "the streams opened at its start (--streams)",
        id_));
  const double time_ms = t_start_ == 0 ? 0 : (clock_->NowNanos() - t_start_) / 1e6;
  if (update.max_bandwidth) {
    const uint64_t old = limiter_.rate();
    limiter_.SetRate(*update.max_bandwidth);
    parameter_changes_.push_back({time_ms, "max_bandwidth", static_cast<int64_t>(old),
                                  static_cast<int64_t>(*update.max_bandwidth)});
  }
  if (update.downtime_target_ms) {
    parameter_changes_.push_back(
        {time_ms, "downtime_target_ms", downtime_target_ms_, *update.downtime_target_ms});
    downtime_target_ms_ = *update.downtime_target_ms;
  }
  if (update.streams) {
    parameter_changes_.push_back({time_ms, "streams", target_streams_, *update.streams});
    target_streams_ = *update.streams;
  }
  return absl::OkStatus();
}

absl::Status SourceSession::StartPostcopy() {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckStartPostcopy(id_, config_.options.mode, state_));
  postcopy_forced_ = true;
  return absl::OkStatus();
}

void SourceSession::SetThrottle(int percent, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  SetThrottleLocked(percent, reason);
}

void SourceSession::SetThrottleLocked(int percent, const std::string& reason) {
  if (percent == throttle_percent_) return;
  if (percent > throttle_percent_ && (state_ == S::kCancelling || IsFinal(state_))) return;
  vm_->SetThrottle(percent);
  const double time_ms = t_start_ == 0 ? 0 : (clock_->NowNanos() - t_start_) / 1e6;
  ferry::v1::ThrottleChange* change = throttle_changes_.Add();
  change->set_time_ms(time_ms);
  change->set_old_percent(static_cast<uint32_t>(throttle_percent_));
  change->set_new_percent(static_cast<uint32_t>(percent));
  change->set_reason(reason);
  throttle_percent_ = percent;
  max_throttle_percent_ = std::max(max_throttle_percent_, percent);
}

bool SourceSession::PostcopyForced() const {
  absl::MutexLock lock(&mu_);
  return postcopy_forced_;
}

// The decision StartPostcopy() forces.
static PolicyDecision ForcedPostcopy() {
  return {Decision::kPostcopy, "forced by the operator (ferry migration postcopy)"};
}

std::vector<ParameterChange> SourceSession::parameter_changes() const {
  absl::MutexLock lock(&mu_);
  return parameter_changes_;
}

int64_t SourceSession::downtime_target_ms() const {
  absl::MutexLock lock(&mu_);
  return downtime_target_ms_;
}

MigrationOptions SourceSession::PolicyOptions() const {
  MigrationOptions options = config_.options;
  options.downtime_target_ms = downtime_target_ms();
  return options;
}

absl::Status SourceSession::AwaitLocked(const std::function<bool()>& ready, absl::Duration timeout,
                                        const char* what) {
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ready() || !stream_error_.ok() || reader_done_ || state_ == S::kCancelling;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout))
    return absl::DeadlineExceededError(absl::StrFormat("the destination %s did not %s within %s",
                                                       destination_, what,
                                                       absl::FormatDuration(timeout)));
  if (ready()) return absl::OkStatus();
  if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
  if (!stream_error_.ok()) return stream_error_;
  mu_.Unlock();
  absl::Status broke = StreamBroke(absl::StrCat("waiting for it to ", what));
  mu_.Lock();
  return broke;
}

absl::Status SourceSession::Write(const SourceMessage& message) {
  return WriteWith([&] { return stream_->Write(message); });
}

absl::Status SourceSession::WriteFrame(EncodedFrame frame) {
  return WriteWith([&] { return stream_->WriteFrame(std::move(frame)); });
}

absl::Status SourceSession::WriteWith(absl::FunctionRef<bool()> write) {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
    if (!stream_error_.ok()) return stream_error_;
  }
  if (write()) return absl::OkStatus();
  {
    absl::MutexLock lock(&mu_);
    if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
  }
  return StreamBroke("sending");
}

absl::Status SourceSession::StreamBroke(absl::string_view when) {
  std::string destination;
  {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&reader_done_), absl::Seconds(2));
    if (!stream_error_.ok()) return stream_error_;
    destination = destination_;
    if (!reader_done_)
      return absl::UnavailableError(absl::StrFormat(
          "the migration stream to the destination agent at %s broke while %s", destination, when));
  }
  const absl::Status finish = stream_->Finish();
  return absl::UnavailableError(absl::StrFormat(
      "the migration stream to the destination agent at %s broke while %s: %s", destination, when,
      finish.ok() ? "closed by the destination" : finish.message()));
}

void SourceSession::ReaderLoop() {
  DestinationMessage m;
  while (stream_->Read(&m)) {
    absl::MutexLock lock(&mu_);
    HandleMessage(m);
    if (!stream_error_.ok()) {
      // A destination Error or a protocol violation: the stream is done
      // for; unblock a Write() waiting on it.
      stream_->Cancel();
      break;
    }
  }
  absl::MutexLock lock(&mu_);
  reader_done_ = true;
  limiter_.Interrupt();  // the stream ended: a push waiting for bandwidth finds out now
  // After switchover the migration pauses for recovery, which closes the
  // data streams: a push blocked on one of them returns now.
  if (state_ == S::kSwitchingOver || state_ == S::kPostcopy || state_ == S::kCompleting)
    CancelDataStreamsLocked();
}

void SourceSession::HandleMessage(const DestinationMessage& m) {
  last_heard_ns_ = clock_->NowNanos();
  if (absl::Status s = CheckDestinationMessage(state_, m.msg_case()); !s.ok()) {
    // A message out of order ends the migration; the session thread sees
    // stream_error_ at its next write or wait.
    stream_error_ = s;
    stream_refused_ = true;
    return;
  }
  switch (m.msg_case()) {
    case DestinationMessage::kAccepted:
      push_on_data_streams_ = m.accepted().push_on_data_streams();
      stream_error_ = TransitionLocked(S::kAccepted);
      break;
    case DestinationMessage::kRedirect:
      // Setup dials the port; the stream ends here.
      if (m.redirect().port() == 0 || m.redirect().port() > 65535) {
        stream_error_ = absl::InvalidArgumentError(absl::StrFormat(
            "protocol: the destination redirected the migration to port %d", m.redirect().port()));
        stream_refused_ = true;
        break;
      }
      redirect_port_ = m.redirect().port();
      stream_error_ = absl::UnavailableError("redirected");
      break;
    case DestinationMessage::kProgress:
      last_progress_ = m.progress();
      round_acked_ = std::max(round_acked_, m.progress().round_acked());
      if (t_resumed_ == 0) ++precopy_acks_;  // before switchover each one answers a marker
      break;
    case DestinationMessage::kResumed:
      t_resumed_ = clock_->NowNanos();
      dest_switchover_ns_ = m.resumed().switchover_ns();
      stream_error_ = TransitionLocked(S::kPostcopy);
      break;
    case DestinationMessage::kCompleted:
      if (state_ == S::kPostcopyPaused && !peer_proven_) {
        stream_error_ = absl::UnauthenticatedError(
            "protocol: Completed before the destination proved the migration's secret");
        break;
      }
      dest_stats_ = m.completed().stats();
      last_progress_.set_faults(dest_stats_.faults());
      stream_error_ = TransitionLocked(S::kReleasing);
      break;
    case DestinationMessage::kError: {
      stream_error_ = FromErrorMessage(m.error(), "destination: ");
      if (stream_error_.ok())
        stream_error_ = absl::UnknownError("destination: an Error with code 0");
      // On a reconnection, only a peer that proved the secret can refuse
      // for good, or say it never ran the VM (proven too).
      const bool unproven = state_ == S::kPostcopyPaused && !peer_proven_;
      stream_refused_ = !unproven;
      destination_never_ran_ =
          m.error().never_ran() && !unproven && !reconnect_nonce_.empty() &&
          ProofMatches(m.error().never_ran_proof(), NeverRanProof(secret_, id_, reconnect_nonce_));
      if (m.error().never_ran() && !destination_never_ran_)
        stream_error_ = absl::UnauthenticatedError(absl::StrFormat(
            "the agent at %s said it never ran the VM without proving it is this migration's "
            "destination: the VM stays paused (%s)",
            destination_, stream_error_.message()));
      break;
    }
    case DestinationMessage::kChallenge:
      challenge_ = m.challenge();
      break;
    case DestinationMessage::kRecovered:
      if (!peer_proven_) {
        stream_error_ = absl::UnauthenticatedError(
            "protocol: Recovered before the destination proved the migration's secret");
        break;
      }
      present_ = m.recovered().present();
      recovered_ = true;
      break;
    default:
      break;  // CheckDestinationMessage rejected it
  }
}

void SourceSession::SamplerLoop() {
  // From the guest's count at the start: the first sample is the ops of
  // its first interval, not of the VM's life.
  uint64_t last_ops = vm_->Stats().total_ops;
  int64_t last_t = clock_->NowNanos();
  bool dest = false;
  absl::MutexLock lock(&mu_);
  auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return IsFinal(state_); };
  while (!mu_.AwaitWithTimeout(absl::Condition(&ended), kSampleInterval)) {
    DrainOpsTraceLocked();
    const int64_t now = clock_->NowNanos();
    if ((state_ == S::kPostcopy || state_ == S::kCompleting) && stream_error_.ok() &&
        last_heard_ns_ > 0 && now - last_heard_ns_ > kSilenceTimeoutNs && stream_) {
      // A silent destination: end the stream so that recovery starts.
      stream_error_ = absl::UnavailableError(
          absl::StrFormat("the destination agent at %s sent nothing for %d s", destination_,
                          kSilenceTimeoutNs / 1'000'000'000));
      stream_->Cancel();
      CancelDataStreamsLocked();  // a push blocked on one returns too
    }
    // Before the destination runs the guest, its ops are counted here.
    const bool use_dest = t_resumed_ > 0;
    const uint64_t ops = use_dest ? last_progress_.guest_ops() : vm_->Stats().total_ops;
    if (use_dest != dest) {
      dest = use_dest;
      last_ops = use_dest ? 0 : ops;
    }
    const double dt = (now - last_t) / 1e9;
    timeline_.add_timeline_t_ms((now - t_start_) / 1e6);
    timeline_.add_timeline_ops_per_sec(dt > 0 && ops >= last_ops ? (ops - last_ops) / dt : 0);
    timeline_.add_timeline_phase(SourcePhaseName(PhaseOf(state_)));
    last_ops = ops;
    last_t = now;
  }
}

void SourceSession::DrainOpsTraceLocked() {
  // The first call reaches back for the baseline window.
  vm_->ops_meter().AppendTo(&ops_trace_,
                            t_start_ - absl::ToInt64Nanoseconds(kBaselineWindow + kWarmUp),
                            kMaxOpsTraceRows);
}

void SourceSession::FillImpactLocked(MigrationReport& r) {
  const ferry::v1::DestinationStats& d = dest_stats_;
  r.set_blocktime_ms(d.blocked_ns() / 1e6);
  r.clear_blocktime_ms_per_vcpu();
  if (d.blocked_ns_per_vcpu_size() <= r.vcpus())
    for (uint64_t ns : d.blocked_ns_per_vcpu()) r.add_blocktime_ms_per_vcpu(ns / 1e6);
  DrainOpsTraceLocked();
  absl::StatusOr<Baseline> base =
      MeasureBaseline(ops_trace_, vm_->ops_meter().first_sample_ns(), t_start_);
  if (!base.ok()) {
    r.set_impact_note(std::string(base.status().message()));
    return;
  }
  // The destination's samples: their length bounded here, their shape
  // (vCPUs, counts per row, order) checked by Stitch.
  std::optional<vmm::OpsTrace> dest;
  if (t_resumed_ > 0 && d.has_ops_trace() && d.ops_trace().t_ns_size() > 0) {
    const ferry::v1::OpsTrace& t = d.ops_trace();
    if (static_cast<size_t>(t.t_ns_size()) > MaxOpsTraceRows(r.vcpus())) {
      r.set_impact_note(absl::StrFormat(
          "the destination's ops trace has %d rows, more than the %d a %d-vCPU VM may send",
          t.t_ns_size(), MaxOpsTraceRows(r.vcpus()), r.vcpus()));
      return;
    }
    dest.emplace();
    dest->vcpus = static_cast<int>(t.vcpus());
    dest->t_ns.assign(t.t_ns().begin(), t.t_ns().end());
    dest->ops.assign(t.ops().begin(), t.ops().end());
  }
  // Without a destination that ran, the source's own samples to the end
  // (a failed migration: the source VM ran on or stayed paused).
  const int64_t until = t_resumed_ > 0 ? t_resumed_ : t_end_;
  absl::StatusOr<GuestTimeline> tl =
      Stitch(ops_trace_, until, dest ? &*dest : nullptr, base->counted);
  if (!tl.ok()) {
    r.set_impact_note(std::string(tl.status().message()));
    return;
  }
  r.set_impact_measured(true);
  r.set_baseline_ops_per_sec(base->ops_per_sec);
  r.set_baseline_window_ms(base->window_ms);
  // The same figures over the baseline window itself: the guest's own
  // unevenness with no migration, in the same run.
  const ImpactFigures quiet = Figures(*tl, base->ops_per_sec, base->from_ns, base->to_ns);
  r.set_baseline_below_half_ms(quiet.below_half_ms);
  r.set_baseline_mgu_10ms(quiet.mgu_10ms);
  r.set_baseline_mgu_100ms(quiet.mgu_100ms);
  // Up to the last sample: what the guest did after it (while the source
  // released the VM) is not known, and is not a stall.
  const int64_t end = tl->t_ns.empty() ? t_end_ : std::min(t_end_, tl->t_ns.back());
  const ImpactFigures all = Figures(*tl, base->ops_per_sec, t_start_, end);
  r.set_below_half_ms(all.below_half_ms);
  r.set_mgu_10ms(all.mgu_10ms);
  r.set_mgu_100ms(all.mgu_100ms);
  r.set_mgu_1s(all.mgu_1s);
  const int64_t precopy_end = std::min(t_pause_ ? t_pause_ : t_end_, end);
  if (t_precopy_ > 0 && precopy_end > t_precopy_) {
    const ImpactFigures pre = Figures(*tl, base->ops_per_sec, t_precopy_, precopy_end);
    r.set_precopy_below_half_ms(pre.below_half_ms);
    r.set_precopy_mgu_10ms(pre.mgu_10ms);
    r.set_precopy_mgu_100ms(pre.mgu_100ms);
    r.set_precopy_mgu_1s(pre.mgu_1s);
  }
  r.clear_mgu_curve_window_ms();
  r.clear_mgu_curve();
  for (double w : kMguCurveWindowsMs) {
    r.add_mgu_curve_window_ms(w);
    r.add_mgu_curve(
        MinUtilization(*tl, base->ops_per_sec, t_start_, end, static_cast<int64_t>(w * 1e6)));
  }
}

void SourceSession::OnServed(uint64_t gpa, uint32_t count) {
  // On the page server thread: a destination vCPU faulted on these pages.
  auto offset = vm_->memory().map().GpaToOffset(gpa, uint64_t{count} * page_size_);
  if (!offset.ok()) return;
  const uint64_t first = *offset / page_size_;
  for (uint64_t p = first; p < first + count; ++p) {
    push_order_.Take(p);  // the push need not send it again
    push_order_.RecordFault(p);
    counters_.PageSent(p, /*is_data=*/true);
    counters_.DemandPageServed();
    counters_.BytesSent(SendPath::kDemand, page_size_);
  }
  // Demand pages go out at once (a vCPU waits on them) but count against
  // the bandwidth cap: the push leaves room for them.
  limiter_.Charge(uint64_t{count} * page_size_);
}

absl::Status SourceSession::Failed(absl::Status status) {
  SourceState from;
  bool cancelled;
  {
    absl::MutexLock lock(&mu_);
    // Before the state is final (a raise is refused then, a release never).
    SetThrottleLocked(0, state_ == S::kCancelling ? "cancelled" : "the migration failed");
    from = state_ == S::kCancelling ? cancelled_in_ : state_;
    cancelled = state_ == S::kCancelling;
    if (cancelled) status = absl::CancelledError("the migration was cancelled");
    // Any live state may fail (source_state.h); cancelling ends cancelled.
    state_ = cancelled ? S::kCancelled : S::kFailed;
    NotePhaseLocked();
  }
  bool never_ran;
  {
    absl::MutexLock lock(&mu_);
    never_ran = destination_never_ran_;
  }
  // The destination may have run the VM, unless it said it never did.
  const bool switched = DestinationMayRun(from) && !never_ran;
  kept_paused_ = switched;
  if (!switched) {
    // Invariant 2: before switchover the source VM stays authoritative.
    if (stream_) {
      SourceMessage abort;
      abort.mutable_abort()->set_reason(std::string(status.message()));
      (void)stream_->Write(abort);
    }
    dirty_log_.reset();
    // This session paused it.
    if (from == S::kPaused || DestinationMayRun(from)) (void)vm_->Resume();
  }
  if (served_) config_.page_server->Unregister(id_);
  if (stream_) stream_->Cancel();
  {
    absl::MutexLock lock(&mu_);
    for (auto& ds : data_streams_) ds->Cancel();
  }
  report_.set_outcome(absl::StrCat(cancelled ? "cancelled" : "failed", ": ", status.message(),
                                   switched ? " (after switchover: the source VM is kept "
                                              "paused with all of its memory)"
                                            : " (the source VM keeps running)"));
  t_end_ = clock_->NowNanos();
  {
    absl::MutexLock lock(&mu_);
    t_ended_ = t_end_;
  }
  FillReport();
  return status;
}

absl::Status SourceSession::Run() {
  absl::Status s = RunToEnd();
  // Every path released the throttle already (Switchover, Failed); this is
  // the backstop that makes sure the guest is never left throttled.
  if (config_.options.auto_converge) vm_->SetThrottle(0);
  CloseStreams();
  // The map may change again. A VM kept paused for a destination that may
  // have run it (invariant 3) is held by the agent, which refuses changes to
  // it until an operator resumes it (the session may outlive that).
  map_pin_ = vmm::MemoryMapPin();
  return s;
}

void SourceSession::CloseStreams() {
  // The migration ended (a final state): its connections close now, so a
  // finished migration kept for `migration get` holds no socket and no
  // thread. Cancel() refuses a final migration, so nothing else touches
  // the streams.
  {
    absl::MutexLock lock(&mu_);
    if (stream_) stream_->Cancel();
    for (auto& ds : data_streams_) ds->Cancel();
  }
  if (reader_.joinable()) reader_.join();
  std::unique_ptr<SourceStream> main;
  std::vector<std::unique_ptr<SourceStream>> data;
  {
    absl::MutexLock lock(&mu_);
    main = std::move(stream_);
    data.swap(data_streams_);
  }
}

absl::Status SourceSession::RunToEnd() {
  copy_fallbacks_at_start_ = FrameCopyFallbacks();
  if (config_.frame_data.has_value()) {
    frame_data_ = *config_.frame_data;
    send_path_reason_ = absl::StrCat(FrameDataName(frame_data_), " (as configured)");
  } else {
    const SendPathChoice& c = ChooseSendPath();
    frame_data_ = c.data;
    send_path_reason_ = c.reason;
  }
  {
    absl::MutexLock lock(&mu_);
    t_start_ = clock_->NowNanos();
    NotePhaseLocked();      // setup
    DrainOpsTraceLocked();  // the baseline window, before the start
  }
  sampler_ = std::thread(&SourceSession::SamplerLoop, this);
  if (absl::Status s = Setup(); !s.ok()) return Failed(s);
  PolicyDecision decision;
  std::vector<uint64_t> dirty;
  t_precopy_ = clock_->NowNanos();
  if (config_.options.mode == MigrationMode::kPostcopy) {
    decision = {Decision::kPostcopy, "postcopy mode: switch over at once"};
  } else if (absl::Status s = Precopy(&decision, &dirty); !s.ok()) {
    return Failed(s);
  }
  if (decision.decision == Decision::kFail)
    return Failed(absl::FailedPreconditionError(decision.reason));
  switchover_reason_ = decision.reason;
  if (decision.decision == Decision::kPostcopy && dirty.size() > kSmallDiscard) {
    if (absl::Status s = DiscardEarly(&dirty); !s.ok()) return Failed(s);
  }
  absl::Status s = Switchover(decision, std::move(dirty));
  for (;;) {
    if (s.ok()) s = Postcopy();
    if (s.ok()) s = AwaitCompleted();
    if (s.ok()) break;
    // After switchover a broken stream pauses the migration; it goes on
    // once reconnected.
    if (!Recoverable()) return Failed(s);
    s = Recover(s);
    if (!s.ok()) return Failed(s);
    if (state() == S::kReleasing) break;  // it had completed
  }
  return Release();
}

absl::Status SourceSession::Setup() {
  RETURN_IF_ERROR(ValidateMigrationOptions(config_.options));
  if (config_.page_server == nullptr)
    return absl::InvalidArgumentError("the source needs a page server");
  fetch::Secret& secret = secret_;
  RETURN_IF_ERROR(fetch::RandomBytes(absl::MakeSpan(secret)));
  served_ = std::make_shared<fetch::ServedMigration>(
      id_, secret, &vm_->memory(), [this](uint64_t gpa, uint32_t count) { OnServed(gpa, count); },
      config_.encrypt_fetch);
  config_.page_server->Register(served_);

  // At most two Hellos: the agent dialled may redirect the migration to
  // the ferry-vmm process that takes it (Redirect in migration.proto).
  for (int hop = 0;; ++hop) {
    absl::StatusOr<std::unique_ptr<SourceStream>> stream = OpenStream();
    RETURN_IF_ERROR(stream.status());
    {
      absl::MutexLock lock(&mu_);
      if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
      stream_ = *std::move(stream);
    }
    reader_ = std::thread(&SourceSession::ReaderLoop, this);

    const HelloParams p = HelloParamsFor(config_, id_);
    SourceMessage hello_msg;
    *hello_msg.mutable_hello() = MakeHello(*vm_, p, secret);
    RETURN_IF_ERROR(Write(hello_msg));
    uint32_t redirect = 0;
    {
      absl::MutexLock lock(&mu_);
      absl::Status accepted =
          AwaitLocked([this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return state_ == S::kAccepted; },
                      kAcceptTimeout, "accept the migration");
      redirect = redirect_port_;
      redirect_port_ = 0;
      if (redirect == 0) RETURN_IF_ERROR(accepted);
    }
    if (redirect == 0) break;
    if (hop > 0)
      return absl::FailedPreconditionError(
          "protocol: the destination redirected the migration a second time");
    // The redirecting agent ends its stream; a new one goes to the port.
    stream_->Cancel();
    reader_.join();
    (void)stream_->Finish();
    absl::MutexLock lock(&mu_);
    auto hp = SplitHostPort(destination_);
    if (!hp.ok()) return hp.status();
    destination_ = JoinHostPort(hp->first, redirect);
    stream_error_ = absl::OkStatus();
    stream_refused_ = false;
    reader_done_ = false;
  }
  RETURN_IF_ERROR(OpenDataStreams(streams_));
  active_streams_ = streams_;
  return absl::OkStatus();
}

absl::Status SourceSession::ApplyStreamChange() {
  int target;
  {
    absl::MutexLock lock(&mu_);
    target = target_streams_;
  }
  const int active = active_streams_.load();
  if (target == active) return absl::OkStatus();
  // With another count, a chunk's pages may travel on another stream than
  // their older copies: every frame sent so far must be installed first.
  // Each batch ended with the data streams flushed; the main stream's
  // frames are installed once the destination acknowledged the last
  // RoundEnd (it handles the main stream in order).
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(AwaitLocked(
        [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return precopy_acks_ >= markers_sent_; },
        kAcceptTimeout, "confirm the last round before the streams change"));
  }
  const size_t had = data_streams_.size();
  if (static_cast<size_t>(target) > had + 1) {
    if (absl::Status s = OpenDataStreams(target); !s.ok()) {
      {
        absl::MutexLock lock(&mu_);
        // The migration itself broke or was cancelled: that ends it.
        if (state_ == S::kCancelling || !stream_error_.ok()) return s;
      }
      // Only a new stream failed: precopy goes on over the streams that
      // joined; the report shows the count taken back.
      {
        absl::MutexLock lock(&mu_);
        const int reached = static_cast<int>(data_streams_.size()) + 1;
        const double time_ms = (clock_->NowNanos() - t_start_) / 1e6;
        parameter_changes_.push_back({time_ms, "streams", target, reached});
        target_streams_ = reached;
        target = reached;
      }
    }
  }
  active_streams_ = target;
  return absl::OkStatus();
}

absl::Status SourceSession::OpenDataStreams(int total) {
  for (int i = static_cast<int>(data_streams_.size()) + 1; i < total; ++i) {
    absl::StatusOr<std::unique_ptr<SourceStream>> ds = OpenStream();
    RETURN_IF_ERROR(ds.status());
    SourceStream* raw = ds->get();
    {
      absl::MutexLock lock(&mu_);
      if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
      data_streams_.push_back(*std::move(ds));
    }
    auto join = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::string nonce, NewNonce());
      SourceMessage join;
      join.mutable_join()->set_migration_id(id_);
      join.mutable_join()->set_auth_token(config_.options.auth_token);
      join.mutable_join()->set_index(static_cast<uint32_t>(i));
      join.mutable_join()->set_nonce(nonce);
      DestinationMessage reply;
      if (!raw->Write(join) || !raw->Read(&reply)) return DataStreamError(i, "joining");
      if (reply.has_error())
        return FromErrorMessage(reply.error(), absl::StrCat("destination: data stream ", i, ": "));
      if (!reply.has_challenge())
        return absl::FailedPreconditionError(absl::StrCat(
            "protocol: the destination answered Join on data stream ", i, " without Challenge"));
      RETURN_IF_ERROR(CheckNonce(reply.challenge().nonce(), "Challenge"));
      if (!ProofMatches(reply.challenge().proof(),
                        DestinationProof(secret_, id_, nonce, reply.challenge().nonce())))
        return absl::UnauthenticatedError(absl::StrFormat(
            "data stream %d: the agent at %s could not prove it holds this migration's secret", i,
            config_.destination));
      SourceMessage proof;
      proof.mutable_stream_proof()->set_proof(
          SourceProof(secret_, id_, nonce, reply.challenge().nonce()));
      if (!raw->Write(proof) || !raw->Read(&reply)) return DataStreamError(i, "joining");
      if (reply.has_error())
        return FromErrorMessage(reply.error(), absl::StrCat("destination: data stream ", i, ": "));
      if (!reply.has_accepted())
        return absl::FailedPreconditionError(absl::StrCat(
            "protocol: the destination answered Join on data stream ", i, " without Accepted"));
      return absl::OkStatus();
    };
    if (absl::Status s = join(); !s.ok()) {
      // Only joined streams stay: a later raise may try again.
      std::unique_ptr<SourceStream> gone;
      {
        absl::MutexLock lock(&mu_);
        gone = std::move(data_streams_.back());
        data_streams_.pop_back();
      }
      gone->Cancel();
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status SourceSession::DataStreamError(size_t index, absl::string_view when) {
  bool main_ended;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
    if (!stream_error_.ok()) return stream_error_;  // the main stream knows why
    main_ended = reader_done_;
  }
  // The main stream ended first (its end cancels the data streams after
  // switchover): that is the cause to report.
  if (main_ended) return StreamBroke(when);
  SourceStream* ds = data_streams_[index - 1].get();
  ds->Cancel();
  const absl::Status finish = ds->Finish();
  return absl::UnavailableError(absl::StrFormat(
      "data stream %d to the destination agent at %s broke while %s%s", index, config_.destination,
      when, finish.ok() ? "" : absl::StrCat(": ", finish.message())));
}

absl::Status SourceSession::FlushDataStreams() {
  if (data_streams_.empty()) return absl::OkStatus();
  const uint64_t seq = ++flush_seq_;
  SourceMessage flush;
  flush.mutable_flush()->set_seq(seq);
  for (size_t i = 0; i < data_streams_.size(); ++i)
    if (!data_streams_[i]->Write(flush)) return DataStreamError(i + 1, "flushing");
  for (size_t i = 0; i < data_streams_.size(); ++i) {
    DestinationMessage reply;
    if (!data_streams_[i]->Read(&reply)) return DataStreamError(i + 1, "flushing");
    if (reply.has_error())
      return FromErrorMessage(reply.error(),
                              absl::StrCat("destination: data stream ", i + 1, ": "));
    if (!reply.has_flushed() || reply.flushed().seq() != seq)
      return absl::FailedPreconditionError(absl::StrFormat(
          "protocol: data stream %d answered Flush %d with something else", i + 1, seq));
  }
  return absl::OkStatus();
}

absl::Status SourceSession::SendPages(const std::vector<uint64_t>& pages, FramePhase phase,
                                      uint64_t round) {
  // Precopy is striped over the streams in use (a change applies between
  // rounds: ApplyStreamChange), each page on the stream of its chunk
  // (kStreamChunkPages) so that a resent page follows its older copy, and
  // flushed at the end. The postcopy push is striped over every stream it
  // still has (PushStreams), frame by frame in turn: its pages are final
  // and each is pushed once, so no order between streams matters and no
  // frame waits for another (Postcopy flushes once, after the last).
  // Stop-and-copy goes on the main stream, ordered before Switchover.
  const bool postcopy = phase == FramePhase::kPostcopy;
  const size_t n = phase == FramePhase::kPrecopy ? static_cast<size_t>(active_streams_.load())
                   : postcopy                    ? PushStreams()
                                                 : 1;
  const size_t frame_pages = postcopy ? kPushFramePages : kBulkFramePages;
  std::vector<std::vector<uint64_t>> striped;
  std::vector<absl::Span<const uint64_t>> left;  // what each stream has still to send
  if (n == 1) {
    left.push_back(pages);
  } else {
    // Precopy: by chunk. Postcopy: by frame, in turn, so each frame keeps
    // the push order's runs.
    striped.resize(n);
    for (size_t i = 0; i < pages.size(); ++i)
      striped[postcopy ? (i / frame_pages) % n : (pages[i] / kStreamChunkPages) % n].push_back(
          pages[i]);
    left.assign(striped.begin(), striped.end());
  }
  for (bool more = true; more;) {
    more = false;
    for (size_t s = 0; s < n; ++s) {
      if (left[s].empty()) continue;
      more = true;
      const size_t k = std::min<size_t>(frame_pages, left[s].size());
      EncodedFrame frame = Encode(left[s].subspan(0, k), phase, round);
      left[s].remove_prefix(k);
      const FrameTally tally{frame.wire_bytes(), frame.data_pages(), frame.zero_pages()};
      limiter_.Acquire(tally.wire_bytes);
      RETURN_IF_ERROR(s == 0 ? WriteFrame(std::move(frame)) : WriteDataFrame(s, std::move(frame)));
      CountFrame(tally, phase, k);
    }
  }
  return n > 1 && !postcopy ? FlushDataStreams() : absl::OkStatus();
}

size_t SourceSession::PushStreams() const {
  if (!push_on_data_streams_.load()) return 1;  // an older destination
  return std::min<size_t>(active_streams_.load(), data_streams_.size() + 1);
}

void SourceSession::CancelDataStreamsLocked() {
  for (auto& ds : data_streams_) ds->Cancel();
}

void SourceSession::DropDataStreams() {
  std::vector<std::unique_ptr<SourceStream>> gone;
  {
    absl::MutexLock lock(&mu_);
    gone.swap(data_streams_);
  }
  active_streams_ = 1;
  for (auto& ds : gone) {
    ds->Cancel();
    (void)ds->Finish();
  }
}

absl::Status SourceSession::WriteDataFrame(size_t index, EncodedFrame frame) {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
    if (!stream_error_.ok()) return stream_error_;
  }
  if (!data_streams_[index - 1]->WriteFrame(std::move(frame)))
    return DataStreamError(index, "sending");
  return absl::OkStatus();
}

EncodedFrame SourceSession::Encode(absl::Span<const uint64_t> pages, FramePhase phase,
                                   uint64_t round) {
  return EncodePageFrame(
      vm_->memory(), pages, phase, round,
      [this](uint64_t page, bool is_data) {
        counters_.PageSent(page, is_data);
        held_by_destination_[page] = true;
      },
      frame_data_);
}

void SourceSession::CountFrame(const FrameTally& tally, FramePhase phase, uint64_t pages) {
  if (phase != FramePhase::kPostcopy) {
    absl::MutexLock lock(&mu_);
    round_pages_left_ -= std::min<uint64_t>(round_pages_left_, pages);
  }
  if (phase == FramePhase::kPostcopy) counters_.PagesPushed(pages);  // frame by frame
  counters_.BytesSent(PathOf(phase), tally.wire_bytes);
  counters_.DataPagesSent(tally.data_pages);
  counters_.ZeroPagesSent(tally.zero_pages);
}

absl::Status SourceSession::Precopy(PolicyDecision* decision, std::vector<uint64_t>* dirty) {
  RETURN_IF_ERROR(Transition(S::kPrecopy));
  // Track writes from before round 0 reads the first page, so a page that
  // changes while it is being sent is sent again.
  ASSIGN_OR_RETURN(dirty_log_,
                   config_.start_dirty_log ? config_.start_dirty_log(vm_) : vm_->StartDirtyLog());
  dirty_log_name_ = dirty_log_->Name();
  int64_t round_start = clock_->NowNanos();  // the dirty log's interval starts
  {
    absl::MutexLock lock(&mu_);
    round_pages_left_ = num_pages_;
    t_round_start_ = round_start;
  }
  // Round 0, in chunks; between chunks the dirty log is sampled now and
  // then, so that a hybrid migration of a guest that rewrites memory faster
  // than precopy could keep up switches before it sends it all.
  std::vector<uint64_t> early_dirty;  // written during round 0 (sorted)
  std::vector<uint64_t> early_stale;  // of those, written after they were sent
  {
    std::vector<uint64_t> chunk, sample, merged;
    int64_t last_sample = round_start;
    for (uint64_t first = 0; first < num_pages_; first += kRoundZeroChunkPages) {
      const uint64_t n = std::min<uint64_t>(kRoundZeroChunkPages, num_pages_ - first);
      chunk.resize(n);
      for (uint64_t i = 0; i < n; ++i) chunk[i] = first + i;
      RETURN_IF_ERROR(SendPages(chunk, FramePhase::kPrecopy, 0));
      const int64_t now = clock_->NowNanos();
      const bool forced = PostcopyForced();
      if (!forced && (first + n >= num_pages_ || now - last_sample < kRoundZeroSampleNs)) continue;
      last_sample = now;
      RETURN_IF_ERROR(dirty_log_->Collect(&sample));  // ascending
      for (uint64_t p : sample)
        if (p < first + n) early_stale.push_back(p);  // already sent: stale now
      merged.clear();
      std::set_union(early_dirty.begin(), early_dirty.end(), sample.begin(), sample.end(),
                     std::back_inserter(merged));
      early_dirty.swap(merged);
      FirstRoundSample s;
      s.seconds = (now - round_start) / 1e9;
      s.pages_sent = first + n;
      s.pages_total = num_pages_;
      s.pages_dirtied = early_dirty.size();
      s.bandwidth_bps = counters_.bytes_sent() / s.seconds;
      s.page_size = page_size_;
      *decision = forced ? ForcedPostcopy() : DecideDuringFirstRound(PolicyOptions(), s);
      if (decision->decision == Decision::kPostcopy) {
        precopy_rounds_ = 0;
        precopy_bytes_ = counters_.bytes_sent();
        // Round 0 ends here, cut short: its marker lets the pause wait
        // until the destination installed what was sent.
        SourceMessage cut;
        cut.mutable_round_end()->set_round(0);
        cut.mutable_round_end()->set_pages(first + n);
        RETURN_IF_ERROR(Write(cut));
        ++markers_sent_;
        *dirty = std::move(early_dirty);  // pages never sent are not held: they go too
        return absl::OkStatus();
      }
    }
  }
  std::sort(early_stale.begin(), early_stale.end());
  early_stale.erase(std::unique(early_stale.begin(), early_stale.end()), early_stale.end());
  SourceMessage end;
  end.mutable_round_end()->set_round(0);
  end.mutable_round_end()->set_pages(num_pages_);
  RETURN_IF_ERROR(Write(end));
  ++markers_sent_;

  RoundFacts facts;
  facts.page_size = page_size_;
  std::vector<uint64_t> previous = std::move(early_dirty);  // the last round's dirty set
  // Stale pages not sent in the last round: hot ones held back (and, after
  // round 0, those written after they were sent while round 0 ran).
  std::vector<uint64_t> held = std::move(early_stale);
  std::vector<uint64_t> hot, stale, to_send;
  uint64_t bytes_at_round_start = 0;
  int rounds_at_throttle = 0;  // whole rounds under the current throttle
  for (int round = 1;; ++round) {
    {
      // What the destination reported goes before any decision of ours.
      absl::MutexLock lock(&mu_);
      if (!stream_error_.ok()) return stream_error_;
    }
    dirty->clear();
    RETURN_IF_ERROR(dirty_log_->Collect(dirty));  // ascending
    const int64_t now = clock_->NowNanos();
    const double round_seconds = std::max<int64_t>(1, now - round_start) / 1e9;
    // Hot: written in this round and the one before; sending them now would
    // only make another stale copy.
    hot.clear();
    std::set_intersection(dirty->begin(), dirty->end(), previous.begin(), previous.end(),
                          std::back_inserter(hot));
    stale.clear();
    std::set_union(dirty->begin(), dirty->end(), held.begin(), held.end(),
                   std::back_inserter(stale));
    const uint64_t round_bytes = counters_.bytes_sent() - bytes_at_round_start;
    bytes_at_round_start = counters_.bytes_sent();
    // The last round's rate when it moved enough to measure; else the
    // average since precopy began.
    const double average = counters_.bytes_sent() / (std::max<int64_t>(1, now - t_precopy_) / 1e9);
    if (facts.rounds_done > 0) facts.history.push_back(facts.pages_stale);
    facts.rounds_done = round;
    facts.pages_stale = stale.size();
    facts.pages_hot = hot.size();
    facts.pages_dirtied = dirty->size();
    facts.round_seconds = round_seconds;
    facts.bandwidth_bps = round_bytes >= (16u << 20) ? round_bytes / round_seconds : average;
    {
      absl::MutexLock lock(&mu_);
      round_ = round;
      round_pages_left_ = stale.size() - hot.size();
      dirty_pages_per_sec_ = dirty->size() / round_seconds;
      t_round_start_ = now;
    }
    round_start = now;
    {
      absl::MutexLock lock(&mu_);
      facts.throttle_percent = throttle_percent_;
    }
    facts.rounds_at_throttle = ++rounds_at_throttle;
    *decision = PostcopyForced() ? ForcedPostcopy() : DecideAfterRound(PolicyOptions(), facts);
    if (decision->decision == Decision::kThrottle) {
      // Auto-converge: the next round runs with the guest slowed down.
      SetThrottle(decision->throttle_percent, decision->reason);
      rounds_at_throttle = 0;  // the next round is the first whole one under it
    } else if (decision->decision != Decision::kNextRound) {
      precopy_rounds_ = round;
      precopy_bytes_ = counters_.bytes_sent();
      *dirty = std::move(stale);  // everything the destination lacks or holds stale
      return absl::OkStatus();
    }
    to_send.clear();
    std::set_difference(stale.begin(), stale.end(), hot.begin(), hot.end(),
                        std::back_inserter(to_send));
    pages_held_back_ += hot.size();
    RETURN_IF_ERROR(ApplyStreamChange());
    RETURN_IF_ERROR(SendPages(to_send, FramePhase::kPrecopy, round));
    end.mutable_round_end()->set_round(round);
    end.mutable_round_end()->set_pages(to_send.size());
    RETURN_IF_ERROR(Write(end));
    ++markers_sent_;
    held.swap(hot);
    previous.swap(*dirty);
  }
}

absl::Status SourceSession::DiscardEarly(std::vector<uint64_t>* dirty) {
  // Going postcopy: the last round's dirty pages are stale at the
  // destination. Dropping them costs about 0.3 us a page; do it while the
  // source still runs, so the pause only discards its last moment's writes.
  // Each discard takes a while, during which the guest dirties more; repeat
  // on the (shrinking) new dirty set until what is left is small.
  RETURN_IF_ERROR(Transition(S::kDiscarding));
  for (int i = 0; i < kMaxEarlyDiscards && dirty->size() > kSmallDiscard; ++i) {
    RETURN_IF_ERROR(SendDiscard(*dirty));
    dirty->clear();
    RETURN_IF_ERROR(dirty_log_->Collect(dirty));
  }
  return absl::OkStatus();
}

absl::Status SourceSession::SendDiscard(const std::vector<uint64_t>& pages) {
  const vmm::MemoryMap& map = vm_->memory().map();
  SourceMessage msg;
  std::vector<uint64_t> stale;
  for (uint64_t p : pages) {  // ascending (the dirty log's order)
    if (!held_by_destination_[p]) continue;
    held_by_destination_[p] = false;
    ++pages_discarded_;
    stale.push_back(p);
  }
  if (stale.empty()) return absl::OkStatus();
  AppendPageRuns(map, stale, msg.mutable_discard()->mutable_runs());
  const uint64_t seq = precopy_rounds_ + ++early_discards_;
  msg.mutable_discard()->set_round(seq);
  RETURN_IF_ERROR(Write(msg));
  ++markers_sent_;
  // Wait until the destination has dropped them, so the Switchover message
  // does not queue behind that work while the source is paused.
  absl::MutexLock lock(&mu_);
  return AwaitLocked([this, seq]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return round_acked_ >= seq; },
                     kAcceptTimeout, "confirm the discard");
}

absl::Status SourceSession::Switchover(const PolicyDecision& decision,
                                       std::vector<uint64_t> dirty) {
  {
    // Checked before pausing, so a Cancel() that came first leaves the VM
    // untouched; Pause() itself is quick (vCPUs stop at the next op).
    absl::MutexLock lock(&mu_);
    if (state_ == S::kCancelling) return absl::CancelledError("the migration was cancelled");
  }
  if (decision.decision == Decision::kPostcopy) {
    // Pages the destination never received stay unsent whatever happens
    // during the pause: mark them now, so the pause only handles its last
    // dirty set.
    for (uint64_t p = 0; p < num_pages_; ++p)
      if (!held_by_destination_[p]) push_order_.MarkUnsent(p);
  }
  {
    // Frames still in flight would be installed during the pause (the
    // stream is ordered): wait until the destination acknowledged every
    // round marker and discard sent so far.
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(AwaitLocked(
        [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return precopy_acks_ >= markers_sent_; },
        kAcceptTimeout, "install the pages sent before the pause"));
  }
  // Auto-converge's throttle ends here, so neither copy of the VM resumes
  // throttled (and the pause does not wait out a throttle's sleep).
  SetThrottle(0, "switchover");
  t_pause_ = clock_->NowNanos();  // downtime starts
  RETURN_IF_ERROR(vm_->Pause());
  if (absl::Status s = Transition(S::kPaused); !s.ok()) {
    (void)vm_->Resume();  // a Cancel() came while pausing
    return s;
  }
  // The final dirty set: pages written since the last scan.
  if (dirty_log_) {
    std::vector<uint64_t> last;
    RETURN_IF_ERROR(dirty_log_->CollectFinal(&last));
    dirty.insert(dirty.end(), last.begin(), last.end());
    std::sort(dirty.begin(), dirty.end());
    dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());
    // The log is torn down after Resumed: unregistering 1 GiB of
    // write-protected memory takes milliseconds the pause does not need.
  }
  ASSIGN_OR_RETURN(std::vector<std::string> states, vm_->SaveVcpuStates());
  // What the guest has touched (its allocated pages), for the memory report.
  if (absl::StatusOr<uint64_t> resident = vm_->memory().AllocatedBytes(); resident.ok())
    guest_resident_bytes_ = *resident;
  SourceMessage msg;
  ferry::v1::Switchover* sw = msg.mutable_switchover();
  for (std::string& s : states) sw->add_vcpu_states(std::move(s));

  if (decision.decision == Decision::kStopAndCopy) {
    RETURN_IF_ERROR(SendPages(dirty, FramePhase::kStopAndCopy, precopy_rounds_));
    sw->set_postcopy(false);
  } else {
    // Postcopy: everything not at the destination (marked before the
    // pause), or stale there, remains.
    std::vector<uint64_t> stale;
    for (uint64_t p : dirty) {  // ascending
      push_order_.MarkUnsent(p);
      if (held_by_destination_[p]) stale.push_back(p);
    }
    AppendPageRuns(vm_->memory().map(), stale, sw->mutable_discard());
    pages_discarded_ += stale.size();
    sw->set_postcopy(push_order_.left() > 0);
    sw->set_pages_remaining(push_order_.left());
    served_->EnableServing();  // the memory is final: serve demand requests
  }
  // From here on the destination may run the VM.
  RETURN_IF_ERROR(Transition(S::kSwitchingOver));
  RETURN_IF_ERROR(Write(msg));
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(
        AwaitLocked([this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return state_ == S::kPostcopy; },
                    kResumeTimeout, "resume the VM"));
  }
  // The dirty log stays until the VM is released: tearing it down
  // (unregistering write protection over all of guest memory) holds this
  // process's mmap lock for tens of milliseconds (36 ms for 1 GiB here),
  // and the page server, answering the destination's first fetches and
  // lane handshakes right now, would wait on it (docs/benchmarks.md,
  // "Guest impact").
  return absl::OkStatus();
}

absl::Status SourceSession::Postcopy() {
  // The push runs at the agent's priority. At nice 10 (to put the page
  // server's demand replies first) it took 1.4x as long on an idle 1 GiB
  // guest, and faults were no faster in the same runs (the page server
  // runs at nice -10 where allowed): docs/benchmarks.md, "The postcopy
  // push".
  // A frame for each stream in turn (SendPages); a recovery leaves the
  // main stream only.
  std::vector<uint64_t> batch;
  if (push_streams_ == 0 && push_order_.left() > 0) push_streams_ = PushStreams();
  while (push_order_.left() > 0) {
    push_order_.NextBatch(kPushFramePages * PushStreams(), &batch);
    if (batch.empty()) continue;  // the page server took the last ones
    RETURN_IF_ERROR(SendPages(batch, FramePhase::kPostcopy, 0));
  }
  // Every data stream's frames are installed before Complete: a data stream
  // that broke after its last write is found here (and recovered from),
  // not by a destination waiting for pages nobody sends.
  if (push_streams_ > 1 && PushStreams() > 1) RETURN_IF_ERROR(FlushDataStreams());
  SourceMessage complete;
  complete.mutable_complete()->set_pages_pushed(counters_.pages_pushed());
  RETURN_IF_ERROR(Transition(S::kCompleting));
  return Write(complete);
}

absl::Status SourceSession::AwaitCompleted() {
  absl::MutexLock lock(&mu_);
  return AwaitLocked([this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return state_ == S::kReleasing; },
                     absl::InfiniteDuration(), "confirm every page");
}

absl::Status SourceSession::Release() {
  // The destination holds every page: release the VM.
  config_.page_server->Unregister(id_);
  demand_service_ = served_->service_time();
  served_.reset();
  dirty_log_.reset();
  vm_->Stop();
  stream_->WritesDone();
  // Once the calls are over gRPC holds no reference into guest memory (page
  // frames reference it), so the owner may free the VM's memory.
  (void)stream_->Finish();
  for (auto& ds : data_streams_) {
    ds->WritesDone();
    (void)ds->Finish();
  }
  t_end_ = clock_->NowNanos();
  {
    absl::MutexLock lock(&mu_);
    t_ended_ = t_end_;
  }
  if (absl::Status s = Transition(S::kCompleted); !s.ok()) return Failed(s);
  report_.set_outcome("completed");
  FillReport();
  return absl::OkStatus();
}

void SourceSession::FillReport() {
  if (sampler_.joinable()) sampler_.join();  // it ends once the state is final
  MigrationReport& r = report_;
  const vmm::VmConfig& c = vm_->config();
  const SourceCounterValues v = counters_.Values();
  r.set_migration_id(id_);
  r.set_mode(MigrationModeName(config_.options.mode));
  r.set_fault_mode(vmm::FaultModeName(config_.options.fault_mode));
  r.set_backend(vmm::VmBackendName(c.backend));
  r.set_memory_bytes(c.memory_bytes);
  r.set_vcpus(c.vcpus);
  r.set_workload(vmm::WorkloadKindName(c.workload.kind));
  *r.mutable_phase_timings() = phases_.Timings();
  // The page server's side of the demand fetches (Release kept it; a
  // failed migration's server is still registered).
  const HistogramSnapshot service = served_ ? served_->service_time() : demand_service_;
  r.set_source_service_p50_us(service.Percentile(50) / 1e3);
  r.set_source_service_p99_us(service.Percentile(99) / 1e3);
  absl::MutexLock lock(&mu_);
  r.set_total_ms((t_end_ - t_start_) / 1e6);
  r.set_setup_ms(t_precopy_ ? (t_precopy_ - t_start_) / 1e6 : 0);
  // A migration that ended in precopy (failed, cancelled) reports the
  // precopy it did, up to its end.
  r.set_precopy_ms(t_precopy_ == 0 ? 0 : ((t_pause_ ? t_pause_ : t_end_) - t_precopy_) / 1e6);
  // Rounds finished, also for a migration that ended during precopy.
  r.set_precopy_rounds(precopy_rounds_ ? precopy_rounds_ : round_);
  // Bytes of the rounds done; a migration that ended in precopy counts
  // what it sent until then.
  const uint64_t precopy_bytes =
      precopy_bytes_ ? precopy_bytes_ : v.bytes_by_path[static_cast<int>(SendPath::kPrecopy)];
  r.set_precopy_gbps(r.precopy_ms() > 0 ? precopy_bytes * 8 / (r.precopy_ms() / 1e3) / 1e9 : 0);
  r.set_switchover_reason(switchover_reason_);
  r.set_bytes_sent(v.bytes_sent);
  r.set_pages_sent(v.data_pages_sent + v.pages_demand);
  r.set_pages_resent(v.data_pages_resent);
  r.set_zero_pages(v.zero_pages_sent);
  r.set_pages_pushed(v.pages_pushed);
  r.set_pages_demand(v.pages_demand);
  r.set_pages_discarded(pages_discarded_);
  r.set_pages_held_back(pages_held_back_);
  r.set_guest_resident_bytes(guest_resident_bytes_);
  r.set_bytes_precopy(v.bytes_by_path[static_cast<int>(SendPath::kPrecopy)]);
  r.set_bytes_stop_and_copy(v.bytes_by_path[static_cast<int>(SendPath::kStopAndCopy)]);
  r.set_bytes_push(v.bytes_by_path[static_cast<int>(SendPath::kPush)]);
  r.set_bytes_demand(v.bytes_by_path[static_cast<int>(SendPath::kDemand)]);
  if (t_resumed_) {
    r.set_downtime_ms((t_resumed_ - t_pause_) / 1e6);
    r.set_dest_switchover_ms(dest_switchover_ns_ / 1e6);
    r.set_postcopy_ms((t_end_ - t_resumed_) / 1e6);
  }
  const ferry::v1::DestinationStats& d = dest_stats_;
  r.set_faults(d.faults());
  r.set_fault_p50_us(d.fault_p50_us());
  r.set_fault_p99_us(d.fault_p99_us());
  if (!d.has_ops_trace() && last_progress_.faults() > r.faults()) {
    // No Completed (the migration failed after switchover): the last
    // figures the destination reported in its progress.
    r.set_faults(last_progress_.faults());
    r.set_fault_p99_us(last_progress_.fault_p99_us());
  }
  r.set_fault_p999_us(d.fault_p999_us());
  r.set_fault_max_us(d.fault_max_us());
  r.set_max_vcpu_stall_ms(d.fault_max_us() / 1e3);
  r.set_fetch_rtt_p50_us(d.fetch_rtt_p50_us());
  r.set_fetch_rtt_p99_us(d.fetch_rtt_p99_us());
  r.set_fault_trap_p50_us(d.fault_trap_p50_us());
  r.set_fault_trap_p99_us(d.fault_trap_p99_us());
  r.set_fault_install_p50_us(d.fault_install_p50_us());
  r.set_fault_install_p99_us(d.fault_install_p99_us());
  r.set_prefaulted_pages(d.prefaulted_pages());
  r.set_dirty_log(dirty_log_name_);
  r.set_send_path(send_path_reason_);
  // Reads of the memory file that failed (the mapping served instead).
  // Counted per process: another migration's may be among them.
  if (const uint64_t n = FrameCopyFallbacks() - copy_fallbacks_at_start_; n > 0)
    r.set_send_path(absl::StrFormat(
        "%s; %d runs of pages could not be read through the memory file and were copied "
        "from the mapping",
        send_path_reason_, n));
  r.set_destination_paths(d.paths());
  r.set_dst_guest_bytes(d.guest_allocated_bytes());
  r.set_dst_heap_bytes(d.heap_bytes());
  r.set_dst_zero_for_reads_bytes(d.zero_for_reads_bytes());
  r.set_dst_rss_bytes(r.dst_guest_bytes() + r.dst_heap_bytes());
  // The pages the guest holds once the migration completed: the source's
  // at the pause, and any it touched at the destination since.
  r.set_guest_resident_bytes(std::max(r.guest_resident_bytes(), r.dst_guest_bytes()));
  if (d.fault_mode() != ferry::v1::FAULT_MODE_UNSPECIFIED) {
    // What the destination ran, which can differ from what was asked.
    absl::StatusOr<vmm::FaultMode> ran = FromProto(d.fault_mode());
    if (ran.ok()) r.set_fault_mode(vmm::FaultModeName(*ran));
    r.set_fault_mode_reason(d.fault_mode_reason());
  }
  *r.mutable_timeline_t_ms() = timeline_.timeline_t_ms();
  *r.mutable_timeline_ops_per_sec() = timeline_.timeline_ops_per_sec();
  *r.mutable_timeline_phase() = timeline_.timeline_phase();
  r.set_push_streams(push_streams_);
  r.set_reconnects(reconnects_);
  r.set_auto_converge(config_.options.auto_converge);
  r.set_max_throttle_percent(max_throttle_percent_);
  *r.mutable_throttle_changes() = throttle_changes_;
  FillImpactLocked(r);
}

}  // namespace ferry::migration
