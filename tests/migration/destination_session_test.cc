// The destination's side of the protocol, driven message by message through
// a scripted stream (a fake of the gRPC stream interface). Bad input and
// messages out of order get a clear error, sent to the source, and change no
// guest memory.
#include "migration/destination_session.h"

#include <deque>
#include <vector>

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/convert.h"

namespace ferry::migration {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using ferry::v1::DestinationMessage;
using ferry::v1::SourceMessage;

constexpr uint32_t kPage = 4096;

// Plays `script` to the session, records what it writes.
class ScriptedStream final : public MigrationStream {
 public:
  explicit ScriptedStream(std::vector<SourceMessage> script)
      : script_(script.begin(), script.end()) {}
  void SendInitialMetadata() override {}
  bool NextMessageSize(uint32_t* sz) override {
    *sz = 1 << 20;
    return !script_.empty();
  }
  bool Read(SourceMessage* m) override {
    if (script_.empty()) return false;
    *m = script_.front();
    script_.pop_front();
    return true;
  }
  bool Write(const DestinationMessage& m, grpc::WriteOptions) override {
    written.push_back(m);
    return true;
  }
  std::vector<DestinationMessage> written;

 private:
  std::deque<SourceMessage> script_;
};

vmm::VmConfig Vm() {
  vmm::VmConfig c;
  c.memory_bytes = 1 << 20;  // 256 pages
  c.vcpus = 1;
  c.workload.kind = vmm::WorkloadKind::kSequential;
  return c;
}

SourceMessage Hello() {
  SourceMessage m;
  ferry::v1::Hello* h = m.mutable_hello();
  h->set_protocol_version(kProtocolVersion);
  h->set_migration_id("m1");
  h->set_auth_token("token");
  vmm::VmConfig c = Vm();
  *h->mutable_layout() = ToLayout(c, *vmm::MemoryMap::ForSize(c.memory_bytes, kPage));
  h->set_mode(ferry::v1::MIGRATION_MODE_HYBRID);
  h->set_fault_mode(ferry::v1::FAULT_MODE_EXIT);
  h->set_fetch_address("127.0.0.1:9");
  h->set_fetch_secret(std::string(32, 's'));
  return m;
}

SourceMessage Pages(uint64_t gpa, uint32_t count, char fill,
                    ferry::v1::Phase phase = ferry::v1::PHASE_PRECOPY) {
  SourceMessage m;
  ferry::v1::PageBatch* b = m.mutable_pages();
  b->set_phase(phase);
  auto* run = b->add_runs();
  run->set_gpa(gpa);
  run->set_count(count);
  b->set_data(std::string(uint64_t{count} * kPage, fill));
  return m;
}

struct Outcome {
  absl::Status status;
  std::vector<DestinationMessage> written;
};

Outcome Play(std::vector<SourceMessage> script, DestinationOptions options = {}) {
  options.expected_token = options.expected_token.empty() ? "token" : options.expected_token;
  DestinationSession session(options);
  ScriptedStream stream(std::move(script));
  Outcome o;
  o.status = session.Serve(&stream);
  o.written = stream.written;
  return o;
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
  // The stream then ended early: a failure, and the destination is empty.
  EXPECT_THAT(o.status, StatusIs(absl::StatusCode::kUnavailable,
                                 HasSubstr("closed the migration stream")));
}

TEST(DestinationProtocol, WrongVersionIsRefused) {
  SourceMessage h = Hello();
  h.mutable_hello()->set_protocol_version(2);
  Outcome o = Play({h});
  EXPECT_THAT(o.status, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 2")));
  EXPECT_THAT(LastError(o), HasSubstr("version 2"));
}

TEST(DestinationProtocol, WrongTokenIsRefused) {
  SourceMessage h = Hello();
  h.mutable_hello()->set_auth_token("tokem");
  EXPECT_THAT(Play({h}).status,
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("wrong migration token")));
}

TEST(DestinationProtocol, UnspecifiedEnumsAndBadLayoutsAreRefused) {
  SourceMessage h = Hello();
  h.mutable_hello()->set_mode(ferry::v1::MIGRATION_MODE_UNSPECIFIED);
  EXPECT_THAT(Play({h}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("migration mode 0")));
  h = Hello();
  h.mutable_hello()->set_fault_mode(ferry::v1::FAULT_MODE_UNSPECIFIED);
  EXPECT_THAT(Play({h}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("fault mode 0")));
  h = Hello();
  h.mutable_hello()->mutable_layout()->mutable_workload()->set_kind(
      ferry::v1::WORKLOAD_KIND_UNSPECIFIED);
  EXPECT_THAT(Play({h}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("workload kind")));
  h = Hello();
  h.mutable_hello()->mutable_layout()->mutable_slots(0)->set_gpa(4096);
  EXPECT_THAT(Play({h}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("do not match")));
  h = Hello();
  h.mutable_hello()->set_fetch_secret("short");
  EXPECT_THAT(Play({h}).status, StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("fetch secret")));
  h = Hello();
  h.mutable_hello()->set_fetch_address("no-port");
  EXPECT_THAT(Play({h}).status, StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DestinationProtocol, MessagesOutOfOrderAreRefusedNamingBoth) {
  EXPECT_THAT(Play({Pages(0, 1, 'a')}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("PageBatch is not expected while the destination is accepting")));
  EXPECT_THAT(Play({Hello(), Hello()}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Hello")));
  SourceMessage complete;
  complete.mutable_complete();
  EXPECT_THAT(Play({Hello(), complete}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("Complete is not expected while the destination is "
                                 "receiving precopy")));
  EXPECT_THAT(Play({Hello(), Pages(0, 1, 'a', ferry::v1::PHASE_POSTCOPY)}).status,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("PHASE_POSTCOPY")));
  SourceMessage empty;
  EXPECT_THAT(Play({Hello(), empty}).status, StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DestinationProtocol, MalformedBatchesEndTheMigrationAndKeepNothing) {
  // Each batch is good in its first run and bad later; the whole batch is
  // validated before any page of it is installed.
  SourceMessage short_data = Pages(0, 2, 'a');
  short_data.mutable_pages()->mutable_data()->resize(kPage + 100);
  SourceMessage out_of_range = Pages(0, 1, 'a');
  auto* run = out_of_range.mutable_pages()->add_runs();
  run->set_gpa(256 * kPage);
  run->set_count(1);
  out_of_range.mutable_pages()->mutable_data()->append(kPage, 'b');
  SourceMessage unaligned = Pages(0, 1, 'a');
  unaligned.mutable_pages()->mutable_runs(0)->set_gpa(100);
  SourceMessage zero_out_of_range = Pages(0, 1, 'a');
  zero_out_of_range.mutable_pages()->set_zero_base_gpa(255 * kPage);
  zero_out_of_range.mutable_pages()->set_zero_bitmap(std::string(1, '\x03'));
  struct Case {
    const char* name;
    SourceMessage batch;
    absl::StatusCode code;
    const char* error;
  } cases[] = {
      {"data shorter than the runs", short_data, absl::StatusCode::kInvalidArgument,
       "carries"},
      {"a run outside RAM", out_of_range, absl::StatusCode::kOutOfRange,
       "not inside one RAM slot"},
      {"an unaligned run", unaligned, absl::StatusCode::kInvalidArgument,
       "not page aligned"},
      {"zero bits outside RAM", zero_out_of_range, absl::StatusCode::kOutOfRange,
       "not inside one RAM slot"},
  };
  for (const Case& c : cases) {
    DestinationOptions options;
    options.expected_token = "token";
    DestinationSession session(options);
    ScriptedStream stream({Hello(), c.batch});
    absl::Status s = session.Serve(&stream);
    EXPECT_THAT(s, StatusIs(c.code, HasSubstr(c.error))) << c.name;
    bool error_sent = false;
    for (const auto& m : stream.written) error_sent |= m.has_error();
    EXPECT_TRUE(error_sent) << c.name << ": the source must be told why";
    EXPECT_EQ(session.state(), DestinationState::kFailed) << c.name;
    EXPECT_EQ(session.vm(), nullptr) << c.name << ": a failed destination keeps nothing";
  }
}

TEST(DestinationProtocol, GoodBatchesInstallAndResendsOverwrite) {
  DestinationOptions options;
  options.expected_token = "token";
  DestinationSession session(options);
  SourceMessage zeros;
  zeros.mutable_pages()->set_phase(ferry::v1::PHASE_PRECOPY);
  zeros.mutable_pages()->set_zero_base_gpa(10 * kPage);
  zeros.mutable_pages()->set_zero_bitmap(std::string(1, '\x05'));  // pages 10 and 12
  SourceMessage round_end;
  round_end.mutable_round_end()->set_round(0);
  ScriptedStream stream({Hello(), Pages(0, 4, 'a'), zeros, Pages(kPage, 1, 'b'), round_end});
  EXPECT_THAT(session.Serve(&stream), StatusIs(absl::StatusCode::kUnavailable));
  // The stream ended before switchover, so the VM was dropped; what was
  // acknowledged tells what was installed.
  bool acked = false;
  for (const auto& m : stream.written)
    if (m.has_progress() && m.progress().round_acked() == 0) {
      acked = true;
      EXPECT_EQ(m.progress().pages_missing(), 256u - 6u);
    }
  EXPECT_TRUE(acked);
}

}  // namespace
}  // namespace ferry::migration
