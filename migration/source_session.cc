#include "migration/source_session.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/grpc_status.h"
#include "base/process.h"
#include "base/status_macros.h"
#include "migration/convert.h"
#include "migration/destination_session.h"
#include "migration/fetch/wire.h"
#include "vmm/page_source.h"

namespace ferry::migration {
namespace {

using ferry::v1::DestinationMessage;
using ferry::v1::SourceMessage;

constexpr uint64_t kBatchPages = 64;  // 256 KiB of data per PageBatch (measured best)
constexpr uint64_t kFaultWindow = 32;     // pages pushed after each recent fault
constexpr absl::Duration kAcceptTimeout = absl::Seconds(30);
constexpr absl::Duration kResumeTimeout = absl::Seconds(30);
constexpr int kMaxMessageBytes = 64 << 20;
// Early discards before a postcopy switchover: at most this many, and none
// once fewer pages than this are stale (the pause discards those).
constexpr int kMaxEarlyDiscards = 4;
constexpr size_t kSmallDiscard = 2048;

// Appends the page at `gpa` to `runs`, extending the last run when it is
// contiguous.
void AppendPage(google::protobuf::RepeatedPtrField<ferry::v1::PageRun>* runs, uint64_t gpa,
                uint32_t page_size) {
  if (!runs->empty()) {
    ferry::v1::PageRun& last = *runs->rbegin();
    if (last.gpa() + uint64_t{last.count()} * page_size == gpa) {
      last.set_count(last.count() + 1);
      return;
    }
  }
  ferry::v1::PageRun* run = runs->Add();
  run->set_gpa(gpa);
  run->set_count(1);
}

std::string RandomId() {
  uint8_t b[8];
  (void)fetch::RandomBytes(absl::MakeSpan(b));
  std::string id = "mig-";
  for (uint8_t x : b) absl::StrAppendFormat(&id, "%02x", x);
  return id;
}

}  // namespace

const char* SourcePhaseName(SourcePhase p) {
  switch (p) {
    case SourcePhase::kSetup: return "setup";
    case SourcePhase::kPrecopy: return "precopy";
    case SourcePhase::kSwitchover: return "switchover";
    case SourcePhase::kPostcopy: return "postcopy";
    case SourcePhase::kCompleted: return "completed";
    case SourcePhase::kFailed: return "failed";
    case SourcePhase::kCancelled: return "cancelled";
  }
  return "unknown";
}

SourceSession::SourceSession(vmm::Vm* vm, SourceConfig config)
    : vm_(vm),
      config_(std::move(config)),
      clock_(config_.clock),
      id_(config_.options.migration_id.empty() ? RandomId() : config_.options.migration_id),
      num_pages_(vm->memory().num_pages()),
      page_size_(vm->memory().page_size()),
      limiter_(config_.options.max_bandwidth, config_.clock),
      sent_(num_pages_, false),
      remaining_(new std::atomic<uint64_t>[(num_pages_ + 63) / 64]()),
      ever_sent_(new std::atomic<uint64_t>[(num_pages_ + 63) / 64]()) {
  for (auto& f : fault_ring_) f.store(0);
}

SourceSession::~SourceSession() {
  {
    absl::MutexLock lock(&mu_);
    sampler_stop_ = true;
  }
  if (sampler_.joinable()) sampler_.join();
  if (context_) context_->TryCancel();
  if (reader_.joinable()) reader_.join();
  if (served_) config_.page_server->Unregister(id_);
}

void SourceSession::SetPhase(SourcePhase phase) {
  absl::MutexLock lock(&mu_);
  phase_ = phase;
}

SourceProgress SourceSession::Progress() const {
  SourceProgress p;
  absl::MutexLock lock(&mu_);
  p.phase = phase_;
  p.round = round_;
  p.elapsed_ms = t_start_ ? (clock_->NowNanos() - t_start_) / 1e6 : 0;
  p.pages_total = num_pages_;
  p.pages_transferred = pages_transferred_.load(std::memory_order_relaxed);
  p.pages_remaining = phase_ == SourcePhase::kPostcopy ? pages_left_.load() : pages_remaining_;
  p.bytes_sent = bytes_sent_.load();
  p.bandwidth_bps = p.elapsed_ms > 0 ? p.bytes_sent / (p.elapsed_ms / 1e3) : 0;
  p.dirty_pages_per_sec = dirty_pps_;
  p.faults = last_progress_.faults();
  p.fault_p99_us = last_progress_.fault_p99_us();
  if (t_resumed_ > 0) {
    double since = (clock_->NowNanos() - t_resumed_) / 1e9;
    p.faults_per_sec = since > 0 ? p.faults / since : 0;
    p.downtime_ms = (t_resumed_ - t_pause_) / 1e6;
  }
  return p;
}

absl::Status SourceSession::Cancel() {
  absl::MutexLock lock(&mu_);
  if (switchover_sent_ || phase_ == SourcePhase::kCompleted)
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration %s is %s: the destination runs the VM, so it can no longer be "
        "cancelled",
        id_, SourcePhaseName(phase_)));
  if (phase_ == SourcePhase::kFailed || phase_ == SourcePhase::kCancelled)
    return absl::FailedPreconditionError(
        absl::StrFormat("migration %s already ended (%s)", id_, SourcePhaseName(phase_)));
  cancel_requested_ = true;
  if (context_) context_->TryCancel();
  return absl::OkStatus();
}

