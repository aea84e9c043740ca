// DestinationSession: the destination side of one migration, driven by the
// ferry.v1.Migration stream the source opened (proto/ferry/v1/migration.proto).
//
// States (docs/protocol.md draws them):
//   accepting --Hello ok--> receiving-precopy --Switchover--> postcopy
//   postcopy --Complete, nothing missing--> completed
//   postcopy --stream lost--> postcopy-paused --Reconnect--> postcopy
//   postcopy-paused --no Reconnect within the recovery timeout--> failed
//   any --bad input, Abort, stream lost before switchover--> failed
// A message that does not fit the state is rejected, naming both, and ends
// the migration. Every batch is validated whole before any page is
// installed: bad input changes no guest memory.
//
// On failure the destination is left empty (the VM is stopped and dropped);
// before switchover that is invariant 2. After switchover the loss of the
// stream pauses the migration instead (postcopy recovery): the VM keeps
// running here, vCPUs that fault wait (their fetches retried on the fetch
// channel), and the source's Reconnect on a new stream resumes the
// migration; the session answers it with the pages present here. An ended
// session stays (MigrationService keeps it a while) to answer a late
// Reconnect: Completed if it completed, else Error (never_ran when the VM
// never ran here, so the source may resume its own).
//
// Driven by the transport: OnReceive() for each message as received (on
// gRPC's callback thread, one at a time: page frames are installed straight
// from the received slices, with no thread hop), OnStreamLost() when the
// stream ends. Messages back go through a DestinationSink. Waiting for the
// last pages after Complete happens on a thread of the session's own, never
// on the transport's; so does Progress (every 100 ms after resume).
#ifndef FERRY_MIGRATION_DESTINATION_SESSION_H_
#define FERRY_MIGRATION_DESTINATION_SESSION_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "ferry/v1/migration.pb.h"
#include "migration/fetch/remote_page_source.h"
#include "migration/page_frame.h"
#include "migration/phase_timeline.h"
#include "migration/phases.h"
#include "migration/preflight.h"
#include "migration/protocol.h"
#include "vmm/vm.h"

namespace ferry::migration {

// The destination's way back to the source: the gRPC reactor in production
// (migration_service.cc), a recorder in tests.
class DestinationSink {
 public:
  virtual ~DestinationSink() = default;
  // Queues `message` for the source; false once the stream is closed.
  // Thread-safe.
  virtual bool Send(const ferry::v1::DestinationMessage& message) = 0;
  // Ends the stream with `status` once the queued messages are out. The
  // session calls it exactly once.
  virtual void Finish(const absl::Status& status) = 0;
};

struct DestinationOptions {
  std::string expected_token;  // empty: no token required
  absl::Duration complete_timeout = absl::Seconds(60);
  // An admitted migration (Accepted sent) whose source then sends nothing,
  // no page frame, Join or control message, for this long is dropped: it
  // would hold a VM slot and its memory (a source sends its first message
  // at once; at the slowest allowed rate, 1 MiB/s, a first 4 MiB frame
  // takes about 4 s).
  absl::Duration first_message_timeout = absl::Seconds(30);
  // Postcopy recovery: how long to wait for the source to reconnect when
  // Hello does not say (Hello.recovery_timeout_ms).
  absl::Duration recovery_timeout = absl::Minutes(10);
  // Blocking fault mode: handler threads (0: one per two vCPUs).
  int fault_handlers = 0;
  // Called at Hello with the migration's id, the source (its fetch
  // channel's address), the VM's name and shape; an error refuses the
  // migration with it (the name is taken, a limit is reached, the agent is
  // shutting down). `release` is called with the same id and name, and why,
  // if the migration then fails. Both may be empty.
  std::function<absl::Status(const std::string& migration_id, const std::string& source,
                             const std::string& name, const vmm::VmConfig&)>
      admit;
  std::function<void(const std::string& migration_id, const std::string& name,
                     const absl::Status& why)>
      release;
  // Receives the migrated VM (running, nothing missing) just before
  // Completed is sent, so that once the source knows the migration
  // completed, the VM is where it belongs. Empty: TakeVm() gets it.
  std::function<void(const std::string& migration_id, const std::string& name,
                     std::unique_ptr<vmm::Vm> vm)>
      adopt;
  // Called when a migration is refused before it was admitted (a wrong
  // token, a protocol version, a bad Hello, a name taken), with the id the
  // peer claimed (may be empty) and why. For the agent's log. May be empty.
  std::function<void(const std::string& claimed_id, const absl::Status& why)> refused;
  // Preflight checks (SourceMessage.check, migration/preflight.h): whether
  // the agent would admit the VM now, without reserving anything, and a
  // record of each check answered (for the agent's log). Both may be empty.
  AdmitCheckFn admit_check;
  std::function<void(const std::string& vm_name, const std::vector<CheckItem>& items)> checked;
  // Called when an incoming migration pauses (the stream broke after
  // switchover; `why` says how) and when it resumes (`why` empty). For the
  // agent's log. May be empty.
  std::function<void(const std::string& migration_id, const std::string& why)> paused;
  // Called once when an incoming migration that got a VM ends, with its id
  // and its demand-paging and fetch statistics (for the agent's metrics),
  // before Incoming() shows it ended. May be empty.
  std::function<void(const std::string& migration_id, bool completed,
                     const vmm::DemandPagerStats& pager, const fetch::FetcherStats& fetch)>
      on_end;
  // Each change of the coarse phase of an admitted migration (its id
  // known), in order, under the session's lock (phase_timeline.h: it must
  // not call the session). May be empty.
  std::function<void(const std::string& migration_id, const std::string& vm_name,
                     const PhaseChange& change)>
      on_phase;
};

// DestinationState: migration/phases.h.
const char* DestinationStateName(DestinationState s);

class DestinationSession {
 public:
  // `sink` must outlive the session.
  DestinationSession(DestinationOptions options, DestinationSink* sink);
  ~DestinationSession();

