// The source session driven by a scripted destination (a fake of the
// SourceStream seam, with a fake dirty log and clock): every transition of
// the state machine, messages out of order, a stream that breaks, and
// Cancel() in each state. The VM and the page server are real.
#include "migration/source_session.h"

#include <atomic>
#include <deque>
#include <functional>
#include <optional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "base/fake_clock.h"
#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/send_path.h"
#include "migration/stream_auth.h"

namespace ferry::migration {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using ferry::v1::DestinationMessage;
using ferry::v1::SourceMessage;
using S = SourceState;

constexpr uint32_t kPage = 4096;
constexpr uint64_t kPages = 4096;  // 16 MiB

// What the session sent: a control message or a page frame.
constexpr int kFrameKind = 1000;  // beside SourceMessage::MsgCase values
struct Sent {
  SourceMessage control;
  bool frame = false;
  FramePhase phase = FramePhase::kPrecopy;
  int kind() const { return frame ? kFrameKind : control.msg_case(); }
};

// A destination behind the SourceStream seam. Each message the session
// writes goes to `on_message`, which may answer with Reply() or End(); the
// default answers as a well-behaved destination does.
class ScriptedDestination final : public SourceStream {
 public:
  using Handler = std::function<void(const Sent&, ScriptedDestination*)>;

  explicit ScriptedDestination(Handler on_message) : on_message_(std::move(on_message)) {}

  bool Write(const SourceMessage& m) override {
    Sent sent;
    sent.control = m;
    return Deliver(sent);
  }
  bool WriteFrame(EncodedFrame frame) override {
    // Checked by the real decoder (the frame must be one a destination
    // accepts), then handed on as its kind and phase.
    const std::string wire = frame.Flatten();
    const absl::Span<const uint8_t> span(reinterpret_cast<const uint8_t*>(wire.data()),
                                         wire.size());
    absl::StatusOr<DecodedFrame> d = DecodePageFrame(absl::MakeConstSpan(&span, 1), *map_);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return false;
    Sent sent;
    sent.frame = true;
    sent.phase = d->phase;
    return Deliver(sent);
  }
  void set_map(const vmm::MemoryMap* map) { map_ = map; }
  bool Read(DestinationMessage* m) override {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !replies_.empty() || cancelled_ || ended_;
    };
    mu_.Await(absl::Condition(&ready));
    if (replies_.empty() || cancelled_) return false;
    *m = replies_.front();
    replies_.pop_front();
    return true;
  }
  void WritesDone() override {}
  absl::Status Finish() override { return absl::OkStatus(); }
  void Cancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }

  void Reply(const DestinationMessage& m) {
    absl::MutexLock lock(&mu_);
    replies_.push_back(m);
  }
  // The destination closes the stream (after the replies queued so far).
  void End() {
    absl::MutexLock lock(&mu_);
    ended_ = true;
  }
  // Waits until the session cancels the stream (it does on a protocol
  // error), so a test knows its reply was judged before the session moved on.
  bool AwaitCancelled() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&cancelled_), absl::Seconds(10));
  }
  // What this destination received, kept apart so that it outlives the
  // stream (the session frees its streams when it ends).
  struct Received {
    absl::Mutex mu;
    std::vector<int> kinds ABSL_GUARDED_BY(mu);
    int Count(int kind) {
      absl::MutexLock lock(&mu);
      int n = 0;
      for (int k : kinds) n += k == kind;
      return n;
    }
  };
  std::shared_ptr<Received> received() const { return received_; }
  int Count(int kind) { return received_->Count(kind); }

  // What a well-behaved destination answers.
  static void Behave(const Sent& sent, ScriptedDestination* d) {
    if (sent.frame) return;
    const SourceMessage& m = sent.control;
    DestinationMessage r;
    switch (m.msg_case()) {
      case SourceMessage::kHello:
        r.mutable_accepted()->set_protocol_version(1);
        break;
      case SourceMessage::kRoundEnd:
        r.mutable_progress()->set_round_acked(m.round_end().round());
        break;
      case SourceMessage::kDiscard:
        r.mutable_progress()->set_round_acked(m.discard().round());
        break;
      case SourceMessage::kSwitchover:
        r.mutable_resumed()->set_switchover_ns(1000);
        break;
      case SourceMessage::kComplete:
        r.mutable_completed()->mutable_stats()->set_faults(3);
        break;
      default:
        return;
    }
    d->Reply(r);
  }

 private:
  bool Deliver(const Sent& sent) {
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_ || ended_) return false;
    }
    {
      absl::MutexLock lock(&received_->mu);
      received_->kinds.push_back(sent.kind());
    }
    on_message_(sent, this);  // without the lock: it may call Cancel() on the session
    return true;
  }

  const Handler on_message_;
  const vmm::MemoryMap* map_ = nullptr;
  absl::Mutex mu_;
  std::deque<DestinationMessage> replies_ ABSL_GUARDED_BY(mu_);
  const std::shared_ptr<Received> received_ = std::make_shared<Received>();
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