absl::Status SourceSession::Write(const SourceMessage& message) {
  {
    absl::MutexLock lock(&mu_);
    if (cancel_requested_ && !switchover_sent_)
      return absl::CancelledError("the migration was cancelled");
    if (!peer_error_.ok()) return peer_error_;
  }
  if (!stream_->Write(message)) {
    {
      absl::MutexLock lock(&mu_);
      if (cancel_requested_) return absl::CancelledError("the migration was cancelled");
      if (!peer_error_.ok()) return peer_error_;
    }
    return StreamBroke("sending");
  }
  return absl::OkStatus();
}

absl::Status SourceSession::StreamBroke(absl::string_view when) {
  {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stream_done_), absl::Seconds(2));
    if (!peer_error_.ok()) return peer_error_;
    if (!stream_done_)
      return absl::UnavailableError(absl::StrFormat(
          "the migration stream to the destination agent at %s broke while %s",
          config_.destination, when));
  }
  if (!finished_) {
    finish_status_ = stream_->Finish();
    finished_ = true;
  }
  return absl::UnavailableError(absl::StrFormat(
      "the migration stream to the destination agent at %s broke while %s: %s",
      config_.destination, when,
      finish_status_.ok() ? "closed by the destination" : finish_status_.error_message()));
}

void SourceSession::ReaderLoop() {
  DestinationMessage m;
  while (stream_->Read(&m)) {
    absl::MutexLock lock(&mu_);
    switch (m.msg_case()) {
      case DestinationMessage::kAccepted:
        accepted_ = true;
        break;
      case DestinationMessage::kProgress:
        last_progress_ = m.progress();
        round_acked_ = std::max(round_acked_, m.progress().round_acked());
        break;
      case DestinationMessage::kResumed:
        resumed_ = true;
        t_resumed_ = clock_->NowNanos();
        dest_switchover_ns_ = m.resumed().switchover_ns();
        break;
      case DestinationMessage::kCompleted:
        completed_ = true;
        dest_stats_ = m.completed().stats();
        last_progress_.set_faults(dest_stats_.faults());
        break;
      case DestinationMessage::kError:
        peer_error_ = absl::Status(
            static_cast<absl::StatusCode>(m.error().code()),
            absl::StrCat("destination: ", m.error().message()));
        break;
      default:
        peer_error_ = absl::InvalidArgumentError(
            "protocol: an empty or unknown message from the destination");
        break;
    }
  }
  absl::MutexLock lock(&mu_);
  stream_done_ = true;
}

void SourceSession::SamplerLoop() {
  uint64_t last_ops = 0;
  int64_t last_t = clock_->NowNanos();
  bool dest = false;
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&sampler_stop_), absl::Milliseconds(100))) {
    const int64_t now = clock_->NowNanos();
    // Before the destination runs the guest, its ops are counted here.
    const bool use_dest = resumed_;
    uint64_t ops = use_dest ? last_progress_.guest_ops() : vm_->Stats().total_ops;
    if (use_dest != dest) {
      dest = use_dest;
      last_ops = use_dest ? 0 : ops;
    }
    const double dt = (now - last_t) / 1e9;
    OpsSample s;
    s.t_ms = (now - t_start_) / 1e6;
    s.ops_per_sec = dt > 0 && ops >= last_ops ? (ops - last_ops) / dt : 0;
    s.phase = SourcePhaseName(phase_);
    timeline_.push_back(s);
    last_ops = ops;
    last_t = now;
  }
}

