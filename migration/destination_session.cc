#include "migration/destination_session.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/net.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "migration/api/defaults.h"
#include "migration/convert.h"
#include "migration/hello.h"
#include "migration/page_frame.h"
#include "migration/stream_auth.h"

namespace ferry::migration {
namespace {

using ferry::v1::DestinationMessage;
using ferry::v1::SourceMessage;

constexpr absl::Duration kProgressInterval = absl::Milliseconds(100);
// The destination waits this much longer than the source tries, so that
// the source decides.
constexpr absl::Duration kRecoveryMargin = absl::Seconds(30);

}  // namespace

const char* DestinationStateName(DestinationState s) {
  switch (s) {
    case DestinationState::kAccepting: return "accepting";
    case DestinationState::kReceivingPrecopy: return "receiving precopy";
    case DestinationState::kPostcopy: return "running in postcopy";
    case DestinationState::kCompleted: return "completed";
    case DestinationState::kFailed: return "failed";
    case DestinationState::kPostcopyPaused: return "postcopy-paused";
  }
  return "unknown";
}

DestinationSession::DestinationSession(DestinationOptions options, DestinationSink* sink)
    : options_(std::move(options)),
      sink_(sink),
      recovery_timeout_(options_.recovery_timeout),
      phases_([this](const PhaseChange& c) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        // Called by Note under mu_.
        if (options_.on_phase && !migration_id_.empty())
          options_.on_phase(migration_id_, vm_name_, c);
      }) {
  absl::MutexLock lock(&mu_);
  phases_.Note(PhaseOf(state_));
}

DestinationSession::~DestinationSession() {
  if (!ended()) Abandon(absl::AbortedError("the destination agent is shutting down"));
  auto join = [](std::thread& t) {
    if (!t.joinable()) return;
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();  // it is finishing this very call
    } else {
      t.join();
    }
  };
  for (std::thread& t : completers_) join(t);
  for (std::thread& t : waiters_) join(t);
  StopProgress();
  if (state() != DestinationState::kCompleted) Fail();
}

bool DestinationSession::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

int64_t DestinationSession::ended_at_ns() const {
  absl::MutexLock lock(&mu_);
  return ended_at_ns_;
}

void DestinationSession::Abandon(const absl::Status& why) {
  absl::MutexLock ctl(&ctl_mu_);
  if (ended()) return;
  receiving_ = false;
  End(why);
}

void DestinationSession::Pause(const std::string& why) {
  {
    absl::MutexLock lock(&sink_mu_);
    sink_ = nullptr;
  }
  complete_gen_.fetch_add(1);  // a completer waiting gives up
  receiving_ = false;
  const uint64_t pause = pauses_.fetch_add(1) + 1;
  SetState(DestinationState::kPostcopyPaused);
  if (options_.paused) options_.paused(migration_id(), why);
  waiters_.emplace_back(&DestinationSession::AwaitReconnect, this, pause, recovery_timeout_);
}

void DestinationSession::AwaitReconnect(uint64_t pause, absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    auto moved_on = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return ended_ || state_ != DestinationState::kPostcopyPaused || pauses_.load() != pause;
    };
    if (mu_.AwaitWithTimeout(absl::Condition(&moved_on), timeout)) return;
  }
  absl::MutexLock ctl(&ctl_mu_);
  if (ended() || state() != DestinationState::kPostcopyPaused || pauses_.load() != pause)
    return;
  End(absl::DeadlineExceededError(absl::StrFormat(
      "the migration stream broke after switchover and the source did not reconnect "
      "within the recovery timeout of %s",
      absl::FormatDuration(timeout))));
}

ferry::v1::DestinationMessage DestinationSession::Recovered() const {
  DestinationMessage m;
  absl::ReaderMutexLock vm_lock(&vm_mu_);
  const vmm::DemandPager& pager = *vm_->pager();
  const uint64_t pages = vm_->memory().num_pages();
  std::string bits((pages + 7) / 8, '\0');
  for (uint64_t p = 0; p < pages; ++p)
    if (pager.IsPresent(p) || pager.IsKnownZero(p))
      bits[p / 8] = static_cast<char>(static_cast<uint8_t>(bits[p / 8]) | (1u << (p % 8)));
  m.mutable_recovered()->set_present(std::move(bits));
  m.mutable_recovered()->set_pages_missing(pager.missing_pages());
  return m;
}

