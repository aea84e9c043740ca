// SourceSession: the source side of one migration. It opens the
// ferry.v1.Migration stream to the destination agent and drives the whole
// migration from this host (proto/ferry/v1/migration.proto has the
// sequence; source_state.h the state machine).
//
//  - precopy: round 0 sends every page (zero pages as bitmap bits), later
//    rounds the pages the dirty log saw written; after each dirty scan the
//    switchover policy (switchover_policy.h) decides.
//  - switchover: pause the vCPUs, take the final dirty scan, then either send
//    the rest (stop-and-copy) or send the discard set (pages sent earlier
//    and written since) and go postcopy; downtime ends when the destination
//    says Resumed.
//  - postcopy: the page server answers the destination's demand requests on
//    the fetch channel (never behind bulk data), while this session pushes
//    every page still missing (push_order.h).
//  - completed: only after the destination confirms every page installed
//    is the VM released (stopped; the caller may then destroy it).
//
// Auto-converge (options.auto_converge): when the policy says precopy
// cannot converge, the session throttles the VM's vCPUs
// (vmm::Vm::SetThrottle) and goes on; each change is in the report. The
// throttle is set back to 0 right before the pause at switchover, on
// Cancel(), on failure, and (a backstop) when Run() returns: the guest is
// never left throttled.
//
// Failure before switchover (destination error, lost stream, precopy not
// converging, Cancel) leaves the VM running. After switchover the
// destination runs the VM: if the stream breaks (or the destination falls
// silent for kSilenceTimeout), the session enters postcopy-paused and
// reconnects on its own with backoff (100 ms doubling to 5 s, or at once on
// Recover()): Reconnect, then the destination's present bitmap decides what
// is pushed again (docs/operations.md, "Postcopy recovery"). Pages the
// destination has not confirmed are never dropped here. Only a refusal by
// the destination or the recovery timeout fails the migration then, and the
// source VM stays paused with all of its memory.
//
// Dependencies are injected through SourceConfig: the stream (default: gRPC
// to `destination`), the dirty log (default: the VM's own) and the clock.
//
// Threads: Run() on the caller's thread; Cancel() and Progress() from any
// thread. Internally: a reader thread for the stream and a sampler thread.
//
//   SourceSession session(vm, config);
//   absl::Status s = session.Run();   // the report is there either way
//   std::cout << ReportText(session.report());
#ifndef FERRY_MIGRATION_SOURCE_SESSION_H_
#define FERRY_MIGRATION_SOURCE_SESSION_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/clock.h"
#include "base/histogram.h"
#include "ferry/v1/migration.pb.h"
#include "grpcpp/security/credentials.h"
#include "migration/fetch/page_server.h"
#include "migration/hello.h"
#include "migration/live_parameters.h"
#include "migration/options.h"
#include "migration/page_frame.h"
#include "migration/phase_timeline.h"
#include "migration/phases.h"
#include "migration/push_order.h"
#include "migration/rate_limiter.h"
#include "migration/report.h"
#include "migration/source_counters.h"
#include "migration/source_state.h"
#include "migration/source_stream.h"
#include "migration/switchover_policy.h"
#include "vmm/dirty_log.h"
#include "vmm/vm.h"