  // One message from the source, as received: a control frame or a page
  // frame (page_frame.h), its bytes split anywhere. True while the session
  // wants the next message. False once it has ended or will end on its own:
  // on an error it has sent Error, failed (the destination is left empty)
  // and finished the sink; after Complete a thread of its own finishes it.
  // `from`: the stream it came on (null: the current one); a message from a
  // stream the session no longer uses is ignored (false).
  bool OnReceive(FrameBytes bytes, DestinationSink* from = nullptr);
  // The source's stream `from` (null: the current one) ended or broke.
  // Before switchover: fails the migration and finishes the sink (true).
  // After switchover: pauses the migration and lets go of the stream
  // (false: the caller finishes its stream itself); likewise for a stream
  // the session no longer uses.
  bool OnStreamLost(DestinationSink* from = nullptr);
  // Postcopy recovery: the source's Reconnect on the new stream `sink`.
  // True: the stream is the session's main stream now (Recovered sent).
  // False: the session answered on `sink` and finished it (Completed for a
  // migration that completed here, else Error).
  // Its Challenge comes first (migration_service.cc): Reconnect is called
  // only once the stream proved the migration's secret.
  bool Reconnect(DestinationSink* sink, const ferry::v1::Reconnect& reconnect);
  // The first answer to a Reconnect or Join whose nonce is `source_nonce`:
  // a Challenge proving this session holds the migration's secret, with a
  // fresh nonce (also stored in *dest_nonce). FailedPrecondition before
  // Hello brought the secret. Thread-safe.
  absl::StatusOr<ferry::v1::DestinationMessage> Challenge(absl::string_view source_nonce,
                                                          std::string* dest_nonce) const;
  // Whether `proof` is the source's StreamProof answering that Challenge.
  bool SourceProved(absl::string_view source_nonce, absl::string_view dest_nonce,
                    absl::string_view proof) const;
  // Fails a paused migration now (the agent is shutting down).
  void Abandon(const absl::Status& why);
  bool ended() const;
  // When it ended (monotonic ns; 0 while it runs).
  int64_t ended_at_ns() const;
  // A data stream joining (its first message): the migration must be
  // receiving precopy, the token right, the index one Hello announced and
  // not taken. Thread-safe.
  absl::Status Attach(const ferry::v1::Join& join);
  // A page frame on a data stream (precopy, or the postcopy push while the
  // VM runs here, paused included), installed like one on the main stream;
  // `bounce` is the stream's own page. Thread-safe: streams install
  // concurrently (in precopy each page always comes on the same stream; a
  // pushed page is final, and a second copy of it is never installed over
  // the first). After the migration completed a frame is dropped (OK: it
  // can only repeat pages already here). An error ends the whole migration
  // while it receives (precopy, postcopy before Complete) and is returned.
  absl::Status OnDataFrame(FrameBytes bytes, std::vector<uint8_t>* bounce);
  // Blocks until the session has finished the sink. Its status: OK when
  // completed, else the error sent to the source.
  absl::Status Wait() const;

