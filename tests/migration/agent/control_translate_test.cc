// control_translate: StartMigrationRequest <-> MigrationOptions (a round
// trip, defaults, refusals), CreateVmRequest -> VmConfig, and the
// descriptions built from engine state.
#include "migration/agent/control_translate.h"

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ControlTranslateTest, OptionsRoundTripThroughARequest) {
  migration::MigrationOptions o;
  o.mode = migration::MigrationMode::kPostcopy;
  o.fault_mode = vmm::FaultMode::kBlocking;
  o.downtime_target_ms = 77;
  o.max_bandwidth = 1 << 20;
  o.max_rounds = 5;
  o.streams = 2;
  o.recovery_timeout_ms = 4321;
  ferry::v1::StartMigrationRequest r = RequestFromMigrationOptions(o, "web", "dest:7000");
  EXPECT_EQ(r.vm_name(), "web");
  EXPECT_EQ(r.destination(), "dest:7000");
  ASSERT_OK_AND_ASSIGN(migration::MigrationOptions back, MigrationOptionsFromRequest(r, "tok"));
  EXPECT_EQ(back.mode, o.mode);
  EXPECT_EQ(back.fault_mode, o.fault_mode);
  EXPECT_EQ(back.downtime_target_ms, 77);
  EXPECT_EQ(back.max_bandwidth, 1u << 20);
  EXPECT_EQ(back.max_rounds, 5);
  EXPECT_EQ(back.streams, 2);
  EXPECT_EQ(back.recovery_timeout_ms, 4321);
  EXPECT_EQ(back.auth_token, "tok");
  // And back again: the same request.
  EXPECT_EQ(RequestFromMigrationOptions(back, "web", "dest:7000").SerializeAsString(),
            r.SerializeAsString());
}

TEST(ControlTranslateTest, UnsetFieldsKeepTheDefaults) {
  ferry::v1::StartMigrationRequest r;
  r.set_vm_name("web");
  r.set_destination("dest:7000");
  ASSERT_OK_AND_ASSIGN(migration::MigrationOptions o, MigrationOptionsFromRequest(r, ""));
  const migration::MigrationOptions defaults;
  EXPECT_EQ(o.mode, defaults.mode);
  EXPECT_EQ(o.fault_mode, defaults.fault_mode);
  EXPECT_EQ(o.downtime_target_ms, defaults.downtime_target_ms);
  EXPECT_EQ(o.max_rounds, defaults.max_rounds);
  EXPECT_EQ(o.recovery_timeout_ms, defaults.recovery_timeout_ms);
}

TEST(ControlTranslateTest, RefusesWhatTheEngineCannotDo) {
  ferry::v1::StartMigrationRequest r;
  r.set_vm_name("web");
  r.set_destination("dest:7000");
  auto with = [&](auto change) {
    ferry::v1::StartMigrationRequest x = r;
    change(x);
    return MigrationOptionsFromRequest(x, "").status();
  };
  EXPECT_THAT(with([](auto& x) { x.set_streams(kMaxStreamsField + 1); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("streams")));
  EXPECT_THAT(with([](auto& x) { x.set_downtime_target_ms(-1); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("downtime")));
  EXPECT_THAT(with([](auto& x) { x.set_recovery_timeout_ms(-1); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("recovery")));
  EXPECT_THAT(with([](auto& x) { x.set_request_id(std::string(65, 'x')); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("request id")));
  EXPECT_FALSE(with([](auto& x) { x.set_destination("no port"); }).ok());
}

TEST(ControlTranslateTest, CreateVmRequestBecomesAConfig) {
  ferry::v1::CreateVmRequest r;
  r.set_name("web");
  r.set_memory_bytes(64 << 20);
  r.set_vcpus(2);
  r.set_backend(ferry::v1::VM_BACKEND_SOFT);
  r.mutable_workload()->set_kind(ferry::v1::WORKLOAD_KIND_IDLE);
  std::string reason;
  ASSERT_OK_AND_ASSIGN(vmm::VmConfig c, VmConfigFromRequest(r, &reason));
  EXPECT_EQ(c.memory_bytes, 64u << 20);
  EXPECT_EQ(c.vcpus, 2);
  EXPECT_EQ(c.backend, vmm::VmBackend::kSoft);
  r.set_memory_bytes((64 << 20) + 4096);
  EXPECT_THAT(VmConfigFromRequest(r, &reason),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 MiB")));
}

TEST(ControlTranslateTest, EndedMigrationCarriesItsError) {
  ferry::v1::MigrationResource r;
  SetEnded(absl::UnavailableError("peer gone"), absl::FromUnixMillis(1234), &r);
  EXPECT_EQ(r.end_time_unix_ms(), 1234);
  EXPECT_EQ(r.error(), "peer gone");
  EXPECT_EQ(r.error_code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(r.progress().eta_ms(), -1);
  ferry::v1::MigrationResource ok;
  SetEnded(absl::OkStatus(), absl::FromUnixMillis(1), &ok);
  EXPECT_EQ(ok.progress().percent(), 100);
  EXPECT_TRUE(ok.error().empty());
}

TEST(ControlTranslateTest, IncomingPeerIsTheSourceAgentWhenKnown) {
  migration::DestinationSession::Info in;
  in.migration_id = "mig-1";
  in.vm_name = "web";
  in.source = "10.0.0.1:7001";
  EXPECT_EQ(PeerOf(in), "10.0.0.1:7001");
  in.source_agent = "src:7000";
  ferry::v1::MigrationResource r = DescribeIncomingMigration(in);
  EXPECT_EQ(r.direction(), "incoming");
  EXPECT_EQ(r.source(), "src:7000");
  EXPECT_EQ(DescribeIncomingVm(in).state(), ferry::v1::VM_STATE_INCOMING);
}

TEST(ControlTranslateTest, AnEndedIncomingMigrationCarriesItsOwnPhaseTimings) {
  migration::DestinationSession::Info in;
  in.migration_id = "mig-1";
  in.state = migration::DestinationState::kPostcopy;
  const struct {
    ferry::v1::MigrationPhase phase;
    int64_t start, end;
  } timings[] = {{ferry::v1::MIGRATION_PHASE_SETUP, 100, 110},
                 {ferry::v1::MIGRATION_PHASE_PRECOPY, 110, 500},
                 {ferry::v1::MIGRATION_PHASE_POSTCOPY, 500, 900}};
  for (const auto& t : timings) {
    ferry::v1::PhaseTiming* out = in.phase_timings.Add();
    out->set_phase(t.phase);
    out->set_start_unix_ms(t.start);
    out->set_end_unix_ms(t.end);
    out->set_duration_ms(static_cast<double>(t.end - t.start));
  }
  // Under way: no report yet.
  EXPECT_FALSE(DescribeIncomingMigration(in).has_report());
  in.state = migration::DestinationState::kCompleted;
  ferry::v1::MigrationResource r = DescribeIncomingMigration(in);
  ASSERT_TRUE(r.has_report());
  EXPECT_EQ(r.report().migration_id(), "mig-1");
  ASSERT_EQ(r.report().phase_timings_size(), 3);
  EXPECT_EQ(r.report().phase_timings(1).phase(), ferry::v1::MIGRATION_PHASE_PRECOPY);
  EXPECT_EQ(r.report().phase_timings(1).start_unix_ms(), 110);
  EXPECT_EQ(r.report().phase_timings(1).end_unix_ms(), 500);
  EXPECT_EQ(r.report().phase_timings(1).duration_ms(), 390);
  EXPECT_EQ(r.report().phase_timings(2).phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY);
}

}  // namespace
}  // namespace ferry::agent