bool DestinationSession::Reconnect(DestinationSink* sink, const ferry::v1::Reconnect& r) {
  absl::MutexLock ctl(&ctl_mu_);
  auto refuse = [&](const absl::Status& why, bool never_ran) {
    DestinationMessage m = ToErrorMessage(why);
    if (never_ran) {
      absl::MutexLock lock(&mu_);
      if (secret_) {  // a claim the source can check, bound to its nonce
        m.mutable_error()->set_never_ran(true);
        m.mutable_error()->set_never_ran_proof(
            NeverRanProof(*secret_, migration_id_, r.nonce()));
      }
    }
    (void)sink->Send(m);
    sink->Finish(why);
    return false;
  };
  if (r.protocol_version() != kProtocolVersion)
    return refuse(absl::FailedPreconditionError(absl::StrFormat(
                      "the source speaks migration protocol version %d, this destination "
                      "speaks %d",
                      r.protocol_version(), kProtocolVersion)),
                  false);
  if (!options_.expected_token.empty() && !TokensEqual(r.auth_token(), options_.expected_token))
    return refuse(absl::UnauthenticatedError(
                      "wrong migration token: give the source agent the destination's token"),
                  false);
  if (r.migration_id() != migration_id())
    return refuse(absl::InvalidArgumentError(absl::StrFormat(
                      "a reconnection for migration %s reached migration %s",
                      r.migration_id().substr(0, kMaxMigrationIdBytes), migration_id())),
                  false);
  if (ended()) {
    if (state() == DestinationState::kCompleted) {
      // It completed but the source never heard: say so again.
      DestinationMessage m;
      *m.mutable_completed()->mutable_stats() = completed_stats_;
      (void)sink->Send(m);
      sink->Finish(absl::OkStatus());
      return false;
    }
    return refuse(absl::FailedPreconditionError(absl::StrFormat(
                      "migration %s failed at the destination: %s", migration_id(),
                      fail_reason_.message())),
                  !ran_.load());
  }
  const DestinationState s = state();
  if (s == DestinationState::kPostcopy) {
    // The old stream still looks alive here: the source knows it is not.
    DestinationSink* old;
    {
      absl::MutexLock lock(&sink_mu_);
      old = sink_;
      sink_ = nullptr;
    }
    if (old != nullptr)
      old->Finish(absl::UnavailableError("superseded by the source's reconnection"));
    complete_gen_.fetch_add(1);
  } else if (s != DestinationState::kPostcopyPaused) {
    // The source lost the stream before it heard Resumed, and this side has
    // not resumed the VM: it never will now (a late Switchover on the old
    // stream is ignored), and the source may resume its own.
    const bool ran = ran_.load();
    receiving_ = false;
    const absl::Status why = absl::AbortedError(
        "the source reconnected before the switchover completed here");
    End(why);
    return refuse(why, !ran);
  }
  {
    absl::MutexLock lock(&sink_mu_);
    sink_ = sink;
  }
  receiving_ = true;
  SetState(DestinationState::kPostcopy);
  if (options_.paused) options_.paused(migration_id(), "");
  (void)Send(Recovered());
  return true;
}