// Returns the scripted sets in turn, then empty sets.
class ScriptedDirtyLog final : public vmm::DirtyLog {
 public:
  explicit ScriptedDirtyLog(std::vector<std::vector<uint64_t>> sets)
      : sets_(sets.begin(), sets.end()) {}
  absl::Status Collect(std::vector<uint64_t>* pages) override {
    pages->clear();
    if (!sets_.empty()) {
      *pages = sets_.front();
      sets_.pop_front();
    }
    return absl::OkStatus();
  }
  const char* Name() const override { return "scripted"; }

 private:
  std::deque<std::vector<uint64_t>> sets_;
};

std::vector<uint64_t> Range(uint64_t first, uint64_t count) {
  std::vector<uint64_t> v(count);
  for (uint64_t i = 0; i < count; ++i) v[i] = first + i;
  return v;
}

class SourceSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vmm::VmConfig c;
    c.memory_bytes = kPages * kPage;
    c.vcpus = 1;
    c.workload.kind = vmm::WorkloadKind::kIdle;  // runs until stopped, writes nothing
    c.workload.zero_fraction = 0.5;
    ASSERT_OK_AND_ASSIGN(vm_, vmm::Vm::Create(c));
    ASSERT_OK(vm_->LoadInitialMemory());
    ASSERT_OK(vm_->Start());
    ASSERT_OK_AND_ASSIGN(page_server_, fetch::PageServer::Start("127.0.0.1:0"));
  }

  // A session against `handler`, dirty sets `dirty` and `mode`.
  std::unique_ptr<SourceSession> Session(ScriptedDestination::Handler handler,
                                         MigrationMode mode,
                                         std::vector<std::vector<uint64_t>> dirty = {},
                                         int max_rounds = 30) {
    // The link: each page batch takes 10 ms of the fake clock (about
    // 25 MB/s), so the policy sees a bandwidth that small dirty sets fit
    // and 3000 pages do not.
    ScriptedDestination::Handler wrapped =
        [this, handler = std::move(handler)](const Sent& m, ScriptedDestination* d) {
          if (m.frame) clock_.Advance(10'000'000);
          if (m.control.has_hello()) {
            std::copy(m.control.hello().fetch_secret().begin(),
                      m.control.hello().fetch_secret().end(), secret_.begin());
          }
          if (m.control.has_reconnect()) {
            reconnect_nonce_ = m.control.reconnect().nonce();
            if (impostor_ == Impostor::kSilent) {
              handler(m, d);  // it answers as it likes, without a Challenge
              return;
            }
            DestinationMessage c;
            c.mutable_challenge()->set_nonce(std::string(32, 'd'));
            c.mutable_challenge()->set_proof(
                impostor_ == Impostor::kWrongProof
                    ? std::string(32, 'x')
                    : DestinationProof(secret_, m.control.reconnect().migration_id(),
                                       reconnect_nonce_, std::string(32, 'd')));
            d->Reply(c);
            return;
          }
          if (m.control.has_stream_proof()) {
            EXPECT_TRUE(ProofMatches(m.control.stream_proof().proof(),
                                     SourceProof(secret_, session_->migration_id(),
                                                 reconnect_nonce_, std::string(32, 'd'))));
          }
          handler(m, d);
        };
    destination_ = new ScriptedDestination(wrapped);
    first_received_ = destination_->received();
    SourceConfig config;
    config.options.mode = mode;
    config.options.max_rounds = max_rounds;
    config.destination = destination_address_;
    config.page_server = page_server_.get();
    config.fetch_address = "127.0.0.1:1";
    config.clock = &clock_;
    config.frame_data = frame_data_;
    destination_->set_map(&vm_->memory().map());
    config.options.recovery_timeout_ms = 1000;
    // The first stream, then (postcopy recovery) a new scripted stream per
    // reconnection while reconnections_ allows, else a refused connection.
    config.open_stream = [this, wrapped]() -> absl::StatusOr<std::unique_ptr<SourceStream>> {
      if (opened_++ == 0) return std::unique_ptr<SourceStream>(destination_);
      if (!reconnections_) return absl::UnavailableError("scripted: connection refused");
      auto* d = new ScriptedDestination(wrapped);
      d->set_map(&vm_->memory().map());
      return std::unique_ptr<SourceStream>(d);
    };
    config.start_dirty_log =
        [dirty](vmm::Vm*) -> absl::StatusOr<std::unique_ptr<vmm::DirtyLog>> {
      return std::unique_ptr<vmm::DirtyLog>(new ScriptedDirtyLog(dirty));
    };
    auto session = std::make_unique<SourceSession>(vm_.get(), config);
    session_ = session.get();
    return session;
  }

  bool VmRunning() {
    for (vmm::VcpuRunState s : vm_->States())
      if (s != vmm::VcpuRunState::kRunning) return false;
    return true;
  }
  bool VmPaused() {
    for (vmm::VcpuRunState s : vm_->States())
      if (s != vmm::VcpuRunState::kPaused) return false;
    return true;
  }

  FakeClock clock_{1'000'000'000};
  std::unique_ptr<vmm::Vm> vm_;
  std::unique_ptr<fetch::PageServer> page_server_;
  // Owned by the session, which frees it when Run() ends: after Run(),
  // Count() (what the first stream received) instead.
  ScriptedDestination* destination_ = nullptr;
  std::shared_ptr<ScriptedDestination::Received> first_received_;
  int Count(int kind) { return first_received_->Count(kind); }
  int opened_ = 0;
  bool reconnections_ = true;
  std::string destination_address_ = "scripted";
  // Who answers a Reconnect: the destination (a Challenge proving the
  // secret, then the handler answers StreamProof), or an impostor that
  // answers without a Challenge (the handler sees Reconnect) or with a
  // wrong proof.
  enum class Impostor { kNone, kSilent, kWrongProof };
  Impostor impostor_ = Impostor::kNone;
  fetch::Secret secret_{};      // from Hello
  std::string reconnect_nonce_;  // the last Reconnect's
  SourceSession* session_ = nullptr;
  std::optional<FrameData> frame_data_;  // unset: as the host's probe chose
};

