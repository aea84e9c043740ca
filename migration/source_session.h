// SourceSession: the source side of one migration. It opens the
// ferry.v1.Migration stream to the destination agent and drives the whole
// migration from this host (proto/ferry/v1/migration.proto has the sequence).
//
// States: setup -> precopy(round n) -> switchover -> postcopy ->
//         completed | failed | cancelled.
//  - precopy: round 0 sends every page (zero pages as bitmap bits), later
//    rounds the pages the dirty log saw written; after each dirty scan the
//    switchover policy (switchover_policy.h) decides.
//  - switchover: pause the vCPUs, take the final dirty scan, then either send
//    the rest (stop-and-copy) or send the discard set (pages sent earlier
//    and written since) and go postcopy; downtime ends when the destination
//    says Resumed.
//  - postcopy: the page server answers the destination's demand requests on
//    the fetch channel (never behind bulk data), while this session pushes
//    every page still missing, pages near recent faults first.
//  - completed: only after the destination confirms every page installed
//    is the VM released (stopped; the caller may then destroy it).
//
// Failure before switchover (destination error, lost stream, precopy not
// converging, Cancel) leaves the VM running. After switchover the
// destination runs the VM; a failure then leaves the source VM paused, with
// its memory, and is reported (reconnect is not implemented yet).
//
// Threads: Run() on the caller's thread; Cancel() and Progress() from any
// thread. Internally: a reader thread for the stream and a sampler thread.
#ifndef FERRY_MIGRATION_SOURCE_SESSION_H_
#define FERRY_MIGRATION_SOURCE_SESSION_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/clock.h"
#include "ferry/v1/migration.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "migration/fetch/page_server.h"
#include "migration/options.h"
#include "migration/rate_limiter.h"
#include "migration/report.h"
#include "migration/switchover_policy.h"
#include "vmm/dirty_log.h"
#include "vmm/vm.h"

namespace ferry::migration {

struct SourceConfig {
  MigrationOptions options;
  std::string destination;  // the destination agent's gRPC address, HOST:PORT
  fetch::PageServer* page_server = nullptr;
  std::string fetch_address;  // where the destination reaches page_server
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // default: insecure
  const Clock* clock = &RealClock();
  std::string vm_name;  // what the destination agent will call the VM
};

enum class SourcePhase { kSetup, kPrecopy, kSwitchover, kPostcopy, kCompleted, kFailed, kCancelled };
const char* SourcePhaseName(SourcePhase phase);

// What can be read while the migration runs.
struct SourceProgress {
  SourcePhase phase = SourcePhase::kSetup;
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
};

class SourceSession {
 public:
  // `vm` must be running and outlive the session.
  SourceSession(vmm::Vm* vm, SourceConfig config);
  ~SourceSession();

  // Runs the migration to its end and returns the report (also on failure,
  // with the reason in `outcome`, when the migration got far enough to
  // have one); the Status says whether it completed.
  absl::Status Run();
  const MigrationReport& report() const { return report_; }

  // Cancels a migration that has not switched over (the VM keeps running);
  // FailedPrecondition once the destination runs the VM.
  absl::Status Cancel();

  SourceProgress Progress() const;
  const std::string& migration_id() const { return id_; }

 private:
  absl::Status Setup();
  absl::Status Precopy(PolicyDecision* decision, std::vector<uint64_t>* pending);
  absl::Status Switchover(const PolicyDecision& decision, std::vector<uint64_t> pending);
  absl::Status Postcopy();
  // Tells the destination to drop its copies of `pages` now (before the
  // pause); they count as not sent from here on.
  absl::Status EarlyDiscard(const std::vector<uint64_t>& pages);
  absl::Status AwaitCompleted();
  // Sends `pages` (RAM page indices) in batches of `phase`.
  absl::Status SendPages(const std::vector<uint64_t>& pages, ferry::v1::Phase phase,
                         uint64_t round);
  absl::Status Write(const ferry::v1::SourceMessage& message);
  // Why the stream broke: waits (briefly) for the reader to finish, then
  // collects the call's status once. Names the destination.
  absl::Status StreamBroke(absl::string_view when);
  bool finished_ = false;  // stream_->Finish() was called (session thread)
  grpc::Status finish_status_;
  void ReaderLoop();
  void SamplerLoop();
  void OnServed(uint64_t gpa, uint32_t count);
  bool TakeRemaining(uint64_t page);
  void SetPhase(SourcePhase phase);
  absl::Status Failed(absl::Status status);
  void FillReport();

  vmm::Vm* const vm_;
  const SourceConfig config_;
  const Clock* const clock_;
  std::string id_;
  const uint64_t num_pages_;
  const uint32_t page_size_;

  std::shared_ptr<fetch::ServedMigration> served_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<ferry::v1::Migration::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<ferry::v1::SourceMessage,
                                           ferry::v1::DestinationMessage>>
      stream_;
  std::thread reader_;
  std::thread sampler_;
  std::unique_ptr<vmm::UffdDirtyLog> dirty_log_;
  RateLimiter limiter_;

  // Pages the destination holds from precopy (session thread only).
  std::vector<bool> sent_;
  // Postcopy: 1 = not yet sent since switchover. Cleared by the push and by
  // the page server (demand).
  std::unique_ptr<std::atomic<uint64_t>[]> remaining_;
  std::atomic<uint64_t> pages_left_{0};
  static constexpr int kFaultRing = 64;
  std::atomic<uint64_t> fault_ring_[kFaultRing];
  std::atomic<uint64_t> fault_count_{0};

  mutable absl::Mutex mu_;
  SourcePhase phase_ ABSL_GUARDED_BY(mu_) = SourcePhase::kSetup;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool switchover_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool accepted_ ABSL_GUARDED_BY(mu_) = false;
  bool resumed_ ABSL_GUARDED_BY(mu_) = false;
  bool completed_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status peer_error_ ABSL_GUARDED_BY(mu_);
  uint64_t round_acked_ ABSL_GUARDED_BY(mu_) = 0;
  ferry::v1::Progress last_progress_ ABSL_GUARDED_BY(mu_);
  ferry::v1::DestinationStats dest_stats_ ABSL_GUARDED_BY(mu_);
  int round_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pages_remaining_ ABSL_GUARDED_BY(mu_) = 0;

  double dirty_pps_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<OpsSample> timeline_ ABSL_GUARDED_BY(mu_);
  bool sampler_stop_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<uint64_t> pages_transferred_{0};  // distinct pages sent
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> data_pages_sent_{0};
  std::atomic<uint64_t> pages_resent_{0};
  std::atomic<uint64_t> zero_pages_sent_{0};
  std::atomic<uint64_t> pages_pushed_{0};
  std::atomic<uint64_t> pages_demand_{0};
  std::atomic<uint64_t> bytes_by_phase_[4] = {};  // precopy, stop-and-copy, push, demand
  uint64_t pages_discarded_ = 0;
  bool paused_ = false;  // this session paused the VM (session thread)
  int early_discards_ = 0;
  uint64_t precopy_bytes_ = 0;
  int precopy_rounds_ = 0;
  std::string switchover_reason_;
  int64_t dest_switchover_ns_ = 0;
  int64_t t_start_ = 0, t_precopy_ = 0, t_pause_ = 0, t_resumed_ = 0, t_postcopy_end_ = 0,
          t_end_ = 0;
  // Pages sent at least once (any channel): a second send of a data page
  // counts as resent.
  std::unique_ptr<std::atomic<uint64_t>[]> ever_sent_;
  void CountSent(uint64_t page, bool data);
  MigrationReport report_;
};

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SOURCE_SESSION_H_