DestinationSession::Info DestinationSession::GetInfo() const {
  Info info;
  {
    absl::MutexLock lock(&mu_);
    info.migration_id = migration_id_;
    info.vm_name = vm_name_;
    info.state = state_;
    info.source = source_;
    info.source_agent = source_agent_;
    info.mode = mode_;
  }
  info.phase_timings = phases_.Timings();
  absl::ReaderMutexLock vm_lock(&vm_mu_);
  if (vm_ != nullptr) {
    info.has_vm = true;
    if (vm_->pager() != nullptr) info.fault_mode = ToProto(vm_->fault_mode_choice().mode);
    info.layout = ToLayout(vm_->config(), vm_->memory().map());
    info.backend_capabilities = vm_->BackendCapabilities();
    info.vm_stats = vm_->Stats();
    const vmm::OpsTrace recent = vm_->ops_meter().Since(MonotonicNowNanos() - 1'000'000'000);
    if (recent.rows() >= 2 && recent.t_ns.back() > recent.t_ns.front())
      info.guest_ops_per_sec = (recent.total(recent.rows() - 1) - recent.total(0)) /
                               ((recent.t_ns.back() - recent.t_ns.front()) / 1e9);
    info.memory_bytes = vm_->config().memory_bytes;
    info.vcpus = vm_->config().vcpus;
    info.pages_total = vm_->memory().num_pages();
    if (vm_->pager() != nullptr) {
      vmm::DemandPagerStats ps = vm_->pager()->Stats();
      info.pages_missing = ps.missing_pages;
      info.faults = ps.faults;
      info.pages_installed = ps.pages_installed;
    }
  }
  return info;
}

DestinationState DestinationSession::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

void DestinationSession::SetState(DestinationState s) {
  absl::MutexLock lock(&mu_);
  state_ = s;
  phases_.Note(PhaseOf(state_));
}

std::string DestinationSession::migration_id() const {
  absl::MutexLock lock(&mu_);
  return migration_id_;
}

std::string DestinationSession::vm_name() const {
  absl::MutexLock lock(&mu_);
  return vm_name_;
}

vmm::Vm* DestinationSession::vm() const { return vm_.get(); }

std::unique_ptr<vmm::Vm> DestinationSession::TakeVm() {
  if (state() != DestinationState::kCompleted) return nullptr;
  return std::move(vm_);
}

void DestinationSession::WaitUntilRunning() const { running_.WaitForNotification(); }

absl::Status DestinationSession::Send(const DestinationMessage& message) {
  absl::MutexLock lock(&sink_mu_);
  if (sink_ == nullptr || !sink_->Send(message))
    return absl::UnavailableError("the migration stream to the source is closed");
  return absl::OkStatus();
}

absl::Status DestinationSession::Unexpected(const char* message) const {
  return absl::FailedPreconditionError(
      absl::StrFormat("protocol: %s is not expected while the destination is %s", message,
                      DestinationStateName(state())));
}

void DestinationSession::RecordEnd(bool completed) {
  if (recorded_end_ || !options_.on_end) return;
  const std::string id = migration_id();
  absl::ReaderMutexLock vm_lock(&vm_mu_);
  if (vm_ == nullptr || vm_->pager() == nullptr || fetcher_ == nullptr) return;
  recorded_end_ = true;
  options_.on_end(id, completed, vm_->pager()->Stats(), fetcher_->Stats());
}

void DestinationSession::Fail() {
  StopProgress();
  RecordEnd(/*completed=*/false);
  if (fetcher_) fetcher_->Close();  // unblocks vCPUs waiting on pages
  absl::WriterMutexLock vm_lock(&vm_mu_);  // waits for data-stream installs
  if (vm_) vm_->Stop();
  vm_.reset();
  fetcher_.reset();
  SetState(DestinationState::kFailed);
  if (!running_.HasBeenNotified()) running_.Notify();
  if (admitted_ && options_.release)
    options_.release(migration_id(), vm_name(),
                     fail_reason_.ok() ? absl::AbortedError("the migration stream ended")
                                       : fail_reason_);
  admitted_ = false;
  {
    absl::MutexLock lock(&trace_mu_);
    ops_trace_ = {};
  }
  ReturnFreedHeap();
}

bool DestinationSession::OnReceive(FrameBytes bytes, DestinationSink* from) {
  absl::MutexLock ctl(&ctl_mu_);
  if (from != nullptr) {
    absl::MutexLock lock(&sink_mu_);
    if (from != sink_) return false;  // a stream this session let go of
  }
  if (!receiving_) return false;
  const bool after_hello = state() != DestinationState::kAccepting;
  absl::Status status = Receive(bytes);
  if (!status.ok()) {
    receiving_ = false;
    End(status);
    return false;
  }
  if (after_hello) MarkActive();
  return receiving_;
}

bool DestinationSession::OnStreamLost(DestinationSink* from) {
  absl::MutexLock ctl(&ctl_mu_);
  if (from != nullptr) {
    absl::MutexLock lock(&sink_mu_);
    if (from != sink_) return false;
  }
  if (ended()) return true;
  if (state() == DestinationState::kPostcopy && receiving_) {
    // After switchover: the VM runs on, and the source will reconnect.
    Pause("the migration stream from the source broke");
    return false;
  }
  if (!receiving_) return true;  // ending on its own
  receiving_ = false;
  End(absl::UnavailableError(absl::StrFormat(
      "the source closed the migration stream while the destination was %s",
      DestinationStateName(state()))));
  return true;
}

absl::StatusOr<DestinationMessage> DestinationSession::Challenge(
    absl::string_view source_nonce, std::string* dest_nonce) const {
  ASSIGN_OR_RETURN(*dest_nonce, NewNonce());
  absl::MutexLock lock(&mu_);
  if (!secret_)
    return absl::FailedPreconditionError(
        "the migration has not started here: nothing can reconnect or join it yet");
  DestinationMessage m;
  m.mutable_challenge()->set_nonce(*dest_nonce);
  m.mutable_challenge()->set_proof(
      DestinationProof(*secret_, migration_id_, source_nonce, *dest_nonce));
  return m;
}

bool DestinationSession::SourceProved(absl::string_view source_nonce,
                                      absl::string_view dest_nonce,
                                      absl::string_view proof) const {
  absl::MutexLock lock(&mu_);
  return secret_ &&
         ProofMatches(proof, SourceProof(*secret_, migration_id_, source_nonce, dest_nonce));
}

absl::Status DestinationSession::Attach(const ferry::v1::Join& join) {
  absl::MutexLock lock(&mu_);
  if (state_ != DestinationState::kReceivingPrecopy)
    return absl::FailedPreconditionError(absl::StrFormat(
        "a data stream cannot join migration %s while the destination is %s",
        join.migration_id().substr(0, kMaxMigrationIdBytes), DestinationStateName(state_)));
  if (join.migration_id() != migration_id_)
    return absl::InvalidArgumentError(absl::StrFormat(
        "a data stream for migration %s cannot join migration %s",
        join.migration_id().substr(0, kMaxMigrationIdBytes), migration_id_));
  if (!options_.expected_token.empty() &&
      !TokensEqual(join.auth_token(), options_.expected_token))
    return absl::UnauthenticatedError("wrong migration token on a data stream");
  if (join.index() < 1 || join.index() > data_streams_)
    return absl::InvalidArgumentError(absl::StrFormat(
        "data stream %d: the source announced %d data streams", join.index(),
        data_streams_));
  const uint32_t bit = 1u << join.index();
  if (attached_ & bit)
    return absl::AlreadyExistsError(
        absl::StrFormat("data stream %d joined twice", join.index()));
  attached_ |= bit;
  active_ = true;  // under mu_
  return absl::OkStatus();
}

absl::Status DestinationSession::OnDataFrame(FrameBytes bytes, std::vector<uint8_t>* bounce) {
  absl::Status s = [&]() -> absl::Status {
    absl::ReaderMutexLock vm_lock(&vm_mu_);
    // Precopy frames, and the postcopy push once the VM runs here
    // (InstallFrame checks each frame's phase against the state). A push
    // frame still in flight on a data stream when the main stream broke
    // is installed like any other: the source's memory is final. After
    // completion every page is here already: a frame is dropped unread
    // (the VM may have been handed over) and the stream lives on.
    const DestinationState state = this->state();
    if (state == DestinationState::kCompleted) return absl::OkStatus();
    const bool postcopy =
        state == DestinationState::kPostcopy || state == DestinationState::kPostcopyPaused;
    if (vm_ == nullptr || (state != DestinationState::kReceivingPrecopy && !postcopy))
      return absl::FailedPreconditionError(
          absl::StrFormat("protocol: a page frame on a data stream while the destination is %s",
                          DestinationStateName(state)));
    return InstallFrame(bytes, postcopy, bounce);
  }();
  if (!s.ok()) {
    // A bad frame on any stream ends the migration.
    absl::MutexLock ctl(&ctl_mu_);
    if (receiving_) {
      receiving_ = false;
      End(s);
    }
  }
  return s;
}

void DestinationSession::End(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
  }
  StopProgress();
  if (!status.ok() && state() != DestinationState::kCompleted) {
    (void)Send(ToErrorMessage(status));
    fail_reason_ = status;
    if (!ever_admitted_ && options_.refused) options_.refused(claimed_id_, status);
    Fail();
  }
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    ended_at_ns_ = MonotonicNowNanos();
    end_status_ = status;
  }
  absl::MutexLock lock(&sink_mu_);
  if (sink_ != nullptr) sink_->Finish(status);
  sink_ = nullptr;  // the stream's reactor goes once finished
}