namespace ferry::migration {

struct SourceConfig {
  MigrationOptions options;
  std::string destination;  // the destination agent's gRPC address, HOST:PORT
  fetch::PageServer* page_server = nullptr;
  std::string fetch_address;  // where the destination reaches page_server
  // This agent's Control address, HOST:PORT, told to the destination so
  // that it shows operators its peer (Hello.source_agent); may be empty.
  std::string source_agent;
  // Demand pages sealed on the fetch channel (the agents talk TLS).
  bool encrypt_fetch = false;
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // default: insecure
  const Clock* clock = &RealClock();
  std::string vm_name;  // what the destination agent will call the VM
  // Opens the migration stream. Default: OpenMigrationStream(destination,
  // credentials).
  std::function<absl::StatusOr<std::unique_ptr<SourceStream>>()> open_stream;
  // Starts dirty tracking of the VM's memory. Default: vm->StartDirtyLog().
  std::function<absl::StatusOr<std::unique_ptr<vmm::DirtyLog>>(vmm::Vm*)> start_dirty_log;
  // Postcopy recovery events, for the agent's log: ("paused", why),
  // ("recovered", how), on the session thread. May be empty.
  std::function<void(const std::string& event, const std::string& detail)> on_recovery;
  // Each change of the coarse phase, in order, under the session's lock
  // (phase_timeline.h: it must not call the session). May be empty.
  PhaseTimeline::Listener on_phase;
  // How frames carry page data; unset: as this host's probe chose
  // (send_path.h). Tests set it to cover both ways.
  std::optional<FrameData> frame_data;
};

// What a migration `migration_id` with `config` says in its Hello
// (MakeHello): the session and a preflight check announce the same.
HelloParams HelloParamsFor(const SourceConfig& config, const std::string& migration_id);

// SourcePhase (the coarse phase shown to operators): migration/phases.h.
const char* SourcePhaseName(SourcePhase phase);

// What can be read while the migration runs.
struct SourceProgress {
  SourcePhase phase = SourcePhase::kSetup;
  SourceState state = SourceState::kConnecting;
  int round = 0;
  double elapsed_ms = 0;
  uint64_t pages_total = 0;
  uint64_t pages_transferred = 0;  // distinct pages the destination has been sent
  uint64_t pages_remaining = 0;    // to send in the current round or push
  uint64_t bytes_sent = 0;
  double bandwidth_bps = 0;
  double dirty_pages_per_sec = 0;
  uint64_t faults = 0;  // destination faults, from its progress reports
  double faults_per_sec = 0;
  double downtime_ms = 0;
  double fault_p99_us = 0;
  // The whole migration (MigrationProgress.percent, eta_ms).
  double percent = 0;
  double eta_ms = -1;
  // Postcopy recovery.
  uint32_t reconnects = 0;
  std::string paused_reason;  // while postcopy-paused
  std::string destination;    // where the session connects now
  int throttle_percent = 0;   // the guest's throttle now (auto-converge)
};

class SourceSession {
 public:
  // `vm` must be running and outlive the session.
  SourceSession(vmm::Vm* vm, SourceConfig config);
  ~SourceSession();

  // Runs the migration to its end and returns the report (also on failure,
  // with the reason in `outcome`, when the migration got far enough to
  // have one); the Status says whether it completed. Call once.
  absl::Status Run();
  const MigrationReport& report() const { return report_; }

  // Cancels a migration that has not switched over (the VM keeps running);
  // FailedPrecondition once the destination may run the VM, or once the
  // migration ended.
  absl::Status Cancel();

  // Postcopy-paused (or a postcopy whose stream looks alive): reconnect
  // now, to `destination` when not empty (the destination agent's new
  // HOST:PORT). FailedPrecondition before switchover or once ended.
  absl::Status Recover(const std::string& destination);

  // Changes the max bandwidth and/or the downtime target of the running
  // migration: all of `update` or, with the reason (live_parameters.h,
  // CheckParameterUpdate), nothing. Each applied change is recorded
  // (parameter_changes()). Any thread.
  absl::Status SetParameters(const ParameterUpdate& update);
  // Switches a hybrid migration that has not switched over to postcopy at
  // its next decision point (the next round-0 chunk, or the end of the
  // current precopy round); the report's switchover reason says it was
  // forced. FailedPrecondition with the reason otherwise
  // (CheckStartPostcopy). Any thread.
  absl::Status StartPostcopy();
  // The changes applied so far, oldest first. Any thread.
  std::vector<ParameterChange> parameter_changes() const;
  // The current cap (bytes per second, 0: none) and downtime target.
  uint64_t max_bandwidth() const { return limiter_.rate(); }
  int64_t downtime_target_ms() const;
  // Streams precopy pages go over now, the main one included (a change
  // takes effect at the start of the next precopy round after round 0).
  int streams() const { return active_streams_.load(std::memory_order_relaxed); }

  SourceProgress Progress() const;
  SourceState state() const;
  const std::string& migration_id() const { return id_; }
  // After Run() failed: the destination may have run the VM, so the source
  // VM was kept paused with its memory (never resumed here on its own).
  bool kept_paused() const { return kept_paused_; }