TEST_F(SourceSessionTest, PrecopyGoesThroughEveryStateToCompleted) {
  std::vector<S> seen;
  auto s = Session(
      [&](const Sent& m, ScriptedDestination* d) {
        seen.push_back(session_->state());
        ScriptedDestination::Behave(m, d);
      },
      MigrationMode::kPrecopy, {Range(0, 10)});
  ASSERT_OK(s->Run());
  EXPECT_EQ(s->state(), S::kCompleted);
  EXPECT_EQ(s->report().outcome(), "completed");
  EXPECT_EQ(s->report().faults(), 3u);
  // Hello while connecting, round 0 in precopy, round 1's 10 pages in
  // stop-and-copy while paused, Switchover once the
  // destination may run the VM, Complete while completing.
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), S::kConnecting);
  EXPECT_NE(std::find(seen.begin(), seen.end(), S::kPrecopy), seen.end());
  EXPECT_NE(std::find(seen.begin(), seen.end(), S::kPaused), seen.end());
  EXPECT_NE(std::find(seen.begin(), seen.end(), S::kSwitchingOver), seen.end());
  EXPECT_EQ(seen.back(), S::kCompleting);
  EXPECT_EQ(Count(SourceMessage::kRoundEnd), 1);  // round 1 fit the pause
  EXPECT_EQ(Count(SourceMessage::kSwitchover), 1);
  // Every page went out in round 0; the 10 dirty data pages went again.
  EXPECT_EQ(s->Progress().pages_transferred, kPages);
  EXPECT_GT(s->report().bytes_stop_and_copy(), 0u);
  EXPECT_FALSE(VmRunning());  // released: stopped
}