absl::Status DestinationSession::Wait() const {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&ended_));
  return end_status_;
}

absl::Status DestinationSession::Receive(FrameBytes bytes) {
  if (bytes.empty() || bytes[0].empty())
    return absl::InvalidArgumentError("protocol: an empty message from the source");
  switch (bytes[0][0]) {
    case kPageFrame: {
      const DestinationState s = state();
      if (s != DestinationState::kReceivingPrecopy && s != DestinationState::kPostcopy)
        return Unexpected("a page frame");
      return OnPageFrame(bytes);
    }
    case kControlFrame: {
      SourceMessage message;
      if (!ParseControlFrame(bytes, &message))
        return absl::InvalidArgumentError(
            "protocol: a control message from the source does not parse");
      return Handle(message);
    }
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "protocol: unknown frame kind %d from the source", bytes[0][0]));
  }
}

absl::Status DestinationSession::Handle(const SourceMessage& m) {
  const DestinationState s = state();
  switch (m.msg_case()) {
    case SourceMessage::kHello:
      if (s != DestinationState::kAccepting) return Unexpected("Hello");
      return OnHello(m.hello());
    case SourceMessage::kCheck:
      if (s != DestinationState::kAccepting) return Unexpected("a check");
      return OnCheck(m.check());
    case SourceMessage::kRoundEnd: {
      if (s != DestinationState::kReceivingPrecopy) return Unexpected("RoundEnd");
      round_acked_ = m.round_end().round();
      DestinationMessage ack;
      ack.mutable_progress()->set_round_acked(round_acked_);
      ack.mutable_progress()->set_pages_missing(vm_->pager()->missing_pages());
      return Send(ack);
    }
    case SourceMessage::kDiscard: {
      if (s != DestinationState::kReceivingPrecopy) return Unexpected("Discard");
      RETURN_IF_ERROR(DiscardRuns(m.discard().runs()));
      round_acked_ = m.discard().round();
      DestinationMessage ack;
      ack.mutable_progress()->set_round_acked(round_acked_);
      ack.mutable_progress()->set_pages_missing(vm_->pager()->missing_pages());
      return Send(ack);
    }
    case SourceMessage::kSwitchover:
      if (s != DestinationState::kReceivingPrecopy) return Unexpected("Switchover");
      return OnSwitchover(m.switchover());
    case SourceMessage::kComplete:
      if (s != DestinationState::kPostcopy) return Unexpected("Complete");
      return OnComplete(m.complete());
    case SourceMessage::kJoin:
      return Unexpected("Join (it opens a data stream)");
    case SourceMessage::kFlush:
      return Unexpected("Flush (data streams only)");
    case SourceMessage::kAbort:
      return absl::AbortedError(
          absl::StrCat("the source aborted the migration: ", m.abort().reason()));
    default:
      return absl::InvalidArgumentError("protocol: an empty or unknown source message");
  }
}