void SourceSession::CountSent(uint64_t page, bool data) {
  const uint64_t bit = 1ull << (page % 64);
  if (!(ever_sent_[page / 64].fetch_or(bit, std::memory_order_relaxed) & bit)) {
    pages_transferred_.fetch_add(1, std::memory_order_relaxed);
  } else if (data) {
    pages_resent_.fetch_add(1, std::memory_order_relaxed);
  }
}

bool SourceSession::TakeRemaining(uint64_t page) {
  const uint64_t bit = 1ull << (page % 64);
  if (remaining_[page / 64].fetch_and(~bit, std::memory_order_acq_rel) & bit) {
    pages_left_.fetch_sub(1);
    return true;
  }
  return false;
}

void SourceSession::OnServed(uint64_t gpa, uint32_t count) {
  // On the page server thread: a destination vCPU faulted on these pages.
  auto offset = vm_->memory().map().GpaToOffset(gpa, uint64_t{count} * page_size_);
  if (!offset.ok()) return;
  const uint64_t first = *offset / page_size_;
  for (uint64_t p = first; p < first + count; ++p) {
    TakeRemaining(p);  // the push need not send it again
    CountSent(p, /*data=*/true);
    pages_demand_.fetch_add(1, std::memory_order_relaxed);
    bytes_sent_.fetch_add(page_size_, std::memory_order_relaxed);
    bytes_by_phase_[3].fetch_add(page_size_, std::memory_order_relaxed);
    const uint64_t n = fault_count_.fetch_add(1);
    fault_ring_[n % kFaultRing].store(p);
  }
}

absl::Status SourceSession::Failed(absl::Status status) {
  bool cancelled;
  bool switched;
  {
    absl::MutexLock lock(&mu_);
    cancelled = cancel_requested_ && !switchover_sent_;
    switched = switchover_sent_;
    phase_ = cancelled ? SourcePhase::kCancelled : SourcePhase::kFailed;
  }
  if (cancelled) status = absl::CancelledError("the migration was cancelled");
  if (!switched) {
    // Invariant 2: before switchover the source VM stays authoritative.
    SourceMessage abort;
    abort.mutable_abort()->set_reason(std::string(status.message()));
    if (stream_) (void)stream_->Write(abort);
    dirty_log_.reset();
    if (paused_) (void)vm_->Resume();
  }
  if (served_) config_.page_server->Unregister(id_);
  if (context_) context_->TryCancel();
  report_.outcome = absl::StrCat(cancelled ? "cancelled" : "failed", ": ", status.message(),
                                 switched ? " (after switchover: the source VM is kept "
                                            "paused with all of its memory)"
                                          : " (the source VM keeps running)");
  t_end_ = clock_->NowNanos();
  FillReport();
  return status;
}

absl::Status SourceSession::Run() {
  t_start_ = clock_->NowNanos();
  sampler_ = std::thread(&SourceSession::SamplerLoop, this);
  if (absl::Status s = Setup(); !s.ok()) return Failed(s);
  PolicyDecision decision;
  std::vector<uint64_t> pending;
  t_precopy_ = clock_->NowNanos();
  if (config_.options.mode == MigrationMode::kPostcopy) {
    decision = {Decision::kPostcopy, "postcopy mode: switch over at once"};
  } else if (absl::Status s = Precopy(&decision, &pending); !s.ok()) {
    return Failed(s);
  }
  if (decision.decision == Decision::kFail)
    return Failed(absl::FailedPreconditionError(decision.reason));
  switchover_reason_ = decision.reason;
  if (decision.decision == Decision::kPostcopy && !pending.empty()) {
    // Going postcopy: the last round's dirty pages are stale at the
    // destination. Dropping them costs about 0.3 us a page; do it while the
    // source still runs, so the pause only discards its last moment's writes.
    // Each discard takes a while, during which the guest dirties more; repeat
    // on the (shrinking) new dirty set until what is left is small.
    for (int i = 0; i < kMaxEarlyDiscards && pending.size() > kSmallDiscard; ++i) {
      if (absl::Status s = EarlyDiscard(pending); !s.ok()) return Failed(s);
      pending.clear();
      if (absl::Status s = dirty_log_->Collect(&pending); !s.ok()) return Failed(s);
    }
  }
  if (absl::Status s = Switchover(decision, std::move(pending)); !s.ok()) return Failed(s);
  if (absl::Status s = Postcopy(); !s.ok()) return Failed(s);
  if (absl::Status s = AwaitCompleted(); !s.ok()) return Failed(s);
  // The destination holds every page: release the VM.
  config_.page_server->Unregister(id_);
  served_.reset();
  vm_->Stop();
  stream_->WritesDone();
  SetPhase(SourcePhase::kCompleted);
  t_end_ = clock_->NowNanos();
  report_.outcome = "completed";
  FillReport();
  return absl::OkStatus();
}