TEST_F(SourceSessionTest, PostcopyPushesEveryPageAfterResumed) {
  auto s = Session(&ScriptedDestination::Behave, MigrationMode::kPostcopy);
  ASSERT_OK(s->Run());
  EXPECT_EQ(s->state(), S::kCompleted);
  EXPECT_EQ(Count(SourceMessage::kRoundEnd), 0);
  const MigrationReport& r = s->report();
  EXPECT_EQ(r.pages_pushed(), kPages);
  EXPECT_EQ(r.pages_sent() + r.zero_pages(), kPages);
  EXPECT_GT(r.zero_pages(), 0u);
  EXPECT_EQ(r.switchover_reason(), "postcopy mode: switch over at once");
}

// How frames carried the pages is in the report: the host's probe's choice
// with its figures, or the configured way.
TEST_F(SourceSessionTest, TheReportSaysHowFramesCarriedThePages) {
  auto s = Session(&ScriptedDestination::Behave, MigrationMode::kPostcopy);
  ASSERT_OK(s->Run());
  EXPECT_EQ(s->report().send_path(), ChooseSendPath().reason);
  EXPECT_EQ(s->report().pages_pushed(), kPages);
}

// The way the probe did not choose, configured, carries every page too
// (so both ways run on every host).
TEST_F(SourceSessionTest, TheOtherSendPathPushesEveryPage) {
  const FrameData other =
      ChooseSendPath().data == FrameData::kCopy ? FrameData::kReference : FrameData::kCopy;
  frame_data_ = other;
  auto s = Session(&ScriptedDestination::Behave, MigrationMode::kPostcopy);
  ASSERT_OK(s->Run());
  EXPECT_EQ(s->report().send_path(), absl::StrCat(FrameDataName(other), " (as configured)"));
  const MigrationReport& r = s->report();
  EXPECT_EQ(r.pages_pushed(), kPages);
  EXPECT_EQ(r.pages_sent() + r.zero_pages(), kPages);
}

TEST_F(SourceSessionTest, HybridDiscardsStalePagesBeforeThePause) {
  // Round 1 finds 3000 pages dirty and max_rounds is 1: hybrid goes
  // postcopy, and drops the stale copies while the VM still runs.
  auto s = Session(&ScriptedDestination::Behave, MigrationMode::kHybrid,
                   {Range(0, 3000), Range(0, 5)}, /*max_rounds=*/1);
  ASSERT_OK(s->Run());
  EXPECT_EQ(Count(SourceMessage::kDiscard), 1);
  const MigrationReport& r = s->report();
  EXPECT_EQ(r.pages_discarded(), 3000u);  // 3000 early; the pause adds none (0-4 were dropped)
  EXPECT_EQ(r.pages_pushed(), 3000u);
}

TEST_F(SourceSessionTest, DowntimeIsMeasuredOnTheInjectedClock) {
  auto s = Session(
      [&](const Sent& m, ScriptedDestination* d) {
        if (m.control.has_switchover()) clock_.Advance(5'000'000);  // the destination takes 5 ms
        ScriptedDestination::Behave(m, d);
      },
      MigrationMode::kPostcopy);
  ASSERT_OK(s->Run());
  EXPECT_DOUBLE_EQ(s->report().downtime_ms(), 5.0);
}

TEST_F(SourceSessionTest, OutOfOrderMessagesAreRejectedNamingBoth) {
  struct Case {
    const char* name;
    int trigger;  // answer this message...
    std::function<void(DestinationMessage*)> reply;  // ...with this
    const char* error;
    bool switched;  // the failure comes after switchover
  } cases[] = {
      {"Resumed instead of Accepted", SourceMessage::kHello,
       [](DestinationMessage* m) { m->mutable_resumed(); },
       "sent Resumed while the source is connecting", false},
      {"Progress before Accepted", SourceMessage::kHello,
       [](DestinationMessage* m) { m->mutable_progress()->set_round_acked(0); },
       "sent Progress while the source is connecting", false},
      {"Completed during precopy", SourceMessage::kRoundEnd,
       [](DestinationMessage* m) { m->mutable_completed(); },
       "sent Completed while the source is", false},
      {"a second Accepted", SourceMessage::kRoundEnd,
       [](DestinationMessage* m) { m->mutable_accepted(); },
       "sent Accepted while the source is", false},
      {"an empty message", SourceMessage::kRoundEnd, [](DestinationMessage*) {},
       "empty or unknown", false},
      {"Completed before Complete", SourceMessage::kSwitchover,
       [](DestinationMessage* m) { m->mutable_completed(); },
       "sent Completed while the source is switching-over", true},
  };
  for (const Case& c : cases) {
    SetUp();
    auto s = Session(
        [&c](const Sent& m, ScriptedDestination* d) {
          if (m.kind() == c.trigger) {
            DestinationMessage r;
            c.reply(&r);
            d->Reply(r);
            EXPECT_TRUE(d->AwaitCancelled()) << c.name;
            return;
          }
          ScriptedDestination::Behave(m, d);
        },
        MigrationMode::kHybrid, {Range(0, 10)});
    absl::Status st = s->Run();
    EXPECT_FALSE(st.ok()) << c.name;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.error)) << c.name;
    EXPECT_EQ(s->state(), S::kFailed) << c.name;
    if (c.switched) {
      EXPECT_THAT(s->report().outcome(), HasSubstr("kept paused")) << c.name;
      EXPECT_TRUE(VmPaused()) << c.name;
    } else {
      EXPECT_THAT(s->report().outcome(), HasSubstr("keeps running")) << c.name;
      EXPECT_TRUE(VmRunning()) << c.name << ": before switchover the source VM runs on";
      EXPECT_EQ(Count(SourceMessage::kSwitchover), 0) << c.name;
    }
  }
}