absl::Status DestinationSession::OnHello(const ferry::v1::Hello& hello) {
  // For the log of a refusal: bounded before it is kept.
  claimed_id_ = hello.migration_id().substr(0, kMaxMigrationIdBytes);
  if (hello.protocol_version() != kProtocolVersion)
    return absl::FailedPreconditionError(absl::StrFormat(
        "the source speaks migration protocol version %d, this destination speaks %d",
        hello.protocol_version(), kProtocolVersion));
  if (!options_.expected_token.empty() &&
      !TokensEqual(hello.auth_token(), options_.expected_token))
    return absl::UnauthenticatedError(
        "wrong migration token: give the source agent the destination's token");
  ASSIGN_OR_RETURN(ValidHello valid, ValidateHello(hello));
  {
    absl::MutexLock lock(&mu_);
    secret_ = valid.secret;
  }
  if (hello.recovery_timeout_ms() > 0)
    recovery_timeout_ =
        absl::Milliseconds(static_cast<int64_t>(hello.recovery_timeout_ms())) +
        kRecoveryMargin;
  const MigrationMode mode = valid.mode;
  const vmm::FaultMode fault_mode = valid.fault_mode;
  const vmm::VmConfig& config = valid.config;
  const std::string& name = valid.name;
  {
    absl::MutexLock lock(&mu_);
    source_ = hello.fetch_address();
    source_agent_ = hello.source_agent();
    mode_ = hello.mode();
  }
  if (options_.admit)
    RETURN_IF_ERROR(options_.admit(hello.migration_id(), hello.fetch_address(), name, config));
  admitted_ = true;
  ever_admitted_ = true;
  {
    absl::MutexLock lock(&mu_);
    vm_name_ = name;
  }

  fetch::FetcherOptions fo;
  fo.address = hello.fetch_address();
  fo.migration_id = hello.migration_id();
  std::copy(hello.fetch_secret().begin(), hello.fetch_secret().end(), fo.secret.begin());
  fo.page_size = config.page_size;
  fo.encrypt = hello.fetch_encrypted();
  fetcher_ = std::make_shared<fetch::RemotePageSource>(fo);
  if (mode != MigrationMode::kPrecopy) {
    // Every fetch connection up front, before switchover: a fetch channel
    // that cannot be reached fails the migration while the source still
    // runs the VM, and no vCPU waits for a handshake after resume.
    const int lanes = std::min(config.vcpus + std::max(1, options_.fault_handlers), 32);
    if (absl::Status s = fetcher_->Preconnect(lanes); !s.ok())
      return absl::Status(s.code(), absl::StrCat("the source's fetch channel at ",
                                                 hello.fetch_address(), ": ", s.message()));
  }
  {
    absl::WriterMutexLock vm_lock(&vm_mu_);
    ASSIGN_OR_RETURN(vm_, vmm::Vm::Create(config));
  }
  RETURN_IF_ERROR(vm_->EnableDemandPaging(fetcher_, {fault_mode, options_.fault_handlers}));
  {
    absl::MutexLock lock(&mu_);
    migration_id_ = hello.migration_id();
    data_streams_ = hello.data_streams();
    state_ = DestinationState::kReceivingPrecopy;
    phases_.Note(PhaseOf(state_));
  }
  DestinationMessage accepted;
  accepted.mutable_accepted()->set_protocol_version(kProtocolVersion);
  accepted.mutable_accepted()->set_push_on_data_streams(true);
  RETURN_IF_ERROR(Send(accepted));
  waiters_.emplace_back(&DestinationSession::AwaitFirstMessage, this);
  return absl::OkStatus();
}