  DestinationState state() const;
  std::string migration_id() const;
  std::string vm_name() const;
  // What an operator sees of an incoming migration (the agent lists it).
  struct Info {
    std::string migration_id, vm_name, source;
    DestinationState state = DestinationState::kAccepting;
    uint64_t memory_bytes = 0;
    int vcpus = 0;
    uint64_t pages_total = 0;
    uint64_t pages_missing = 0;  // while the VM runs here in postcopy
    uint64_t faults = 0;
    uint64_t pages_installed = 0;  // by any path, precopy included
    // The arriving VM, once it exists here (after Hello): its layout, what
    // its backend offers, and what its vCPUs did (the guest runs here from
    // switchover on); guest ops/s over the last second of samples.
    bool has_vm = false;
    ferry::v1::VmLayout layout;
    std::string backend_capabilities;
    vmm::VmStats vm_stats;
    double guest_ops_per_sec = 0;
    // The source agent's Control address (Hello.source_agent; empty from a
    // source that does not say).
    std::string source_agent;
    // As Hello asked (UNSPECIFIED before it), and the fault mode that runs.
    ferry::v1::MigrationMode mode = ferry::v1::MIGRATION_MODE_UNSPECIFIED;
    ferry::v1::FaultMode fault_mode = ferry::v1::FAULT_MODE_UNSPECIFIED;
    // This side's phases so far (PhaseTimeline::Timings).
    PhaseTimings phase_timings;
  };
  Info GetInfo() const;
  // The VM while the migration runs, or the migrated (running) VM after it
  // completed; null before Hello and after a failure.
  vmm::Vm* vm() const;
  // Hands over the migrated VM once Wait() returned OK.
  std::unique_ptr<vmm::Vm> TakeVm();
  // Blocks until Switchover made the VM run (or the migration failed).
  void WaitUntilRunning() const;

 private:
  absl::Status Receive(FrameBytes bytes);
  absl::Status Handle(const ferry::v1::SourceMessage& message);
  absl::Status OnHello(const ferry::v1::Hello& hello);
  // A preflight check (destination_check.cc): answers CheckResult and ends
  // the session; creates nothing.
  absl::Status OnCheck(const ferry::v1::Hello& hello);
  absl::Status OnPageFrame(FrameBytes bytes);
  absl::Status InstallFrame(FrameBytes bytes, bool postcopy, std::vector<uint8_t>* bounce);
  absl::Status OnSwitchover(const ferry::v1::Switchover& switchover);
  // Validates every run, then drops the pages (they fault again).
  absl::Status DiscardRuns(
      const google::protobuf::RepeatedPtrField<ferry::v1::PageRun>& runs);
  absl::Status OnComplete(const ferry::v1::Complete& complete);
  // On completer_: waits until nothing is missing, then hands the VM over,
  // sends Completed and ends the stream.
  void CompleteWhenNothingMissing(uint64_t gen);
  absl::Status Send(const ferry::v1::DestinationMessage& message);
  // Lets go of the main stream and waits for the source to reconnect.
  void Pause(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ctl_mu_);
  void AwaitReconnect(uint64_t pause, absl::Duration timeout);
  // After Accepted: ends the migration if the source sends nothing within
  // options_.first_message_timeout.
  void AwaitFirstMessage();
  // The source sent something after Hello (any stream).
  void MarkActive();
  // The answer to Reconnect: a bitmap of the pages present (or known zero).
  ferry::v1::DestinationMessage Recovered() const;
  // Ends the session with `status`: Error to the source unless OK, the
  // destination emptied on failure, the sink finished. Once.
  void End(const absl::Status& status);
  absl::Status Unexpected(const char* message) const;
  void SetState(DestinationState s);
  // Reports the VM's demand-paging and fetch statistics (on_end), once.
  void RecordEnd(bool completed);
  bool recorded_end_ = false;
  bool ever_admitted_ = false;
  std::string claimed_id_;  // Hello's migration id, as the peer sent it
  std::string source_ ABSL_GUARDED_BY(mu_);  // the source's fetch address, from Hello
  std::string source_agent_ ABSL_GUARDED_BY(mu_);  // its Control address, from Hello
  ferry::v1::MigrationMode mode_ ABSL_GUARDED_BY(mu_) = ferry::v1::MIGRATION_MODE_UNSPECIFIED;
  absl::Status fail_reason_;  // why the migration failed (End)
  void StartProgress();
  void StopProgress();
  ferry::v1::DestinationStats Stats() const;
  void Fail();