TEST_F(SourceSessionTest, ADestinationErrorFailsTheMigration) {
  auto s = Session(
      [](const Sent& m, ScriptedDestination* d) {
        if (m.control.has_round_end()) {
          DestinationMessage r;
          r.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
          r.mutable_error()->set_message("out of memory");
          d->Reply(r);
          EXPECT_TRUE(d->AwaitCancelled());
          return;
        }
        ScriptedDestination::Behave(m, d);
      },
      MigrationMode::kPrecopy, {Range(0, 4000)});
  EXPECT_THAT(s->Run(), StatusIs(absl::StatusCode::kResourceExhausted,
                                 HasSubstr("destination: out of memory")));
  EXPECT_TRUE(VmRunning());
}

// An agent that runs VMs in processes of their own answers Hello with
// Redirect: the source sends Hello again to that port on the same host,
// and the migration goes on there.
TEST_F(SourceSessionTest, ARedirectIsFollowedOnceToThePortOnTheSameHost) {
  destination_address_ = "10.0.0.1:7070";
  int hellos = 0;
  auto s = Session(
      [&hellos](const Sent& m, ScriptedDestination* d) {
        if (m.control.has_hello() && hellos++ == 0) {
          DestinationMessage r;
          r.mutable_redirect()->set_port(7171);
          d->Reply(r);
          d->End();
          return;
        }
        ScriptedDestination::Behave(m, d);
      },
      MigrationMode::kPrecopy, {Range(0, 100)});
  EXPECT_OK(s->Run());
  EXPECT_EQ(hellos, 2);
  EXPECT_EQ(opened_, 2);
  EXPECT_EQ(s->Progress().destination, "10.0.0.1:7171");
}

TEST_F(SourceSessionTest, ASecondRedirectOrABadPortFailsTheMigration) {
  destination_address_ = "10.0.0.1:7070";
  auto again = Session(
      [](const Sent& m, ScriptedDestination* d) {
        if (!m.control.has_hello()) return;
        DestinationMessage r;
        r.mutable_redirect()->set_port(7171);
        d->Reply(r);
        d->End();
      },
      MigrationMode::kHybrid);
  EXPECT_THAT(again->Run(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                     HasSubstr("redirected the migration a second time")));
  EXPECT_TRUE(VmRunning());
}

TEST_F(SourceSessionTest, ARedirectToPortZeroFailsTheMigration) {
  destination_address_ = "10.0.0.1:7070";
  auto zero = Session(
      [](const Sent& m, ScriptedDestination* d) {
        if (!m.control.has_hello()) return;
        DestinationMessage r;
        r.mutable_redirect()->set_port(0);
        d->Reply(r);
      },
      MigrationMode::kHybrid);
  EXPECT_THAT(zero->Run(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("to port 0")));
  EXPECT_EQ(opened_, 1);
  EXPECT_TRUE(VmRunning());
}

TEST_F(SourceSessionTest, AStreamEndingBeforeAcceptFailsCleanly) {
  auto s = Session([](const Sent&, ScriptedDestination* d) { d->End(); },
                   MigrationMode::kHybrid);
  EXPECT_THAT(s->Run(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("broke")));
  EXPECT_EQ(s->state(), S::kFailed);
  EXPECT_TRUE(VmRunning());
}