void DestinationSession::MarkActive() {
  if (active_.load(std::memory_order_relaxed)) return;
  absl::MutexLock lock(&mu_);  // AwaitFirstMessage waits on it
  active_ = true;
}

void DestinationSession::AwaitFirstMessage() {
  {
    absl::MutexLock lock(&mu_);
    auto moved_on = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_ || active_.load(); };
    if (mu_.AwaitWithTimeout(absl::Condition(&moved_on), options_.first_message_timeout)) return;
  }
  absl::MutexLock ctl(&ctl_mu_);
  if (ended() || active_.load()) return;
  receiving_ = false;
  End(absl::DeadlineExceededError(absl::StrFormat(
      "the source sent nothing for %s after the migration was accepted: dropped, its VM slot "
      "freed",
      absl::FormatDuration(options_.first_message_timeout))));
}

absl::Status DestinationSession::OnPageFrame(FrameBytes bytes) {
  const bool postcopy = state() == DestinationState::kPostcopy;
  return InstallFrame(bytes, postcopy, &bounce_);
}

absl::Status DestinationSession::InstallFrame(FrameBytes bytes, bool postcopy,
                                              std::vector<uint8_t>* bounce) {
  // Validate the whole frame before touching memory.
  ASSIGN_OR_RETURN(DecodedFrame d, DecodePageFrame(bytes, vm_->memory().map()));
  const bool phase_ok = postcopy ? d.phase == FramePhase::kPostcopy
                                 : d.phase != FramePhase::kPostcopy;
  if (!phase_ok)
    return absl::FailedPreconditionError(absl::StrFormat(
        "protocol: a %s page frame is not expected while the destination is %s",
        FramePhaseName(d.phase), DestinationStateName(state())));
  vmm::DemandPager& pager = *vm_->pager();
  const uint32_t ps = vm_->memory().page_size();
  if (bounce->size() != ps) bounce->resize(ps);
  // After switchover the push yields to vCPUs resolving their own faults.
  std::optional<ScopedThreadNice> background;
  if (postcopy) background.emplace(10);
  // Precopy and stop-and-copy: no vCPU runs, so pages are written in place
  // through the file, which userfaultfd does not watch. Postcopy: one atomic
  // install per contiguous stretch.
  for (const FrameDataRun& run : d.data_runs)
    RETURN_IF_ERROR(ForEachRunPages(
        bytes, run, ps, bounce->data(),
        [&](uint64_t gpa, const uint8_t* data, uint64_t count) {
          return postcopy ? pager.InstallPages(gpa, data, count)
                          : pager.WritePages(gpa, data, count);
        }));
  for (const FrameZeroRun& run : d.zero_runs)
    RETURN_IF_ERROR(postcopy ? pager.MarkZeroPages(run.gpa, run.count)
                             : pager.WriteZeroPages(run.gpa, run.count));
  if (postcopy) {
    // KVM: map what the push just installed in the stage-2 tables before a
    // vCPU touches it. Every page of these runs is present now (installed
    // here or by a fault first), and this thread serves no userfaultfd.
    // Zero pages stay unallocated until touched.
    for (const FrameDataRun& run : d.data_runs)
      RETURN_IF_ERROR(vm_->PreFault(run.gpa, run.count * ps));
  }
  return absl::OkStatus();
}