absl::Status SourceSession::Setup() {
  RETURN_IF_ERROR(ValidateMigrationOptions(config_.options));
  if (config_.page_server == nullptr)
    return absl::InvalidArgumentError("the source needs a page server");
  fetch::Secret secret;
  RETURN_IF_ERROR(fetch::RandomBytes(absl::MakeSpan(secret)));
  served_ = std::make_shared<fetch::ServedMigration>(
      id_, secret, &vm_->memory(),
      [this](uint64_t gpa, uint32_t count) { OnServed(gpa, count); });
  config_.page_server->Register(served_);

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  auto creds = config_.credentials ? config_.credentials : grpc::InsecureChannelCredentials();
  auto channel = grpc::CreateCustomChannel(config_.destination, creds, args);
  stub_ = ferry::v1::Migration::NewStub(channel);
  {
    absl::MutexLock lock(&mu_);
    if (cancel_requested_) return absl::CancelledError("the migration was cancelled");
    context_ = std::make_unique<grpc::ClientContext>();
  }
  stream_ = stub_->Migrate(context_.get());
  reader_ = std::thread(&SourceSession::ReaderLoop, this);

  SourceMessage hello_msg;
  ferry::v1::Hello* hello = hello_msg.mutable_hello();
  hello->set_protocol_version(kProtocolVersion);
  hello->set_migration_id(id_);
  hello->set_auth_token(config_.options.auth_token);
  *hello->mutable_layout() = ToLayout(vm_->config(), vm_->memory().map());
  hello->set_mode(ToProto(config_.options.mode));
  hello->set_fault_mode(ToProto(config_.options.fault_mode));
  hello->set_fetch_address(config_.fetch_address);
  hello->set_fetch_secret(std::string(secret.begin(), secret.end()));
  hello->set_vm_name(config_.vm_name);
  RETURN_IF_ERROR(Write(hello_msg));

  bool accepted, cancelled, done;
  absl::Status peer;
  {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return accepted_ || !peer_error_.ok() || stream_done_ || cancel_requested_;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), kAcceptTimeout))
      return absl::DeadlineExceededError(absl::StrFormat(
          "the destination %s did not accept the migration within %s",
          config_.destination, absl::FormatDuration(kAcceptTimeout)));
    accepted = accepted_;
    cancelled = cancel_requested_;
    done = stream_done_;
    peer = peer_error_;
  }
  if (cancelled) return absl::CancelledError("the migration was cancelled");
  if (!peer.ok()) return peer;
  if (!accepted && done) return StreamBroke("waiting for it to accept the migration");
  return absl::OkStatus();
}