 private:
  // Run()'s steps; then CloseStreams().
  absl::Status RunToEnd();
  // Once final: cancels and frees the streams (their connections).
  void CloseStreams();

  // Phases, in order; each returns the error that fails the migration.
  absl::Status Setup();
  absl::Status Precopy(PolicyDecision* decision, std::vector<uint64_t>* dirty);
  absl::Status DiscardEarly(std::vector<uint64_t>* dirty);
  absl::Status Switchover(const PolicyDecision& decision, std::vector<uint64_t> dirty);
  absl::Status Postcopy();
  absl::Status AwaitCompleted();
  absl::Status Release();

  // Moves to `to` if the diagram allows it from the current state; else
  // the error says why (a Cancel() that came first gives Cancelled).
  absl::Status Transition(SourceState to);
  absl::Status TransitionLocked(SourceState to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until `ready` holds, the stream broke, or a Cancel() came.
  absl::Status AwaitLocked(const std::function<bool()>& ready, absl::Duration timeout,
                           const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the destination to drop its copies of `pages` now (before the
  // pause) and waits for its acknowledgement.
  absl::Status SendDiscard(const std::vector<uint64_t>& pages);
  // Sends `pages` (RAM page indices) in frames; precopy over every stream,
  // then FlushDataStreams().
  absl::Status SendPages(const std::vector<uint64_t>& pages, FramePhase phase, uint64_t round);
  absl::Status Write(const ferry::v1::SourceMessage& message);
  absl::Status WriteFrame(EncodedFrame frame);
  // What a frame carried, kept once the frame is handed to a stream.
  struct FrameTally {
    uint64_t wire_bytes;
    uint64_t data_pages;
    uint64_t zero_pages;
  };
  // Encodes `pages`, counting each as sent and held by the destination.
  EncodedFrame Encode(absl::Span<const uint64_t> pages, FramePhase phase, uint64_t round);
  // Counts a frame of `pages` pages as written (bytes by path, the round's
  // progress).
  void CountFrame(const FrameTally& tally, FramePhase phase, uint64_t pages);
  // Runs one stream write; a failure becomes the stream's error.
  absl::Status WriteWith(absl::FunctionRef<bool()> write);
  // Opens and joins data streams until there are `total` streams with the
  // main one (after Accepted; again when the operator adds streams).
  absl::Status OpenDataStreams(int total);
  // Writes a page frame on data stream `index` (1-based).
  absl::Status WriteDataFrame(size_t index, EncodedFrame frame);
  // Returns once the destination installed every frame sent so far on the
  // data streams (Flush / Flushed on each): the barrier before a message on
  // the main stream that depends on them.
  absl::Status FlushDataStreams();
  absl::Status DataStreamError(size_t index, absl::string_view when);
  // Why the stream broke: waits (briefly) for the reader to finish, then
  // collects the call's status. Names the destination.
  absl::Status StreamBroke(absl::string_view when);
  void ReaderLoop();
  void HandleMessage(const ferry::v1::DestinationMessage& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SamplerLoop();
  void DrainOpsTraceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The guest-impact figures of the report, from both sides' samples.
  void FillImpactLocked(MigrationReport& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnServed(uint64_t gpa, uint32_t count);
  absl::Status Failed(absl::Status status);
  void FillReport();
  // config_.options with the downtime target of now (SetParameters()).
  MigrationOptions PolicyOptions() const;
  // Whether StartPostcopy() was called.
  bool PostcopyForced() const;
  // Auto-converge: sets the VM's throttle to `percent` and records the
  // change with `reason` (nothing if it is already that). Raising it is
  // refused (a no-op) once the migration is cancelling or ended, so a
  // Cancel() that released the throttle is never undone.
  void SetThrottle(int percent, const std::string& reason);
  void SetThrottleLocked(int percent, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  vmm::Vm* const vm_;
  // Held until Run() ends: pages are counted, sent and served by RAM
  // offset, so the map must not change under them (Vm::ChangeMemory refuses).
  vmm::MemoryMapPin map_pin_;
  const SourceConfig config_;
  const Clock* const clock_;
  const std::string id_;
  const uint64_t num_pages_;
  const uint32_t page_size_;

  std::shared_ptr<fetch::ServedMigration> served_;
  std::unique_ptr<SourceStream> stream_;
  // Postcopy recovery: reconnects with backoff until Recovered (or
  // Completed) or the recovery timeout; then what the destination lacks is
  // owed again.
  absl::Status Recover(absl::Status cause);
  // Whether a failure in the current state may be recovered from: after
  // switchover, and not a refusal by the destination.
  bool Recoverable();
  // One reconnection attempt: a new stream, Reconnect, the answer.
  absl::Status ReconnectOnce(uint32_t attempt);
  absl::StatusOr<std::unique_ptr<SourceStream>> OpenStream();
  // Replaces the main stream (the old one cancelled, its reader joined).
  void DropStream();

  // Data streams 1..streams_-1 (precopy page frames and the postcopy
  // push), opened after Accepted.
  // The vector is filled by the session thread under mu_ (Cancel() reads it).
  std::vector<std::unique_ptr<SourceStream>> data_streams_;
  int streams_ = 1;  // at the start (--streams)
  // What the operator asked last (SetParameters), and what SendPages
  // stripes precopy over now; data streams once opened stay open.
  int target_streams_ ABSL_GUARDED_BY(mu_) = 1;
  std::atomic<int> active_streams_{1};
  // At the start of a precopy round after the first: puts target_streams_
  // in use, once every frame sent so far is installed, opening and joining
  // the data streams it needs (a stream that cannot join leaves the count
  // at what joined, recorded as a change). Session thread.
  absl::Status ApplyStreamChange();
  // The streams the postcopy push stripes over: those in use that are
  // still open. Session thread.
  size_t PushStreams() const;
  uint32_t push_streams_ = 0;  // at the push's start (the report's push_streams)
  // Postcopy recovery: the data streams are cancelled and closed (the
  // destination takes data streams in precopy only), so the push goes on
  // over the main stream. Session thread.
  void DropDataStreams();
  // Makes a write blocked on a data stream return (recovery is coming).
  void CancelDataStreamsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The destination said it installs push frames on data streams
  // (Accepted.push_on_data_streams).
  std::atomic<bool> push_on_data_streams_{false};
  uint64_t flush_seq_ = 0;
  std::thread reader_;
  std::thread sampler_;
  std::unique_ptr<vmm::DirtyLog> dirty_log_;
  RateLimiter limiter_;
  SourceCounters counters_;
  PostcopyPushOrder push_order_;

  // Pages the destination holds from precopy (session thread only).
  std::vector<bool> held_by_destination_;

  // Noted under mu_ at each state change, so changes are in order.
  PhaseTimeline phases_;
  // Notes the coarse phase of state_ (a cancelling session is still in the
  // phase it was cancelled in).
  void NotePhaseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  SourceState state_ ABSL_GUARDED_BY(mu_) = SourceState::kConnecting;
  // The state Cancel() interrupted (meaningful while cancelling).
  SourceState cancelled_in_ ABSL_GUARDED_BY(mu_) = SourceState::kConnecting;
  // Why the stream can no longer be used: a destination Error, a protocol
  // violation, or its end. OK while it works.
  absl::Status stream_error_ ABSL_GUARDED_BY(mu_);
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;
  // stream_error_ is the destination's refusal (an Error, a protocol
  // violation), not a broken stream: never recovered from.
  bool stream_refused_ ABSL_GUARDED_BY(mu_) = false;
  // The port a Redirect named (0: none), for Setup to dial.
  uint32_t redirect_port_ ABSL_GUARDED_BY(mu_) = 0;
  // The destination's Error said it never ran the VM (a Reconnect answer),
  // with the proof bound to this migration's secret and the Reconnect's
  // nonce: the source may resume it.
  bool destination_never_ran_ ABSL_GUARDED_BY(mu_) = false;
  // The migration's secret (Hello.fetch_secret), proven on reconnection.
  fetch::Secret secret_{};
  // The current Reconnect: its nonce, the destination's Challenge, and
  // whether that proved the secret. Before the proof no answer on the
  // stream counts: Completed and Recovered are refused, an Error is not
  // final (the peer may be an impostor) and its never_ran is ignored.
  std::string reconnect_nonce_ ABSL_GUARDED_BY(mu_);
  std::optional<ferry::v1::Challenge> challenge_ ABSL_GUARDED_BY(mu_);
  bool peer_proven_ ABSL_GUARDED_BY(mu_) = false;
  // Postcopy recovery.
  std::string destination_ ABSL_GUARDED_BY(mu_);
  bool recover_now_ ABSL_GUARDED_BY(mu_) = false;
  bool recovered_ ABSL_GUARDED_BY(mu_) = false;
  std::string present_ ABSL_GUARDED_BY(mu_);  // Recovered.present
  uint32_t reconnects_ ABSL_GUARDED_BY(mu_) = 0;
  std::string paused_reason_ ABSL_GUARDED_BY(mu_);
  int64_t last_heard_ns_ ABSL_GUARDED_BY(mu_) = 0;  // the destination's last message
  // Live parameters (SetParameters()).
  int64_t downtime_target_ms_ ABSL_GUARDED_BY(mu_);
  std::vector<ParameterChange> parameter_changes_ ABSL_GUARDED_BY(mu_);
  bool postcopy_forced_ ABSL_GUARDED_BY(mu_) = false;
  // Auto-converge: the VM's throttle as this session set it, the highest,
  // and each change.
  int throttle_percent_ ABSL_GUARDED_BY(mu_) = 0;
  int max_throttle_percent_ ABSL_GUARDED_BY(mu_) = 0;
  google::protobuf::RepeatedPtrField<ferry::v1::ThrottleChange> throttle_changes_
      ABSL_GUARDED_BY(mu_);
  // What the destination said.
  uint64_t round_acked_ ABSL_GUARDED_BY(mu_) = 0;
  ferry::v1::Progress last_progress_ ABSL_GUARDED_BY(mu_);
  ferry::v1::DestinationStats dest_stats_ ABSL_GUARDED_BY(mu_);
  int64_t dest_switchover_ns_ ABSL_GUARDED_BY(mu_) = 0;
  // The current precopy round.
  int round_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t round_pages_left_ ABSL_GUARDED_BY(mu_) = 0;
  double dirty_pages_per_sec_ ABSL_GUARDED_BY(mu_) = 0;
  // The highest percent Progress() reported: the percent never runs
  // backwards (precopy to postcopy), and a migration that failed or was
  // cancelled keeps how far it got.
  mutable double max_percent_ ABSL_GUARDED_BY(mu_) = 0;
  // The guest's ops/s every 100 ms (the sampler): the report's timeline_*
  // arrays, one element a sample.
  MigrationReport timeline_ ABSL_GUARDED_BY(mu_);
  // The guest's op counts from before the start (the baseline) on, drained
  // from the VM's meter by the sampler (guest_impact.h).
  vmm::OpsTrace ops_trace_ ABSL_GUARDED_BY(mu_);
  // Times (clock_ nanoseconds; 0: not reached).
  int64_t t_start_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t t_precopy_ = 0, t_pause_ = 0, t_end_ = 0;
  int64_t t_resumed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t t_round_start_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t t_ended_ ABSL_GUARDED_BY(mu_) = 0;  // t_end_, for Progress()

  // Session thread only.
  uint64_t pages_held_back_ = 0;
  // RoundEnd and Discard messages sent, and the destination's answers
  // (Progress before switchover): the pause waits until they match.
  uint64_t markers_sent_ = 0;
  uint64_t precopy_acks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t guest_resident_bytes_ = 0;  // the guest's allocated memory at the pause  // hot pages
                                       // not resent in a round (all rounds)
  uint64_t pages_discarded_ = 0;
  int early_discards_ = 0;
  uint64_t precopy_bytes_ = 0;
  int precopy_rounds_ = 0;
  std::string switchover_reason_;
  std::string dirty_log_name_;  // what tracked writes (empty: no precopy)
  // The page server's service times of this migration's demand fetches,
  // kept when the served migration goes (Release).
  HistogramSnapshot demand_service_;
  // How frames carry page data, and why (session thread, from the start).
  FrameData frame_data_ = FrameData::kReference;
  std::string send_path_reason_;
  uint64_t copy_fallbacks_at_start_ = 0;  // FrameCopyFallbacks() then
  MigrationReport report_;
  bool kept_paused_ = false;
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SOURCE_SESSION_H_
