// The destination's side of the protocol, driven message by message as the
// transport delivers them (cut into pieces anywhere), with a recording sink
// in place of the gRPC reactor. Bad input and
// messages out of order get a clear error, sent to the source, and change no
// guest memory.
#include "migration/destination_session.h"

#include <unistd.h>

#include <deque>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/eventually.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/convert.h"
#include "migration/fetch/page_server.h"
#include "migration/preflight.h"
#include "migration/stream_auth.h"
#include "tests/migration/frame_builder.h"

namespace ferry::migration {
namespace {

using ::ferry::migration::testing::RawFrame;
using ::ferry::migration::testing::Split;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using ferry::v1::DestinationMessage;
using ferry::v1::SourceMessage;

constexpr uint32_t kPage = 4096;

// Records what the session sends back. The session's threads (progress,
// after switchover) send while the test reads: the test reads copies, taken
// under mu_.
class RecordingSink final : public DestinationSink {
 public:
  bool Send(const DestinationMessage& m) override {
    absl::MutexLock lock(&mu_);
    written_.push_back(m);
    return true;
  }
  void Finish(const absl::Status& s) override {
    absl::MutexLock lock(&mu_);
    ++finished_;
    status_ = s;
  }
  std::vector<DestinationMessage> written() const {
    absl::MutexLock lock(&mu_);
    return written_;
  }
  int finished() const {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  absl::Status status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<DestinationMessage> written_ ABSL_GUARDED_BY(mu_);
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// A control frame as the source sends it.
std::string Control(const SourceMessage& m) {
  return std::string(1, static_cast<char>(kControlFrame)) + m.SerializeAsString();
}

vmm::VmConfig Vm() {
  vmm::VmConfig c;
  c.memory_bytes = 1 << 20;  // 256 pages
  c.vcpus = 1;
  c.workload.kind = vmm::WorkloadKind::kSequential;
  return c;
}

fetch::Secret TestSecret() {
  fetch::Secret secret;
  secret.fill('s');
  return secret;
}

// A page server that knows migration m1: every Hello that may lead to
// postcopy opens its fetch connections (through the handshake) before
// switchover. Shared by the tests; it serves a VM's worth of zeros.
const std::string& FetchAddress() {
  static const std::string address = [] {
    vmm::VmConfig c = Vm();
    auto memory =
        vmm::GuestMemory::Create(*vmm::MemoryMap::ForSize(c.memory_bytes, kPage)).value();
    auto server = fetch::PageServer::Start("127.0.0.1:0").value();
    server->Register(
        std::make_shared<fetch::ServedMigration>("m1", TestSecret(), memory.get(), nullptr));
    const std::string a = absl::StrCat("127.0.0.1:", server->port());
    memory.release();  // both live as long as the test binary
    server.release();
    return a;
  }();
  return address;
}

SourceMessage HelloMessage() {
  SourceMessage m;
  ferry::v1::Hello* h = m.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_migration_id("m1");
  h->set_auth_token("token");
  vmm::VmConfig c = Vm();
  *h->mutable_layout() = ToLayout(c, *vmm::MemoryMap::ForSize(c.memory_bytes, kPage));
  h->set_mode(ferry::v1::MIGRATION_MODE_HYBRID);
  h->set_fault_mode(ferry::v1::FAULT_MODE_EXIT);
  h->set_fetch_address(FetchAddress());
  h->set_fetch_secret(std::string(32, 's'));
  return m;
}

std::string Hello() { return Control(HelloMessage()); }

RawFrame PagesFrame(uint64_t gpa, uint32_t count, char fill,
                    FramePhase phase = FramePhase::kPrecopy) {
  RawFrame f = RawFrame::Data(gpa / kPage, count, fill);
  f.phase = static_cast<uint8_t>(phase);
  return f;
}

std::string Pages(uint64_t gpa, uint32_t count, char fill,
                  FramePhase phase = FramePhase::kPrecopy) {
  return PagesFrame(gpa, count, fill, phase).Bytes();
}

struct Outcome {
  absl::Status status;
  std::vector<DestinationMessage> written;
};

// Plays `script` (wire messages) to a session, each cut into pieces of
// `piece` bytes; the stream then ends.
Outcome Play(std::vector<std::string> script, DestinationOptions options = {},
             size_t piece = 1000) {
  options.expected_token = options.expected_token.empty() ? "token" : options.expected_token;
  RecordingSink sink;
  {
    DestinationSession session(options, &sink);
    bool more = true;
    for (const std::string& m : script) {
      if (!(more = session.OnReceive(Split(m, piece)))) break;
    }
    if (more) session.OnStreamLost();
    Outcome o;
    o.status = session.Wait();
    EXPECT_EQ(sink.finished(), 1) << "the sink is finished exactly once";
    EXPECT_EQ(sink.status(), o.status);
    o.written = sink.written();
    return o;
  }
}

std::string LastError(const Outcome& o) {
  for (auto it = o.written.rbegin(); it != o.written.rend(); ++it)
    if (it->has_error()) return it->error().message();
  return "";
}

TEST(DestinationProtocol, HelloIsAccepted) {
  Outcome o = Play({Hello()});
  ASSERT_FALSE(o.written.empty());
  EXPECT_TRUE(o.written[0].has_accepted());
  EXPECT_EQ(o.written[0].accepted().protocol_version(), kProtocolVersion);
  EXPECT_TRUE(o.written[0].accepted().push_on_data_streams())
      << "a source pushes over data streams only to a destination that says it takes them";
  // The stream then ended early: a failure, and the destination is empty.
  EXPECT_THAT(o.status, StatusIs(absl::StatusCode::kUnavailable,
                                 HasSubstr("closed the migration stream")));
}

TEST(DestinationProtocol, WrongVersionIsRefused) {
  SourceMessage h = HelloMessage();
  h.mutable_hello()->set_protocol_version(1);
  Outcome o = Play({Control(h)});
  EXPECT_THAT(o.status, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 1")));
  EXPECT_THAT(LastError(o), HasSubstr("version 1"));
}

TEST(DestinationProtocol, WrongTokenIsRefused) {
  SourceMessage h = HelloMessage();
  h.mutable_hello()->set_auth_token("tokem");
  EXPECT_THAT(Play({Control(h)}).status,
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("wrong migration token")));
}

TEST(DestinationProtocol, UnspecifiedEnumsAndBadLayoutsAreRefused) {
  SourceMessage h = HelloMessage();
  h.mutable_hello()->set_mode(ferry::v1::MIGRATION_MODE_UNSPECIFIED);
  EXPECT_THAT(Play({Control(h)}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("migration mode 0")));
  h = HelloMessage();
  h.mutable_hello()->set_fault_mode(ferry::v1::FAULT_MODE_UNSPECIFIED);
  EXPECT_THAT(Play({Control(h)}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("fault mode 0")));
  h = HelloMessage();
  h.mutable_hello()->mutable_layout()->mutable_workload()->set_kind(
      ferry::v1::WORKLOAD_KIND_UNSPECIFIED);
  EXPECT_THAT(Play({Control(h)}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("workload kind")));
  h = HelloMessage();
  h.mutable_hello()->mutable_layout()->mutable_slots(0)->set_gpa(4096);
  EXPECT_THAT(Play({Control(h)}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("do not match")));
  h = HelloMessage();
  h.mutable_hello()->set_fetch_secret("short");
  EXPECT_THAT(Play({Control(h)}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("fetch secret")));
  h = HelloMessage();
  h.mutable_hello()->set_fetch_address("no-port");
  EXPECT_THAT(Play({Control(h)}).status, StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DestinationProtocol, MessagesOutOfOrderAreRefusedNamingBoth) {
  EXPECT_THAT(Play({Pages(0, 1, 'a')}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("a page frame is not expected while the destination is "
                                 "accepting")));
  EXPECT_THAT(Play({Hello(), Hello()}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Hello")));
  SourceMessage complete;
  complete.mutable_complete();
  EXPECT_THAT(Play({Hello(), Control(complete)}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("Complete is not expected while the destination is "
                                 "receiving precopy")));
  EXPECT_THAT(Play({Hello(), Pages(0, 1, 'a', FramePhase::kPostcopy)}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("a postcopy page frame is not expected")));
  SourceMessage empty;
  EXPECT_THAT(Play({Hello(), Control(empty)}).status,
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Play({Hello(), std::string("\x01\xff\xff", 3)}).status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not parse")));
  EXPECT_THAT(Play({Hello(), std::string("\x07", 1)}).status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown frame kind 7")));
  EXPECT_THAT(Play({Hello(), std::string()}).status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty message")));
}

TEST(DestinationProtocol, MalformedFramesEndTheMigrationAndKeepNothing) {
  // Each frame is good in its first run and bad later; the whole frame is
  // validated before any page of it is installed.
  RawFrame short_data = PagesFrame(0, 2, 'a');
  short_data.runs[0].data.resize(kPage + 100);
  RawFrame out_of_range = PagesFrame(0, 1, 'a');
  out_of_range.runs.push_back({256 * kPage, 1, std::string(kPage, 'b')});
  RawFrame unaligned = PagesFrame(0, 1, 'a');
  unaligned.runs[0].gpa = 100;
  RawFrame zero_out_of_range = PagesFrame(0, 1, 'a');
  zero_out_of_range.zero_base_gpa = 255 * kPage;
  zero_out_of_range.zero_bitmap = std::string(1, '\x03');
  RawFrame header_disagrees = PagesFrame(0, 1, 'a');
  header_disagrees.run_count_delta = 1;
  struct Case {
    const char* name;
    RawFrame frame;
    absl::StatusCode code;
    const char* error;
  } cases[] = {
      {"data shorter than the runs", short_data, absl::StatusCode::kInvalidArgument,
       "truncated"},
      {"a run outside RAM", out_of_range, absl::StatusCode::kOutOfRange,
       "not inside one RAM slot"},
      {"an unaligned run", unaligned, absl::StatusCode::kInvalidArgument,
       "not page aligned"},
      {"zero bits outside RAM", zero_out_of_range, absl::StatusCode::kOutOfRange,
       "not inside one RAM slot"},
      {"a header naming a run the frame lacks", header_disagrees,
       absl::StatusCode::kInvalidArgument, "header of run 2 of 2 is missing"},
  };
  for (const Case& c : cases) {
    DestinationOptions options;
    options.expected_token = "token";
    RecordingSink sink;
    DestinationSession session(options, &sink);
    ASSERT_TRUE(session.OnReceive(Split(Hello(), 1 << 20))) << c.name;
    ASSERT_NE(session.vm(), nullptr);
    const std::string wire = c.frame.Bytes();
    EXPECT_FALSE(session.OnReceive(Split(wire, 777))) << c.name;
    EXPECT_THAT(session.Wait(), StatusIs(c.code, HasSubstr(c.error))) << c.name;
    bool error_sent = false;
    for (const auto& m : sink.written()) error_sent |= m.has_error();
    EXPECT_TRUE(error_sent) << c.name << ": the source must be told why";
    EXPECT_EQ(session.state(), DestinationState::kFailed) << c.name;
    EXPECT_EQ(session.vm(), nullptr) << c.name << ": a failed destination keeps nothing";
  }
}

// Installs the frames of `script` after Hello and returns the session's VM
// (still receiving precopy) for inspection.
class Receiving : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.expected_token = "token";
    session_ = std::make_unique<DestinationSession>(options_, &sink_);
    ASSERT_TRUE(session_->OnReceive(Split(Hello(), 100)));
  }
  void TearDown() override {
    session_->OnStreamLost();
    session_.reset();
  }
  void Receive(const std::string& wire, size_t piece = 1000) {
    ASSERT_TRUE(session_->OnReceive(Split(wire, piece)));
  }
  DestinationOptions options_;
  RecordingSink sink_;
  std::unique_ptr<DestinationSession> session_;
};

TEST_F(Receiving, GoodFramesInstallAndResendsOverwrite) {
  RawFrame zeros;
  zeros.zero_base_gpa = 10 * kPage;
  zeros.zero_bitmap = std::string(1, '\x05');  // pages 10 and 12
  SourceMessage round_end;
  round_end.mutable_round_end()->set_round(0);
  Receive(Pages(0, 4, 'a'), 333);     // pages split across pieces
  Receive(zeros.Bytes());
  Receive(Pages(kPage, 1, 'b'), 4096);
  Receive(Control(round_end));
  bool acked = false;
  for (const auto& m : sink_.written())
    if (m.has_progress() && m.progress().round_acked() == 0) {
      acked = true;
      EXPECT_EQ(m.progress().pages_missing(), 256u - 6u);
    }
  EXPECT_TRUE(acked);
  const uint8_t* mem = session_->vm()->memory().host();
  EXPECT_EQ(mem[0], 'a');
  EXPECT_EQ(mem[kPage], 'b') << "the resent page overwrote the first copy";
  EXPECT_EQ(mem[2 * kPage + 100], 'a');
  EXPECT_EQ(mem[4 * kPage - 1], 'a');
}

TEST_F(Receiving, ZeroPagesStayUnallocated) {
  // Half the pages hold data, half are zero: only the data half is
  // allocated, the zero half is known zero (not missing).
  RawFrame f;
  std::string bitmap(128 / 8, '\0');
  for (uint64_t p = 0; p < 128; ++p) bitmap[p / 8] |= static_cast<char>(1 << (p % 8));
  f.zero_base_gpa = 0;
  f.zero_bitmap = bitmap;  // pages 0..127
  f.runs.push_back({128 * kPage, 128, std::string(128 * kPage, 'd')});
  Receive(f.Bytes(), 65536);
  vmm::Vm* vm = session_->vm();
  EXPECT_EQ(vm->pager()->missing_pages(), 0u);
  EXPECT_EQ(vm->pager()->known_zero_pages(), 128u);
  ASSERT_OK_AND_ASSIGN(uint64_t allocated, vm->memory().AllocatedBytes());
  EXPECT_EQ(allocated, 128 * kPage) << "zero pages must not be allocated";
  // A page that held data and is resent as zero is freed again.
  RawFrame z;
  z.zero_base_gpa = 128 * kPage;
  z.zero_bitmap = std::string(1, '\x01');
  Receive(z.Bytes());
  ASSERT_OK_AND_ASSIGN(allocated, vm->memory().AllocatedBytes());
  EXPECT_EQ(allocated, 127 * kPage);
  EXPECT_TRUE(vm->pager()->IsKnownZero(128));
  EXPECT_FALSE(vm->pager()->IsPresent(128));
}

}  // namespace
}  // namespace ferry::migration

namespace ferry::migration {
namespace {

TEST(DestinationDataStreams, JoinRulesAndFramesFromAnotherStream) {
  DestinationOptions options;
  options.expected_token = "token";
  RecordingSink sink;
  DestinationSession session(options, &sink);
  ferry::v1::Join join;
  join.set_migration_id("m1");
  join.set_auth_token("token");
  join.set_index(1);
  EXPECT_THAT(session.Attach(join), StatusIs(absl::StatusCode::kFailedPrecondition,
                                             HasSubstr("while the destination is accepting")));
  SourceMessage hello = HelloMessage();
  hello.mutable_hello()->set_data_streams(2);
  ASSERT_TRUE(session.OnReceive(Split(Control(hello), 1 << 20)));
  join.set_auth_token("tokem");
  EXPECT_THAT(session.Attach(join), StatusIs(absl::StatusCode::kUnauthenticated));
  join.set_auth_token("token");
  join.set_index(3);
  EXPECT_THAT(session.Attach(join), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("announced 2 data streams")));
  join.set_index(1);
  EXPECT_OK(session.Attach(join));
  EXPECT_THAT(session.Attach(join), StatusIs(absl::StatusCode::kAlreadyExists));
  // A frame on the data stream installs like one on the main stream.
  std::vector<uint8_t> bounce;
  const std::string good = RawFrame::Data(5, 2, 'q').Bytes();
  EXPECT_OK(session.OnDataFrame(Split(good, 3000), &bounce));
  EXPECT_TRUE(session.vm()->pager()->IsPresent(5));
  EXPECT_EQ(session.vm()->memory().host()[6 * kPage], 'q');
  // A bad one ends the whole migration, with the reason sent on the main
  // stream, and the destination keeps nothing.
  EXPECT_THAT(session.OnDataFrame(Split(RawFrame::Data(255, 2, 'q').Bytes(), 5000), &bounce),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(session.Wait(), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(session.vm(), nullptr);
  bool error_sent = false;
  for (const auto& m : sink.written()) error_sent |= m.has_error();
  EXPECT_TRUE(error_sent);
  // Later frames are refused.
  EXPECT_THAT(session.OnDataFrame(Split(good, 3000), &bounce),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(DestinationDataStreams, TooManyDataStreamsAreRefused) {
  SourceMessage hello = HelloMessage();
  hello.mutable_hello()->set_data_streams(kMaxDataStreams + 1);
  EXPECT_THAT(Play({Control(hello)}).status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("data streams")));
}

}  // namespace
}  // namespace ferry::migration

namespace ferry::migration {
namespace {

TEST(DestinationCompletion, AVcpuThatFailedIsNeverACompletedMigration) {
  // Postcopy with a fetch channel whose server stops knowing the migration
  // after the handshake (a refusal, not a broken channel, so it is not
  // retried): the vCPU's first fault fails its fetch and the vCPU fails.
  // The source then pushes every page and says Complete: nothing is
  // missing, but the VM cannot run its guest, so the migration fails and
  // the destination keeps nothing.
  // The memory first: it outlives the server, whose thread may still be
  // serving from it (a refused fetch) until ~PageServer joins it.
  ASSERT_OK_AND_ASSIGN(auto served_memory,
                       vmm::GuestMemory::Create(*vmm::MemoryMap::ForSize(Vm().memory_bytes, kPage)));
  ASSERT_OK_AND_ASSIGN(auto page_server, fetch::PageServer::Start("127.0.0.1:0"));
  page_server->Register(std::make_shared<fetch::ServedMigration>("m1", TestSecret(),
                                                                 served_memory.get(), nullptr));
  DestinationOptions options;
  options.expected_token = "token";
  std::unique_ptr<vmm::Vm> adopted;
  options.adopt = [&](const std::string&, const std::string&, std::unique_ptr<vmm::Vm> vm) {
    adopted = std::move(vm);
  };
  RecordingSink sink;
  DestinationSession session(options, &sink);
  SourceMessage hello = HelloMessage();
  hello.mutable_hello()->set_fetch_address(absl::StrCat("127.0.0.1:", page_server->port()));
  ASSERT_TRUE(session.OnReceive(Split(Control(hello), 1 << 20)));
  page_server->Unregister("m1");  // connected; from now on every fetch is refused
  ASSERT_OK_AND_ASSIGN(auto source, vmm::Vm::Create(Vm()));
  ASSERT_OK(source->LoadInitialMemory());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> states, source->SaveVcpuStates());
  SourceMessage sw;
  for (std::string& s : states) sw.mutable_switchover()->add_vcpu_states(s);
  sw.mutable_switchover()->set_postcopy(true);
  sw.mutable_switchover()->set_pages_remaining(256);
  ASSERT_TRUE(session.OnReceive(Split(Control(sw), 1 << 20)));
  ASSERT_TRUE(Eventually([&] {
    return session.vm()->States()[0] == vmm::VcpuRunState::kFailed;
  })) << "the vCPU should fail on its first fetch";
  std::vector<uint64_t> all(256);
  for (uint64_t p = 0; p < 256; ++p) all[p] = p;
  EncodedFrame push = EncodePageFrame(source->memory(), all, FramePhase::kPostcopy, 0,
                                      [](uint64_t, bool) {});
  const std::string wire = push.Flatten();
  ASSERT_TRUE(session.OnReceive(Split(wire, 4096)));
  SourceMessage complete;
  complete.mutable_complete()->set_pages_pushed(256);
  EXPECT_FALSE(session.OnReceive(Split(Control(complete), 100)));
  EXPECT_THAT(session.Wait(), StatusIs(absl::StatusCode::kNotFound,
                                       HasSubstr("the VM cannot run here: vcpu 0")));
  EXPECT_EQ(adopted, nullptr) << "a VM that cannot run is not handed over";
  bool completed = false, error = false;
  for (const auto& m : sink.written()) {
    completed |= m.has_completed();
    error |= m.has_error();
  }
  EXPECT_FALSE(completed);
  EXPECT_TRUE(error);
}

// Postcopy recovery at the destination: a lost stream after switchover
// pauses the migration (the VM runs on); a Reconnect with the wrong token
// is refused; the right one gets the present bitmap and the migration
// completes on the new stream; the old stream is ignored from then on; a
// late Reconnect after completion is told Completed.
class DestinationRecovery : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(page_server_, fetch::PageServer::Start("127.0.0.1:0"));
    ASSERT_OK_AND_ASSIGN(source_, vmm::Vm::Create(Vm()));
    ASSERT_OK(source_->LoadInitialMemory());
    served_ = std::make_shared<fetch::ServedMigration>("m1", TestSecret(), &source_->memory(),
                                                       nullptr);
    served_->EnableServing();
    page_server_->Register(served_);
  }
  void TearDown() override { page_server_->Unregister("m1"); }

  // Hello and Switchover (postcopy) on `sink`; with `data_streams`, data
  // stream 1 joins before the switchover.
  void SwitchOver(DestinationSession& session, int data_streams = 0) {
    SourceMessage hello = HelloMessage();
    hello.mutable_hello()->set_fetch_address(absl::StrCat("127.0.0.1:", page_server_->port()));
    hello.mutable_hello()->set_data_streams(data_streams);
    ASSERT_TRUE(session.OnReceive(Split(Control(hello), 1 << 20)));
    if (data_streams > 0) {
      ferry::v1::Join join;
      join.set_migration_id(hello.hello().migration_id());
      join.set_auth_token("token");
      join.set_index(1);
      ASSERT_OK(session.Attach(join));
    }
    ASSERT_OK_AND_ASSIGN(std::vector<std::string> states, source_->SaveVcpuStates());
    SourceMessage sw;
    for (std::string& st : states) sw.mutable_switchover()->add_vcpu_states(st);
    sw.mutable_switchover()->set_postcopy(true);
    sw.mutable_switchover()->set_pages_remaining(256);
    ASSERT_TRUE(session.OnReceive(Split(Control(sw), 1 << 20)));
  }

  ferry::v1::Reconnect ReconnectMessage(const std::string& token) {
    ferry::v1::Reconnect r;
    r.set_protocol_version(kProtocolVersion);
    r.set_migration_id("m1");
    r.set_auth_token(token);
    r.set_attempt(1);
    r.set_nonce(std::string(32, 'n'));
    return r;
  }

  std::unique_ptr<fetch::PageServer> page_server_;
  std::unique_ptr<vmm::Vm> source_;
  std::shared_ptr<fetch::ServedMigration> served_;
};

TEST_F(DestinationRecovery, ALostStreamPausesAndAReconnectResumes) {
  DestinationOptions options;
  options.expected_token = "token";
  std::unique_ptr<vmm::Vm> adopted;
  options.adopt = [&](const std::string&, const std::string&, std::unique_ptr<vmm::Vm> vm) {
    adopted = std::move(vm);
  };
  // Whoever sees the migration completed finds the VM adopted already (an
  // agent that answers GetVm between the two would know the VM as neither
  // arriving nor its own).
  int completed_phases = 0;
  bool adopted_when_completed = false;
  options.on_phase = [&](const std::string&, const std::string&, const PhaseChange& c) {
    if (c.to != ferry::v1::MIGRATION_PHASE_COMPLETED) return;
    ++completed_phases;
    adopted_when_completed = adopted != nullptr;
  };
  RecordingSink first, intruder, second, late;
  DestinationSession session(options, &first);
  SwitchOver(session);
  EXPECT_FALSE(session.OnStreamLost(&first)) << "the caller finishes the broken stream";
  EXPECT_EQ(session.state(), DestinationState::kPostcopyPaused);
  ASSERT_NE(session.vm(), nullptr) << "the VM runs on while paused";
  EXPECT_EQ(first.finished(), 0);

  EXPECT_FALSE(session.Reconnect(&intruder, ReconnectMessage("wrong")));
  ASSERT_EQ(intruder.written().size(), 1u);
  EXPECT_EQ(intruder.written()[0].error().code(), static_cast<int>(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(session.state(), DestinationState::kPostcopyPaused);

  ASSERT_TRUE(session.Reconnect(&second, ReconnectMessage("token")));
  EXPECT_EQ(session.state(), DestinationState::kPostcopy);
  ASSERT_FALSE(second.written().empty());
  ASSERT_TRUE(second.written()[0].has_recovered());
  EXPECT_EQ(second.written()[0].recovered().present().size(), 256u / 8);

  // Whatever the old stream still delivers is ignored.
  std::vector<uint64_t> all(256);
  for (uint64_t p = 0; p < 256; ++p) all[p] = p;
  const std::string wire =
      EncodePageFrame(source_->memory(), all, FramePhase::kPostcopy, 0, [](uint64_t, bool) {})
          .Flatten();
  EXPECT_FALSE(session.OnReceive(Split(wire, 4096), &first));
  EXPECT_FALSE(session.OnStreamLost(&first));
  EXPECT_EQ(session.state(), DestinationState::kPostcopy);

  ASSERT_TRUE(session.OnReceive(Split(wire, 4096), &second));
  SourceMessage complete;
  complete.mutable_complete()->set_pages_pushed(256);
  EXPECT_FALSE(session.OnReceive(Split(Control(complete), 100), &second));
  ASSERT_OK(session.Wait());
  ASSERT_NE(adopted, nullptr);
  bool completed = false;
  for (const auto& m : second.written()) completed |= m.has_completed();
  EXPECT_TRUE(completed);
  EXPECT_EQ(completed_phases, 1);
  EXPECT_TRUE(adopted_when_completed) << "the VM was adopted before the state said completed";
  ASSERT_OK(adopted->Pause());
  ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest got, adopted->Digest());
  EXPECT_EQ(got.page_hashes.size(), 256u) << "nothing missing";

  EXPECT_FALSE(session.Reconnect(&late, ReconnectMessage("token")));
  ASSERT_EQ(late.written().size(), 1u);
  EXPECT_TRUE(late.written()[0].has_completed()) << "a late reconnection hears it completed";
}

// The postcopy push on a data stream: installed while the VM runs here,
// paused included (frames still in flight when the main stream broke),
// counted in the present bitmap a reconnection gets; a frame after the
// migration completed is dropped and changes nothing.
TEST_F(DestinationRecovery, PushFramesOnADataStreamInstallUntilTheMigrationCompleted) {
  DestinationOptions options;
  options.expected_token = "token";
  std::unique_ptr<vmm::Vm> adopted;
  options.adopt = [&](const std::string&, const std::string&, std::unique_ptr<vmm::Vm> vm) {
    adopted = std::move(vm);
  };
  RecordingSink first, second;
  DestinationSession session(options, &first);
  SwitchOver(session, /*data_streams=*/1);
  ASSERT_EQ(session.state(), DestinationState::kPostcopy);
  auto frame = [&](uint64_t first_page, uint64_t count, FramePhase phase) {
    std::vector<uint64_t> pages(count);
    for (uint64_t i = 0; i < count; ++i) pages[i] = first_page + i;
    return EncodePageFrame(source_->memory(), pages, phase, 0, [](uint64_t, bool) {}).Flatten();
  };
  std::vector<uint8_t> bounce;
  EXPECT_OK(session.OnDataFrame(Split(frame(0, 64, FramePhase::kPostcopy), 4096), &bounce));
  EXPECT_TRUE(session.vm()->pager()->IsPresent(63));

  EXPECT_FALSE(session.OnStreamLost(&first));
  ASSERT_EQ(session.state(), DestinationState::kPostcopyPaused);
  EXPECT_OK(session.OnDataFrame(Split(frame(64, 64, FramePhase::kPostcopy), 4096), &bounce));
  EXPECT_TRUE(session.vm()->pager()->IsPresent(127));

  ASSERT_TRUE(session.Reconnect(&second, ReconnectMessage("token")));
  ASSERT_FALSE(second.written().empty());
  const std::string present = second.written()[0].recovered().present();
  ASSERT_EQ(present.size(), 256u / 8);
  for (uint64_t p = 0; p < 256; ++p) {
    // Pages 0..127 came on the data stream; the rest are owed (a page the
    // guest faulted in meanwhile may be present too).
    if (p < 128) EXPECT_TRUE(present[p / 8] & (1 << (p % 8))) << "page " << p;
  }
  ASSERT_TRUE(session.OnReceive(Split(frame(128, 128, FramePhase::kPostcopy), 4096), &second));
  SourceMessage complete;
  complete.mutable_complete()->set_pages_pushed(256);
  EXPECT_FALSE(session.OnReceive(Split(Control(complete), 100), &second));
  ASSERT_OK(session.Wait());
  ASSERT_NE(adopted, nullptr);
  EXPECT_EQ(session.state(), DestinationState::kCompleted);
  // A late push frame (its pages all came meanwhile) is dropped: the
  // adopted VM's memory does not change.
  ASSERT_OK(adopted->Pause());
  ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest before, adopted->Digest());
  EXPECT_OK(session.OnDataFrame(Split(frame(0, 256, FramePhase::kPostcopy), 4096), &bounce));
  EXPECT_EQ(session.state(), DestinationState::kCompleted);
  ASSERT_OK_AND_ASSIGN(vmm::MemoryDigest after, adopted->Digest());
  EXPECT_EQ(before.digest, after.digest);
}

// A precopy frame on a data stream after the switchover is a protocol
// error: it ends the migration, and the pages stay as they were.
TEST_F(DestinationRecovery, APrecopyFrameOnADataStreamAfterTheSwitchoverIsRefused) {
  DestinationOptions options;
  options.expected_token = "token";
  RecordingSink sink;
  DestinationSession session(options, &sink);
  SwitchOver(session, /*data_streams=*/1);
  ASSERT_EQ(session.state(), DestinationState::kPostcopy);
  std::vector<uint64_t> pages = {7};
  const std::string wire =
      EncodePageFrame(source_->memory(), pages, FramePhase::kPrecopy, 0, [](uint64_t, bool) {
      }).Flatten();
  std::vector<uint8_t> bounce;
  EXPECT_THAT(session.OnDataFrame(Split(wire, 4096), &bounce),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("precopy page frame")));
  EXPECT_THAT(session.Wait(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(DestinationRecovery, NoReconnectWithinTheTimeoutFailsAndKeepsNothing) {
  DestinationOptions options;
  options.expected_token = "token";
  options.recovery_timeout = absl::Milliseconds(200);
  RecordingSink first, late;
  DestinationSession session(options, &first);
  SwitchOver(session);
  EXPECT_FALSE(session.OnStreamLost(&first));
  EXPECT_THAT(session.Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                       HasSubstr("did not reconnect within the recovery timeout")));
  EXPECT_EQ(session.vm(), nullptr);
  EXPECT_FALSE(session.Reconnect(&late, ReconnectMessage("token")));
  ASSERT_EQ(late.written().size(), 1u);
  EXPECT_TRUE(late.written()[0].has_error());
  EXPECT_FALSE(late.written()[0].error().never_ran()) << "the VM ran here";
}

// A Reconnect before the destination resumed the VM (Switchover lost):
// the half here is dropped and the source is told it never ran.
TEST_F(DestinationRecovery, AReconnectBeforeSwitchoverSaysTheVmNeverRan) {
  DestinationOptions options;
  options.expected_token = "token";
  RecordingSink first, second;
  DestinationSession session(options, &first);
  SourceMessage hello = HelloMessage();
  hello.mutable_hello()->set_fetch_address(absl::StrCat("127.0.0.1:", page_server_->port()));
  ASSERT_TRUE(session.OnReceive(Split(Control(hello), 1 << 20)));
  EXPECT_FALSE(session.Reconnect(&second, ReconnectMessage("token")));
  ASSERT_FALSE(second.written().empty());
  EXPECT_TRUE(second.written().back().error().never_ran());
  // The claim is bound to the migration's secret and this Reconnect's nonce.
  EXPECT_TRUE(ProofMatches(second.written().back().error().never_ran_proof(),
                           NeverRanProof(TestSecret(), "m1", std::string(32, 'n'))));
  EXPECT_EQ(session.state(), DestinationState::kFailed);
  EXPECT_EQ(session.vm(), nullptr);
}

// Reconnect and Join are challenged first: the session proves the secret
// over the source's nonce and its own, and takes only the source's proof
// over both.
TEST_F(DestinationRecovery, TheChallengeProvesTheSecretBothWays) {
  DestinationOptions options;
  options.expected_token = "token";
  RecordingSink first;
  DestinationSession session(options, &first);
  std::string dest_nonce;
  EXPECT_THAT(session.Challenge(std::string(32, 'n'), &dest_nonce),
              StatusIs(absl::StatusCode::kFailedPrecondition))
      << "no challenge before Hello brought the secret";
  SwitchOver(session);
  ASSERT_OK_AND_ASSIGN(DestinationMessage c, session.Challenge(std::string(32, 'n'), &dest_nonce));
  ASSERT_TRUE(c.has_challenge());
  EXPECT_EQ(c.challenge().nonce(), dest_nonce);
  EXPECT_EQ(dest_nonce.size(), 32u);
  EXPECT_TRUE(ProofMatches(c.challenge().proof(),
                           DestinationProof(TestSecret(), "m1", std::string(32, 'n'), dest_nonce)));
  EXPECT_TRUE(session.SourceProved(std::string(32, 'n'), dest_nonce,
                                   SourceProof(TestSecret(), "m1", std::string(32, 'n'),
                                               dest_nonce)));
  fetch::Secret other = TestSecret();
  other[0] ^= 1;
  EXPECT_FALSE(session.SourceProved(
      std::string(32, 'n'), dest_nonce,
      SourceProof(other, "m1", std::string(32, 'n'), dest_nonce)));
  EXPECT_FALSE(session.SourceProved(std::string(32, 'n'), dest_nonce, ""));
  // A proof for another nonce is no proof for this one (no replay).
  std::string other_nonce;
  ASSERT_OK(session.Challenge(std::string(32, 'n'), &other_nonce).status());
  EXPECT_NE(other_nonce, dest_nonce);
  EXPECT_FALSE(session.SourceProved(
      std::string(32, 'n'), other_nonce,
      SourceProof(TestSecret(), "m1", std::string(32, 'n'), dest_nonce)));
  session.Abandon(absl::AbortedError("test over"));
}

// An admitted migration whose source then says nothing is dropped, and its
// slot released: idle Hellos cannot hold an agent's VM slots.
TEST(DestinationAdmission, AnAdmittedMigrationThatSendsNothingIsDropped) {
  DestinationOptions options;
  options.expected_token = "token";
  options.first_message_timeout = absl::Milliseconds(200);
  int released = 0;
  options.release = [&](const std::string&, const std::string&, const absl::Status&) {
    ++released;
  };
  RecordingSink sink;
  DestinationSession session(options, &sink);
  ASSERT_TRUE(session.OnReceive(Split(Hello(), 1 << 20)));
  EXPECT_THAT(session.Wait(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("sent nothing")));
  EXPECT_EQ(released, 1);
  EXPECT_EQ(session.state(), DestinationState::kFailed);
  EXPECT_EQ(session.vm(), nullptr);
  ASSERT_FALSE(sink.written().empty());
  EXPECT_TRUE(sink.written().back().has_error()) << "the source is told why";
}

TEST(DestinationAdmission, ASourceThatSpeaksIsNotDropped) {
  DestinationOptions options;
  options.expected_token = "token";
  options.first_message_timeout = absl::Milliseconds(200);
  RecordingSink sink;
  DestinationSession session(options, &sink);
  ASSERT_TRUE(session.OnReceive(Split(Hello(), 1 << 20)));
  ASSERT_TRUE(session.OnReceive(Split(Pages(0, 2, 'a'), 1 << 20)));
  absl::SleepFor(absl::Milliseconds(600));
  EXPECT_FALSE(session.ended());
  EXPECT_EQ(session.state(), DestinationState::kReceivingPrecopy);
  session.Abandon(absl::AbortedError("test over"));
}

// Preflight checks (SourceMessage.check): the destination answers every
// check it would run at Hello, then ends the stream; it admits nothing and
// creates nothing.
SourceMessage CheckMessage() {
  SourceMessage m;
  *m.mutable_check() = HelloMessage().hello();
  return m;
}

std::vector<CheckItem> ItemsOf(const Outcome& o) {
  EXPECT_EQ(o.written.size(), 1u) << "one answer, then the end";
  if (o.written.empty() || !o.written[0].has_check_result()) {
    ADD_FAILURE() << "no CheckResult";
    return {};
  }
  return FromProto(o.written[0].check_result());
}

const CheckItem* Find(const std::vector<CheckItem>& items, const std::string& name) {
  for (const CheckItem& i : items)
    if (i.name == name) return &i;
  return nullptr;
}

DestinationOptions CheckOptions(bool name_free = true) {
  DestinationOptions o;
  o.admit = [](const std::string&, const std::string&, const std::string&, const vmm::VmConfig&) {
    ADD_FAILURE() << "a check must not admit (reserve) anything";
    return absl::OkStatus();
  };
  o.admit_check = [name_free](const std::string& name, const vmm::VmConfig& c) {
    EXPECT_EQ(name, "m1");  // no vm_name in the Hello: the migration id
    EXPECT_EQ(c.memory_bytes, 1u << 20);
    return std::vector<CheckItem>{{"vm name", name_free, name_free ? "free" : "taken here"}};
  };
  return o;
}

TEST(DestinationCheck, AGoodCheckPassesEveryItemAndCreatesNothing) {
  Outcome o = Play({Control(CheckMessage())}, CheckOptions());
  EXPECT_OK(o.status);  // the stream ends cleanly after the answer
  std::vector<CheckItem> items = ItemsOf(o);
  std::vector<std::string> names;
  for (const CheckItem& i : items) {
    names.push_back(i.name);
    // Free memory depends on the machine; every other item must pass.
    if (i.name != "free memory") {
      EXPECT_TRUE(i.ok) << i.name << ": " << i.detail;
    }
  }
  EXPECT_THAT(names,
              ::testing::ElementsAre("protocol version", "token", "hello", "vm name", "free memory",
                                     "backend", "fault mode", "fetch channel"));
  EXPECT_THAT(Find(items, "fetch channel")->detail, HasSubstr("proved the handshake"));
}

TEST(DestinationCheck, AWrongTokenEndsTheListAtTheToken) {
  SourceMessage m = CheckMessage();
  m.mutable_check()->set_auth_token("tokem");
  Outcome o = Play({Control(m)}, CheckOptions());
  EXPECT_OK(o.status);
  std::vector<CheckItem> items = ItemsOf(o);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_TRUE(items[0].ok);
  EXPECT_EQ(items[1].name, "token");
  EXPECT_FALSE(items[1].ok);
  EXPECT_THAT(items[1].detail, HasSubstr("wrong migration token"));
}

TEST(DestinationCheck, AnotherProtocolVersionFailsFirst) {
  SourceMessage m = CheckMessage();
  m.mutable_check()->set_protocol_version(2);
  std::vector<CheckItem> items = ItemsOf(Play({Control(m)}, CheckOptions()));
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].name, "protocol version");
  EXPECT_FALSE(items[0].ok);
  EXPECT_THAT(items[0].detail, HasSubstr("version 2"));
}

TEST(DestinationCheck, TheAgentsRefusalAndABadFetchSecretFail) {
  SourceMessage m = CheckMessage();
  m.mutable_check()->set_fetch_secret(std::string(32, 'x'));  // not what the source registered
  std::vector<CheckItem> items = ItemsOf(Play({Control(m)}, CheckOptions(/*name_free=*/false)));
  const CheckItem* name = Find(items, "vm name");
  ASSERT_NE(name, nullptr);
  EXPECT_FALSE(name->ok);
  const CheckItem* fetch = Find(items, "fetch channel");
  ASSERT_NE(fetch, nullptr);
  EXPECT_FALSE(fetch->ok);
  EXPECT_THAT(fetch->detail, HasSubstr(FetchAddress()));
}

TEST(DestinationCheck, PrecopyNeedsNoFetchChannelAndABadLayoutFailsTheRequest) {
  SourceMessage m = CheckMessage();
  m.mutable_check()->set_mode(ferry::v1::MIGRATION_MODE_PRECOPY);
  m.mutable_check()->set_fetch_secret(std::string(32, 'x'));
  std::vector<CheckItem> items = ItemsOf(Play({Control(m)}, CheckOptions()));
  ASSERT_NE(Find(items, "fetch channel"), nullptr);
  EXPECT_TRUE(Find(items, "fetch channel")->ok);

  m = CheckMessage();
  m.mutable_check()->mutable_layout()->set_page_size(3000);
  items = ItemsOf(Play({Control(m)}, CheckOptions()));
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[2].name, "hello");
  EXPECT_FALSE(items[2].ok);
}

TEST(DestinationCheck, TheHostsMemoryAndBackendAreJudged) {
  vmm::VmConfig c = Vm();
  c.memory_bytes = 1ull << 50;  // more than any test machine has
  std::vector<CheckItem> items = CheckHost(c, vmm::FaultMode::kExit);
  ASSERT_NE(Find(items, "free memory"), nullptr);
  EXPECT_FALSE(Find(items, "free memory")->ok);
  EXPECT_THAT(Find(items, "free memory")->detail, HasSubstr("MemAvailable"));
  c = Vm();
  c.backend = vmm::VmBackend::kKvm;
  items = CheckHost(c, vmm::FaultMode::kExit);
  const CheckItem* backend = Find(items, "backend");
  ASSERT_NE(backend, nullptr);
  // Whichever this machine has: KVM passes where /dev/kvm opens, and
  // names why where it does not.
  if (access("/dev/kvm", R_OK | W_OK) != 0) {
    EXPECT_FALSE(backend->ok);
    EXPECT_THAT(backend->detail, HasSubstr("KVM is not usable here"));
  } else if (backend->ok) {
    ASSERT_NE(Find(items, "fault mode"), nullptr);
    EXPECT_TRUE(Find(items, "fault mode")->ok);  // exit, or blocking with the reason
  }
}

TEST(DestinationCheck, ACheckAfterHelloIsOutOfOrder) {
  EXPECT_THAT(Play({Hello(), Control(CheckMessage())}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("check")));
}

TEST(DestinationCheck, APeersAnswerIsBounded) {
  ferry::v1::CheckResult r;
  for (int i = 0; i < 40; ++i) {
    ferry::v1::CheckItem* item = r.add_items();
    item->set_name(std::string(5000, 'n'));
    item->set_ok(true);
  }
  std::vector<CheckItem> items = FromProto(r);
  ASSERT_EQ(items.size(), static_cast<size_t>(kMaxCheckItems) + 1);
  EXPECT_EQ(items[0].name.size(), kMaxCheckTextBytes);
  EXPECT_FALSE(items.back().ok);
  EXPECT_FALSE(AllPassed(items));
  EXPECT_FALSE(AllPassed(FromProto(ferry::v1::CheckResult())));  // an empty answer fails
}

}  // namespace
}  // namespace ferry::migration