absl::Status SourceSession::SendPages(const std::vector<uint64_t>& pages,
                                      ferry::v1::Phase phase, uint64_t round) {
  const vmm::GuestMemory& mem = vm_->memory();
  const vmm::MemoryMap& map = mem.map();
  const uint32_t ps = page_size_;
  size_t i = 0;
  SourceMessage msg;
  while (i < pages.size()) {
    msg.Clear();
    ferry::v1::PageBatch* b = msg.mutable_pages();
    b->set_phase(phase);
    b->set_round(round);
    std::string* data = b->mutable_data();
    data->reserve(kBatchPages * ps);
    std::vector<uint64_t> zeros;  // gpas
    const size_t batch_start = i;
    const size_t end = std::min(pages.size(), i + kBatchPages);
    for (; i < end; ++i) {
      const uint64_t p = pages[i];
      const uint8_t* src = mem.host() + p * ps;
      const uint64_t gpa = map.OffsetToGpa(p * ps);
      const bool zero = vmm::IsZeroPage(src, ps);
      CountSent(p, !zero);
      if (zero) {
        zeros.push_back(gpa);
        continue;
      }
      AppendPage(b->mutable_runs(), gpa, ps);
      data->append(reinterpret_cast<const char*>(src), ps);
    }
    if (!zeros.empty()) {
      const auto [lo, hi] = std::minmax_element(zeros.begin(), zeros.end());
      b->set_zero_base_gpa(*lo);
      std::string* bits = b->mutable_zero_bitmap();
      bits->assign((*hi - *lo) / ps / 8 + 1, '\0');
      for (uint64_t g : zeros) {
        uint64_t bit = (g - *lo) / ps;
        (*bits)[bit / 8] |= static_cast<char>(1 << (bit % 8));
      }
      zero_pages_sent_.fetch_add(zeros.size(), std::memory_order_relaxed);
    }
    const uint64_t bytes = data->size() + b->zero_bitmap().size();
    limiter_.Acquire(bytes);
    RETURN_IF_ERROR(Write(msg));
    if (phase != ferry::v1::PHASE_POSTCOPY) {
      absl::MutexLock lock(&mu_);
      pages_remaining_ -= std::min<uint64_t>(pages_remaining_, end - batch_start);
    }
    bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
    bytes_by_phase_[phase == ferry::v1::PHASE_PRECOPY         ? 0
                    : phase == ferry::v1::PHASE_STOP_AND_COPY ? 1
                                                              : 2]
        .fetch_add(bytes, std::memory_order_relaxed);
    data_pages_sent_.fetch_add(data->size() / ps, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

absl::Status SourceSession::Precopy(PolicyDecision* decision,
                                    std::vector<uint64_t>* pending) {
  SetPhase(SourcePhase::kPrecopy);
  // Track writes from before round 0 reads the first page, so a page that
  // changes while it is being sent is sent again.
  ASSIGN_OR_RETURN(dirty_log_, vmm::UffdDirtyLog::Start(&vm_->memory()));
  int64_t round_start = clock_->NowNanos();  // the dirty log's interval starts
  std::vector<uint64_t> all(num_pages_);
  for (uint64_t p = 0; p < num_pages_; ++p) all[p] = p;
  {
    absl::MutexLock lock(&mu_);
    pages_remaining_ = num_pages_;
  }
  RETURN_IF_ERROR(SendPages(all, ferry::v1::PHASE_PRECOPY, 0));
  std::fill(sent_.begin(), sent_.end(), true);
  SourceMessage end;
  end.mutable_round_end()->set_round(0);
  end.mutable_round_end()->set_pages(num_pages_);
  RETURN_IF_ERROR(Write(end));

  RoundFacts facts;
  facts.page_size = page_size_;
  for (int round = 1;; ++round) {
    std::vector<uint64_t> dirty;
    RETURN_IF_ERROR(dirty_log_->Collect(&dirty));
    const int64_t now = clock_->NowNanos();
    facts.rounds_done = round;
    facts.bandwidth_bps = bytes_sent_.load() / ((now - t_precopy_) / 1e9);
    TrackConvergence(&facts, dirty.size());
    {
      absl::MutexLock lock(&mu_);
      round_ = round;
      pages_remaining_ = dirty.size();
      dirty_pps_ = dirty.size() / ((now - round_start) / 1e9);
    }
    round_start = now;
    *decision = DecideAfterRound(config_.options, facts);
    if (decision->decision != Decision::kNextRound) {
      precopy_rounds_ = round;
      precopy_bytes_ = bytes_sent_.load();
      *pending = std::move(dirty);
      return absl::OkStatus();
    }
    RETURN_IF_ERROR(SendPages(dirty, ferry::v1::PHASE_PRECOPY, round));
    end.mutable_round_end()->set_round(round);
    end.mutable_round_end()->set_pages(dirty.size());
    RETURN_IF_ERROR(Write(end));
  }
}

absl::Status SourceSession::Switchover(const PolicyDecision& decision,
                                       std::vector<uint64_t> pending) {
  SetPhase(SourcePhase::kSwitchover);
  t_pause_ = clock_->NowNanos();
  RETURN_IF_ERROR(vm_->Pause());
  paused_ = true;
  // The final dirty set: pages written since the last scan.
  std::vector<uint64_t> final_set = std::move(pending);
  if (dirty_log_) {
    std::vector<uint64_t> last;
    RETURN_IF_ERROR(dirty_log_->Collect(&last));
    final_set.insert(final_set.end(), last.begin(), last.end());
    std::sort(final_set.begin(), final_set.end());
    final_set.erase(std::unique(final_set.begin(), final_set.end()), final_set.end());
    // The log is torn down after Resumed: unregistering 1 GiB of
    // write-protected memory takes milliseconds the pause does not need.
  }
  ASSIGN_OR_RETURN(std::vector<std::string> states, vm_->SaveVcpuStates());
  SourceMessage msg;
  ferry::v1::Switchover* sw = msg.mutable_switchover();
  for (std::string& s : states) sw->add_vcpu_states(std::move(s));

  if (decision.decision == Decision::kStopAndCopy) {
    RETURN_IF_ERROR(SendPages(final_set, ferry::v1::PHASE_STOP_AND_COPY, precopy_rounds_));
    sw->set_postcopy(false);
  } else {
    // Postcopy: everything not at the destination, or stale there, remains.
    const vmm::MemoryMap& map = vm_->memory().map();
    std::vector<bool> dirty(num_pages_, false);
    for (uint64_t p : final_set) dirty[p] = true;
    uint64_t left = 0;
    for (uint64_t p = 0; p < num_pages_; ++p) {
      if (!sent_[p] || dirty[p]) {
        remaining_[p / 64].fetch_or(1ull << (p % 64));
        ++left;
      }
      if (sent_[p] && dirty[p]) {  // the destination holds a stale copy
        AppendPage(sw->mutable_discard(), map.OffsetToGpa(p * page_size_), page_size_);
        ++pages_discarded_;
      }
    }
    pages_left_.store(left);
    sw->set_postcopy(left > 0);
    sw->set_pages_remaining(left);
    served_->EnableServing();  // the memory is final: serve demand requests
  }
  {
    absl::MutexLock lock(&mu_);
    if (cancel_requested_) return absl::CancelledError("the migration was cancelled");
    switchover_sent_ = true;  // from here on the destination may run the VM
  }
  RETURN_IF_ERROR(Write(msg));
  absl::MutexLock lock(&mu_);
  auto resumed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return resumed_ || !peer_error_.ok() || stream_done_;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&resumed), kResumeTimeout))
    return absl::DeadlineExceededError("the destination did not resume the VM in time");
  if (!peer_error_.ok()) return peer_error_;
  if (!resumed_) {
    mu_.Unlock();
    absl::Status broke = StreamBroke("switching over");
    mu_.Lock();
    return broke;
  }
  phase_ = SourcePhase::kPostcopy;
  mu_.Unlock();
  dirty_log_.reset();  // paused for good: nothing more to track
  mu_.Lock();
  return absl::OkStatus();
}