absl::Status DestinationSession::DiscardRuns(
    const google::protobuf::RepeatedPtrField<ferry::v1::PageRun>& runs) {
  const uint32_t ps = vm_->memory().page_size();
  for (const auto& run : runs)
    if (run.count() == 0 || run.gpa() % ps != 0 ||
        !vm_->memory().map().GpaToOffset(run.gpa(), uint64_t{run.count()} * ps).ok())
      return absl::InvalidArgumentError(absl::StrFormat(
          "discard run at gpa %#x of %d pages is empty, outside RAM or unaligned",
          run.gpa(), run.count()));
  for (const auto& run : runs) {
    RETURN_IF_ERROR(vm_->pager()->Discard(run.gpa(), run.count()));
    pages_discarded_ += run.count();
  }
  return absl::OkStatus();
}

absl::Status DestinationSession::OnSwitchover(const ferry::v1::Switchover& sw) {
  const int64_t t0 = MonotonicNowNanos();
  std::vector<std::string> states(sw.vcpu_states().begin(), sw.vcpu_states().end());
  RETURN_IF_ERROR(vm_->RestoreVcpuStates(states));  // validates; the VM is not running
  RETURN_IF_ERROR(DiscardRuns(sw.discard()));
  vmm::DemandPager& pager = *vm_->pager();
  if (!sw.postcopy() && pager.missing_pages() != 0)
    return absl::FailedPreconditionError(absl::StrFormat(
        "switchover without postcopy, but %d pages were never sent",
        pager.missing_pages()));
  ops_at_resume_ = vm_->Stats().total_ops;
  resumed_ns_ = RealClock().NowNanos();
  ran_.store(true);  // from here on the guest may have run here
  RETURN_IF_ERROR(vm_->Start());
  const int64_t t1 = MonotonicNowNanos();
  SetState(DestinationState::kPostcopy);
  running_.Notify();
  DestinationMessage resumed;
  resumed.mutable_resumed()->set_switchover_ns(t1 - t0);
  RETURN_IF_ERROR(Send(resumed));
  StartProgress();
  return absl::OkStatus();
}

absl::Status DestinationSession::OnComplete(const ferry::v1::Complete&) {
  // Pages served on demand may still be on their way into memory: wait on a
  // thread of our own, not the transport's.
  receiving_ = false;
  completers_.emplace_back(&DestinationSession::CompleteWhenNothingMissing, this,
                           complete_gen_.load());
  return absl::OkStatus();
}

void DestinationSession::CompleteWhenNothingMissing(uint64_t gen) {
  // Waits without the control lock: a Reconnect meanwhile supersedes this
  // wait (the source pushes what is missing and sends Complete again).
  auto missing = [this]() -> uint64_t {
    absl::ReaderMutexLock vm_lock(&vm_mu_);
    return vm_ == nullptr ? 0 : vm_->pager()->missing_pages();
  };
  const absl::Time deadline = absl::Now() + options_.complete_timeout;
  while (missing() != 0 && complete_gen_.load() == gen && absl::Now() <= deadline)
    absl::SleepFor(absl::Microseconds(500));
  absl::MutexLock ctl(&ctl_mu_);
  if (complete_gen_.load() != gen || ended() || vm_ == nullptr) return;
  vmm::DemandPager* pager = vm_->pager();
  if (pager->missing_pages() != 0) {
    End(absl::DeadlineExceededError(absl::StrFormat(
        "the source says every page was sent, but %d are still missing after %s",
        pager->missing_pages(), absl::FormatDuration(options_.complete_timeout))));
    return;
  }
  // Nothing missing is not enough: every vCPU must be able to run the guest
  // (a vCPU that failed on a fetch error means the VM did not arrive whole).
  if (absl::Status health = vm_->Health(); !health.ok()) {
    End(absl::Status(health.code(),
                     absl::StrCat("the VM cannot run here: ", health.message())));
    return;
  }
  if (absl::Status s = vm_->FinishDemandPaging(); !s.ok()) {
    End(s);
    return;
  }
  // Nothing more to fetch: the fetch connections close now, and their
  // sockets, rings and buffers go (the VM keeps nothing of the migration).
  // Only after FinishDemandPaging: a vCPU whose fetch was still under way
  // then finds its page present or known zero (installs of it find the
  // memory out of userfault mode), never a released lane's buffer to copy.
  fetcher_->ReleaseLanes();
  StopProgress();
  DrainOpsTrace();
  RecordEnd(/*completed=*/true);
  DestinationMessage completed;
  *completed.mutable_completed()->mutable_stats() = Stats();
  // Memory held once the migration is done: freed heap goes back first.
  ReturnFreedHeap();
  if (absl::StatusOr<uint64_t> guest = vm_->memory().AllocatedBytes(); guest.ok())
    completed.mutable_completed()->mutable_stats()->set_guest_allocated_bytes(*guest);
  completed.mutable_completed()->mutable_stats()->set_heap_bytes(AnonymousResidentBytes());
  completed_stats_ = completed.completed().stats();
  // The owner adopts the VM before the state says completed: whoever sees
  // the migration ended finds the VM its owner's (never a moment in which
  // it is neither arriving nor there).
  if (options_.adopt) {
    admitted_ = false;  // the VM is its new owner's now
    std::unique_ptr<vmm::Vm> vm;
    {
      absl::WriterMutexLock vm_lock(&vm_mu_);
      vm = std::move(vm_);
    }
    options_.adopt(migration_id(), vm_name(), std::move(vm));
  }
  SetState(DestinationState::kCompleted);
  End(Send(completed));
}