// Postcopy recovery, scripted: the first stream ends once the source sent
// Switchover; the source reconnects, the destination's present bitmap says
// pages 0-9 are missing, and the source pushes exactly those again before
// it completes.
TEST_F(SourceSessionTest, AStreamEndingAfterSwitchoverIsRecovered) {
  std::atomic<int> pushed_after{0};
  std::atomic<bool> reconnected{false};
  auto s = Session(
      [&](const Sent& m, ScriptedDestination* d) {
        if (m.control.has_switchover()) {
          d->End();
          return;
        }
        if (m.control.has_stream_proof()) {  // the Reconnect proved itself
          EXPECT_EQ(session_->state(), S::kPostcopyPaused);
          DestinationMessage r;
          std::string present((kPages + 7) / 8, '\xff');
          present[0] = 0;
          present[1] = static_cast<char>(0xfc);  // pages 0-9 missing
          r.mutable_recovered()->set_present(present);
          d->Reply(r);
          reconnected = true;
          return;
        }
        if (m.frame && reconnected) ++pushed_after;
        ScriptedDestination::Behave(m, d);
      },
      MigrationMode::kPostcopy);
  ASSERT_OK(s->Run());
  EXPECT_EQ(s->report().outcome(), "completed");
  EXPECT_EQ(s->Progress().reconnects, 1u);
  EXPECT_GE(pushed_after.load(), 1) << "the missing pages went out again";
}

// A destination whose stream breaks once the source sent Switchover, and
// that answers a Reconnect (once proven: its StreamProof; from an impostor
// without a Challenge: the Reconnect itself) with `answer()` (none: it says
// nothing).
ScriptedDestination::Handler BreakAtSwitchover(
    std::function<std::optional<DestinationMessage>()> answer) {
  return [answer](const Sent& m, ScriptedDestination* d) {
    if (m.control.has_switchover()) {
      d->End();
      return;
    }
    if (m.control.has_stream_proof() || m.control.has_reconnect()) {
      if (std::optional<DestinationMessage> a = answer()) d->Reply(*a);
      return;
    }
    ScriptedDestination::Behave(m, d);
  };
}
ScriptedDestination::Handler BreakAtSwitchover(std::optional<DestinationMessage> answer) {
  return BreakAtSwitchover([answer] { return answer; });
}

DestinationMessage ReconnectError(absl::StatusCode code, const std::string& message,
                                  bool never_ran = false) {
  DestinationMessage r;
  r.mutable_error()->set_code(static_cast<int>(code));
  r.mutable_error()->set_message(message);
  r.mutable_error()->set_never_ran(never_ran);
  return r;
}