absl::Status SourceSession::EarlyDiscard(const std::vector<uint64_t>& pages) {
  const vmm::MemoryMap& map = vm_->memory().map();
  SourceMessage msg;
  for (uint64_t p : pages) {  // ascending (the dirty log's order)
    if (!sent_[p]) continue;
    sent_[p] = false;
    ++pages_discarded_;
    AppendPage(msg.mutable_discard()->mutable_runs(), map.OffsetToGpa(p * page_size_),
               page_size_);
  }
  if (!msg.has_discard()) return absl::OkStatus();
  const uint64_t seq = precopy_rounds_ + ++early_discards_;
  msg.mutable_discard()->set_round(seq);
  RETURN_IF_ERROR(Write(msg));
  // Wait until the destination has dropped them, so the Switchover message
  // does not queue behind that work while the source is paused.
  absl::MutexLock lock(&mu_);
  auto acked = [this, seq]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return round_acked_ >= seq || !peer_error_.ok() ||
           stream_done_ || cancel_requested_;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&acked), kAcceptTimeout))
    return absl::DeadlineExceededError("the destination did not confirm the discard in time");
  if (!peer_error_.ok()) return peer_error_;
  if (cancel_requested_) return absl::CancelledError("the migration was cancelled");
  if (stream_done_) return absl::UnavailableError("the migration stream broke");
  return absl::OkStatus();
}