  const DestinationOptions options_;
  // The main stream; null while paused.
  mutable absl::Mutex sink_mu_;
  DestinationSink* sink_ ABSL_GUARDED_BY(sink_mu_);
  // Postcopy recovery.
  absl::Duration recovery_timeout_;
  std::atomic<uint64_t> pauses_{0};      // each pause's number; a reconnect moves on
  std::atomic<uint64_t> complete_gen_{0};  // a completer whose number is old gives up
  std::atomic<bool> ran_{false};         // the vCPUs were started here
  std::atomic<bool> active_{false};      // a message after Hello came (under mu_ when set)
  ferry::v1::DestinationStats completed_stats_;  // for a late Reconnect
  std::vector<std::thread> waiters_;     // AwaitReconnect, one per pause
  std::vector<std::thread> completers_;
  int64_t ended_at_ns_ ABSL_GUARDED_BY(mu_) = 0;
  // Noted under mu_ at each state change (its listener reads the id).
  PhaseTimeline phases_;
  mutable absl::Mutex mu_;
  DestinationState state_ ABSL_GUARDED_BY(mu_) = DestinationState::kAccepting;
  std::string migration_id_ ABSL_GUARDED_BY(mu_);
  std::string vm_name_ ABSL_GUARDED_BY(mu_);
  // Hello.fetch_secret: what Reconnect, Join and never_ran prove.
  std::optional<fetch::Secret> secret_ ABSL_GUARDED_BY(mu_);
  bool admitted_ = false;
  bool receiving_ = true;  // false once the session ends or Complete came
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> bounce_;  // one page: a page split across slices

  std::shared_ptr<fetch::RemotePageSource> fetcher_;  // shared with the VM
  // Control (the main stream's messages, the completer, a data stream's
  // failure) runs under ctl_mu_; vm_ is replaced only with vm_mu_ held for
  // writing, which data-stream installs hold for reading.
  absl::Mutex ctl_mu_;
  mutable absl::Mutex vm_mu_;
  std::unique_ptr<vmm::Vm> vm_;
  uint32_t data_streams_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t attached_ ABSL_GUARDED_BY(mu_) = 0;  // bit i: data stream i joined
  uint64_t ops_at_resume_ = 0;
  int64_t resumed_ns_ = 0;  // when the vCPUs started here (the VM's clock)
  uint64_t round_acked_ = 0;
  uint64_t pages_discarded_ = 0;
  mutable absl::Notification running_;

  absl::Mutex progress_mu_;
  bool progress_stop_ ABSL_GUARDED_BY(progress_mu_) = false;
  // The guest's op counts since resume, drained from the VM's meter every
  // progress interval (its ring holds only the last seconds) and thinned
  // to what the wire allows.
  mutable absl::Mutex trace_mu_;
  vmm::OpsTrace ops_trace_ ABSL_GUARDED_BY(trace_mu_);
  void DrainOpsTrace();
  std::thread progress_;
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_DESTINATION_SESSION_H_