ferry::v1::DestinationStats DestinationSession::Stats() const {
  ferry::v1::DestinationStats s;
  vmm::DemandPagerStats ps = vm_->pager()->Stats();
  fetch::FetcherStats fs = fetcher_->Stats();
  s.set_faults(ps.faults);
  s.set_fault_p50_us(ps.fault_latency.Percentile(50) / 1e3);
  s.set_fault_p99_us(ps.fault_latency.Percentile(99) / 1e3);
  s.set_fault_p999_us(ps.fault_latency.Percentile(99.9) / 1e3);
  s.set_fault_max_us(ps.fault_latency.max / 1e3);
  s.set_pages_installed(ps.pages_installed);
  s.set_zero_pages(ps.zero_pages);
  s.set_zero_for_reads_bytes(ps.zero_for_reads * vm_->memory().page_size());
  s.set_pages_already_present(ps.already_present);
  s.set_fetch_requests(fs.requests);
  s.set_fetch_shared(fs.shared);
  s.set_fetch_rtt_p50_us(fs.round_trip.Percentile(50) / 1e3);
  s.set_fetch_rtt_p99_us(fs.round_trip.Percentile(99) / 1e3);
  s.set_fault_trap_p50_us(ps.trap_latency.Percentile(50) / 1e3);
  s.set_fault_trap_p99_us(ps.trap_latency.Percentile(99) / 1e3);
  s.set_fault_install_p50_us(ps.install_latency.Percentile(50) / 1e3);
  s.set_fault_install_p99_us(ps.install_latency.Percentile(99) / 1e3);
  s.set_guest_ops(vm_->Stats().total_ops - ops_at_resume_);
  s.set_pages_discarded(pages_discarded_);
  s.set_fault_mode(ToProto(vm_->fault_mode_choice().mode));
  s.set_fault_mode_reason(vm_->fault_mode_choice().reason);
  s.set_prefaulted_pages(vm_->PreFaultedPages());
  s.set_paths(vm_->DemandPagingPaths());
  s.set_blocked_ns(ps.blocked_ns);
  for (uint64_t ns : ps.blocked_ns_per_vcpu) s.add_blocked_ns_per_vcpu(ns);
  {
    absl::MutexLock lock(&trace_mu_);
    ferry::v1::OpsTrace* t = s.mutable_ops_trace();
    t->set_vcpus(ops_trace_.vcpus);
    for (int64_t ns : ops_trace_.t_ns) t->add_t_ns(ns - resumed_ns_);
    for (uint64_t ops : ops_trace_.ops) t->add_ops(ops);
  }
  return s;
}

void DestinationSession::DrainOpsTrace() {
  absl::MutexLock lock(&trace_mu_);
  vm_->ops_meter().AppendTo(&ops_trace_, resumed_ns_, MaxOpsTraceRows(vm_->config().vcpus));
}

void DestinationSession::StartProgress() {
  progress_ = std::thread([this] {
    absl::MutexLock lock(&progress_mu_);
    while (!progress_mu_.AwaitWithTimeout(absl::Condition(&progress_stop_),
                                          kProgressInterval)) {
      DrainOpsTrace();
      DestinationMessage m;
      auto* p = m.mutable_progress();
      p->set_round_acked(round_acked_);
      p->set_pages_missing(vm_->pager()->missing_pages());
      p->set_guest_ops(vm_->Stats().total_ops - ops_at_resume_);
      vmm::DemandPagerStats ps = vm_->pager()->Stats();
      p->set_faults(ps.faults);
      p->set_fault_p99_us(ps.fault_latency.Percentile(99) / 1e3);
      p->set_running(true);
      (void)Send(m);  // dropped while paused (no stream)
    }
  });
}

void DestinationSession::StopProgress() {
  {
    absl::MutexLock lock(&progress_mu_);
    progress_stop_ = true;
  }
  if (progress_.joinable()) progress_.join();
}

}  // namespace ferry::migration