absl::Status SourceSession::Postcopy() {
  // Demand requests (the page server thread) go before the bulk push.
  ScopedThreadNice background(10);
  std::vector<uint64_t> batch;
  batch.reserve(kBatchPages);
  uint64_t cursor = 0;
  uint64_t faults_seen = 0;
  while (pages_left_.load() > 0) {
    batch.clear();
    // Pages near recent faults first: the guest is likely to touch them next.
    const uint64_t faults = fault_count_.load();
    if (faults - faults_seen > kFaultRing) faults_seen = faults - kFaultRing;
    for (; faults_seen < faults && batch.size() < kBatchPages; ++faults_seen) {
      const uint64_t f = fault_ring_[faults_seen % kFaultRing].load();
      for (uint64_t p = f + 1; p < std::min(num_pages_, f + 1 + kFaultWindow); ++p)
        if (TakeRemaining(p)) batch.push_back(p);
    }
    // Then the rest, in order.
    for (uint64_t scanned = 0; batch.size() < kBatchPages && scanned < num_pages_;
         ++scanned) {
      if (TakeRemaining(cursor)) batch.push_back(cursor);
      cursor = (cursor + 1) % num_pages_;
    }
    if (batch.empty()) continue;  // the page server took the last ones
    RETURN_IF_ERROR(SendPages(batch, ferry::v1::PHASE_POSTCOPY, 0));
    pages_pushed_.fetch_add(batch.size(), std::memory_order_relaxed);
  }
  t_postcopy_end_ = clock_->NowNanos();
  SourceMessage complete;
  complete.mutable_complete()->set_pages_pushed(pages_pushed_.load());
  return Write(complete);
}

absl::Status SourceSession::AwaitCompleted() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return completed_ || !peer_error_.ok() || stream_done_;
  };
  mu_.Await(absl::Condition(&done));
  if (!peer_error_.ok()) return peer_error_;
  if (!completed_)
    return absl::UnavailableError(
        "the migration stream broke before the destination confirmed every page");
  return absl::OkStatus();
}

void SourceSession::FillReport() {
  {
    absl::MutexLock lock(&mu_);
    sampler_stop_ = true;
  }
  if (sampler_.joinable()) sampler_.join();
  MigrationReport& r = report_;
  const vmm::VmConfig& c = vm_->config();
  r.migration_id = id_;
  r.mode = MigrationModeName(config_.options.mode);
  r.fault_mode = vmm::FaultModeName(config_.options.fault_mode);
  r.memory_bytes = c.memory_bytes;
  r.vcpus = c.vcpus;
  r.workload = vmm::WorkloadKindName(c.workload.kind);
  r.total_ms = (t_end_ - t_start_) / 1e6;
  r.setup_ms = t_precopy_ ? (t_precopy_ - t_start_) / 1e6 : 0;
  r.precopy_ms = t_pause_ ? (t_pause_ - t_precopy_) / 1e6 : 0;
  r.precopy_rounds = precopy_rounds_;
  r.precopy_gbps = r.precopy_ms > 0 ? precopy_bytes_ * 8 / (r.precopy_ms / 1e3) / 1e9 : 0;
  r.switchover_reason = switchover_reason_;
  r.bytes_sent = bytes_sent_.load();
  r.pages_sent = data_pages_sent_.load() + pages_demand_.load();
  r.pages_resent = pages_resent_.load();
  r.zero_pages = zero_pages_sent_.load();
  r.pages_pushed = pages_pushed_.load();
  r.pages_demand = pages_demand_.load();
  r.pages_discarded = pages_discarded_;
  r.bytes_precopy = bytes_by_phase_[0].load();
  r.bytes_stop_and_copy = bytes_by_phase_[1].load();
  r.bytes_push = bytes_by_phase_[2].load();
  r.bytes_demand = bytes_by_phase_[3].load();
  absl::MutexLock lock(&mu_);
  if (t_resumed_) {
    r.downtime_ms = (t_resumed_ - t_pause_) / 1e6;
    r.switchover_ms = r.downtime_ms;
    r.dest_switchover_ms = dest_switchover_ns_ / 1e6;
    r.postcopy_ms = (t_end_ - t_resumed_) / 1e6;
  }
  const ferry::v1::DestinationStats& d = dest_stats_;
  r.faults = d.faults();
  r.fault_p50_us = d.fault_p50_us();
  r.fault_p99_us = d.fault_p99_us();
  r.fault_p999_us = d.fault_p999_us();
  r.fault_max_us = d.fault_max_us();
  r.max_vcpu_stall_ms = d.fault_max_us() / 1e3;
  r.fetch_rtt_p50_us = d.fetch_rtt_p50_us();
  r.fetch_rtt_p99_us = d.fetch_rtt_p99_us();
  r.ops_timeline = timeline_;
}

}  // namespace ferry::migration