TEST_F(SourceSessionTest, AReconnectionRefusedKeepsTheSourcePaused) {
  auto s = Session(
      BreakAtSwitchover(ReconnectError(absl::StatusCode::kNotFound, "no migration here")),
      MigrationMode::kPostcopy);
  EXPECT_THAT(s->Run(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(s->report().outcome(), HasSubstr("kept paused with all of its memory"));
  EXPECT_TRUE(s->kept_paused());
  EXPECT_TRUE(VmPaused());
}

// A migration holds the source's memory map still from its start; a VM
// that keeps running after a failed migration may change its map again,
// one kept paused for a destination that may have run it may not.
TEST_F(SourceSessionTest, TheMemoryMapIsPinnedWhileTheVmIsTheSource) {
  const vmm::MemoryTransaction grow{{vmm::MemoryChange::Resize("ram", 2 * kPages * kPage)}};
  auto s = Session(
      [&](const Sent& m, ScriptedDestination* d) {
        if (m.control.has_hello())
          EXPECT_THAT(vm_->ChangeMemory(grow),
                      StatusIs(absl::StatusCode::kFailedPrecondition,
                               HasSubstr("while it is the source of a migration")));
        ScriptedDestination::Behave(m, d);
      },
      MigrationMode::kPrecopy);
  EXPECT_THAT(vm_->ChangeMemory(grow), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(s->Run());
  EXPECT_EQ(s->state(), S::kCompleted);
}

TEST_F(SourceSessionTest, AFailedMigrationThatResumesTheSourceUnpinsItsMap) {
  auto s = Session(BreakAtSwitchover([this]() -> std::optional<DestinationMessage> {
                     DestinationMessage e = ReconnectError(
                         absl::StatusCode::kAborted, "the switchover never completed here", true);
                     e.mutable_error()->set_never_ran_proof(
                         NeverRanProof(secret_, session_->migration_id(), reconnect_nonce_));
                     return e;
                   }),
                   MigrationMode::kPostcopy);
  EXPECT_FALSE(s->Run().ok());
  ASSERT_FALSE(s->kept_paused());
  EXPECT_OK(vm_->ChangeMemory({{vmm::MemoryChange::Resize("ram", 2 * kPages * kPage)}}).status());
}

// Kept paused, the VM is held by the agent (which refuses changes to it);
// the session itself no longer pins the map once it ended.
TEST_F(SourceSessionTest, ASessionThatEndedNoLongerPinsTheMap) {
  auto s =
      Session(BreakAtSwitchover(ReconnectError(absl::StatusCode::kNotFound, "no migration here")),
              MigrationMode::kPostcopy);
  EXPECT_FALSE(s->Run().ok());
  ASSERT_TRUE(s->kept_paused());
  EXPECT_OK(vm_->ChangeMemory({{vmm::MemoryChange::Resize("ram", 2 * kPages * kPage)}}).status());
}

// The destination says it never ran the VM (Switchover never reached it):
// the source resumes its own, and the migration fails cleanly.
TEST_F(SourceSessionTest, ADestinationThatNeverRanTheVmLetsTheSourceResume) {
  auto s = Session(BreakAtSwitchover([this]() -> std::optional<DestinationMessage> {
                     DestinationMessage e =
                         ReconnectError(absl::StatusCode::kAborted,
                                        "the switchover never completed here", true);
                     e.mutable_error()->set_never_ran_proof(NeverRanProof(
                         secret_, session_->migration_id(), reconnect_nonce_));
                     return e;
                   }),
                   MigrationMode::kPostcopy);
  EXPECT_FALSE(s->Run().ok());
  EXPECT_THAT(s->report().outcome(), HasSubstr("the source VM keeps running"));
  EXPECT_FALSE(s->kept_paused());
  EXPECT_TRUE(VmRunning());
}

// Split brain: only the destination this migration switched over to may say
// it never ran the VM. An impostor's never_ran (no Challenge; a wrong
// Challenge; a proven stream with a wrong never_ran proof), or its
// Completed, leaves the VM paused, and the recovery times out holding it.
TEST_F(SourceSessionTest, AnUnprovenNeverRanOrCompletedKeepsTheVmPaused) {
  struct Case {
    const char* name;
    Impostor impostor;
    bool completed;  // the answer is Completed, else never_ran
  } cases[] = {{"never_ran without a Challenge", Impostor::kSilent, false},
               {"never_ran after a wrong Challenge", Impostor::kWrongProof, false},
               {"never_ran with a wrong proof after a right Challenge", Impostor::kNone, false},
               {"Completed without a Challenge", Impostor::kSilent, true}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    SetUp();
    opened_ = 0;
    impostor_ = c.impostor;
    const bool completed = c.completed;
    auto s = Session(BreakAtSwitchover([completed]() -> std::optional<DestinationMessage> {
                       if (completed) {
                         DestinationMessage m;
                         m.mutable_completed()->mutable_stats()->set_faults(1);
                         return m;
                       }
                       DestinationMessage e = ReconnectError(absl::StatusCode::kAborted,
                                                             "I never ran it", true);
                       e.mutable_error()->set_never_ran_proof(std::string(32, 'p'));
                       return e;
                     }),
                     MigrationMode::kPostcopy);
    const absl::Status st = s->Run();
    EXPECT_FALSE(st.ok());
    EXPECT_TRUE(s->kept_paused()) << st;
    EXPECT_TRUE(VmPaused());
    EXPECT_THAT(s->report().outcome(), HasSubstr("kept paused with all of its memory"));
    s.reset();
    vm_.reset();
  }
}

// No reconnection succeeds within the recovery timeout: a clear failure,
// and the source keeps its paused VM.
TEST_F(SourceSessionTest, TheRecoveryTimeoutEndsInAFailureThatKeepsTheMemory) {
  reconnections_ = false;
  auto s = Session(
      BreakAtSwitchover(std::nullopt),
      MigrationMode::kPostcopy);
  absl::Status st = s->Run();
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(st.message(), HasSubstr("recovery timeout"));
  EXPECT_THAT(s->report().outcome(), HasSubstr("kept paused with all of its memory"));
  EXPECT_TRUE(VmPaused());
}

// Cancel() from inside the destination's handler, when the session is in
// the state that sends `trigger`.
struct CancelCase {
  const char* name;
  MigrationMode mode;
  int trigger;
  S state;       // the session's state when `trigger` is sent
  bool allowed;  // Cancel() succeeds
};

class SourceSessionCancelTest : public SourceSessionTest,
                                public ::testing::WithParamInterface<CancelCase> {};

TEST_P(SourceSessionCancelTest, CancelInEachState) {
  const CancelCase& c = GetParam();
  absl::Status cancel = absl::UnknownError("not called");
  S state_at_cancel = S::kFailed;
  auto s = Session(
      [&](const Sent& m, ScriptedDestination* d) {
        if (m.kind() == c.trigger && cancel.code() == absl::StatusCode::kUnknown) {
          state_at_cancel = session_->state();
          cancel = session_->Cancel();
        }
        ScriptedDestination::Behave(m, d);
      },
      c.mode, {Range(0, 3000), Range(0, 5)}, /*max_rounds=*/1);
  const absl::Status run = s->Run();
  EXPECT_EQ(state_at_cancel, c.state);
  if (c.allowed) {
    EXPECT_OK(cancel);
    EXPECT_THAT(run, StatusIs(absl::StatusCode::kCancelled));
    EXPECT_EQ(s->state(), S::kCancelled);
    EXPECT_THAT(s->report().outcome(), HasSubstr("cancelled"));
    EXPECT_TRUE(VmRunning()) << "a cancelled migration leaves the source VM running";
  } else {
    EXPECT_THAT(cancel, StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("can no longer be cancelled")));
    EXPECT_OK(run);
    EXPECT_EQ(s->state(), S::kCompleted);
  }
  EXPECT_THAT(s->Cancel(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

INSTANTIATE_TEST_SUITE_P(
    States, SourceSessionCancelTest,
    ::testing::Values(
        CancelCase{"connecting", MigrationMode::kHybrid, SourceMessage::kHello,
                   S::kConnecting, true},
        CancelCase{"precopy", MigrationMode::kHybrid, SourceMessage::kRoundEnd, S::kPrecopy,
                   true},
        CancelCase{"discarding", MigrationMode::kHybrid, SourceMessage::kDiscard,
                   S::kDiscarding, true},
        CancelCase{"precopy_round0", MigrationMode::kPrecopy, kFrameKind,
                   S::kPrecopy, true},
        CancelCase{"switching_over", MigrationMode::kHybrid, SourceMessage::kSwitchover,
                   S::kSwitchingOver, false},
        CancelCase{"completing", MigrationMode::kPostcopy, SourceMessage::kComplete,
                   S::kCompleting, false}),
    [](const ::testing::TestParamInfo<CancelCase>& info) { return info.param.name; });

TEST_F(SourceSessionTest, CancelWhilePausedResumesTheSourceVm) {
  // Precopy with a dirty set that fits the downtime target: the session
  // pauses and sends the rest as STOP_AND_COPY; cancel then.
  absl::Status cancel = absl::UnknownError("not called");
  S state_at_cancel = S::kFailed;
  auto s = Session(
      [&](const Sent& m, ScriptedDestination* d) {
        if (m.frame && m.phase == FramePhase::kStopAndCopy &&
            cancel.code() == absl::StatusCode::kUnknown) {
          state_at_cancel = session_->state();
          cancel = session_->Cancel();
        }
        ScriptedDestination::Behave(m, d);
      },
      MigrationMode::kPrecopy, {Range(0, 10)});
  EXPECT_THAT(s->Run(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(state_at_cancel, S::kPaused);
  EXPECT_OK(cancel);
  EXPECT_EQ(Count(SourceMessage::kSwitchover), 0);
  EXPECT_TRUE(VmRunning()) << "the session paused the VM; cancelling resumes it";
}

TEST_F(SourceSessionTest, CancelAfterCompletionIsRefused) {
  auto s = Session(&ScriptedDestination::Behave, MigrationMode::kPostcopy);
  ASSERT_OK(s->Run());
  EXPECT_THAT(s->Cancel(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("can no longer be cancelled")));
}

}  // namespace
}  // namespace ferry::migration
