// Live control of a running migration through the real binaries: `ferry
// migration set` changes the bandwidth cap while precopy runs (the report
// records each change) and is refused, changing nothing, for an unknown
// id, a parameter past its phase, or a migration that ended; `ferry
// migration postcopy` forces a hybrid migration's switch mid-precopy.
//
// Rates are compared with each other, never with a wall-clock figure: a
// cap 8x lower must at least halve the measured rate, and lifting it must
// at least double it again, which holds on a slow, loaded machine.
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;

class LiveControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/live-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/live-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }

  // Starts a migration of a new VM `name` (idle, no zero pages) and returns
  // its id.
  std::string StartDetached(const std::string& name, const std::string& memory,
                            const std::string& mode, const std::string& bandwidth) {
    const std::string a = a_->address(), b = b_->address();
    CliResult c =
        RunCli({"vm", "create", name, "--agent", a, "--memory", memory, "--workload", "idle"});
    EXPECT_EQ(c.exit_code, 0) << c.out;
    CliResult d = RunCli({"migrate", name, "--from", a, "--to", b, "--mode", mode,
                          "--max-bandwidth", bandwidth, "--detach"});
    EXPECT_EQ(d.exit_code, 0) << d.out;
    return d.out.empty() ? "" : d.out.substr(0, d.out.size() - 1);
  }

  // Bytes per second the migration sent over `window`, from its progress.
  static double MeasureRate(ferry::v1::Control::Stub& stub, const std::string& id,
                            std::chrono::milliseconds window) {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t b0 = GetMigration(stub, id).progress().bytes_sent();
    std::this_thread::sleep_for(window);
    const uint64_t b1 = GetMigration(stub, id).progress().bytes_sent();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return (b1 - b0) / s;
  }

  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(LiveControlTest, LoweringTheBandwidthSlowsPrecopyAndRaisingItSpeedsItUp) {
  const std::string a = a_->address(), b = b_->address();
  const std::string id = StartDetached("bw", "256M", "precopy", "16M");
  ASSERT_FALSE(id.empty());
  auto stub_a = Stub(a), stub_b = Stub(b);
  ferry::v1::MigrationResource m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_PRECOPY);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_PRECOPY) << m.error();
  EXPECT_EQ(m.progress().max_bandwidth(), 16u << 20);

  // A precopy-mode migration cannot be forced into postcopy.
  CliResult pc = RunCli({"migration", "postcopy", id, "--agent", a});
  EXPECT_EQ(pc.exit_code, 6) << pc.out;
  EXPECT_THAT(pc.out, HasSubstr("precopy mode"));

  const double at_16m = MeasureRate(*stub_a, id, std::chrono::milliseconds(1500));
  CliResult lower = RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "2M"});
  ASSERT_EQ(lower.exit_code, 0) << lower.out;
  EXPECT_THAT(lower.out, HasSubstr("max bandwidth 2097152 B/s"));
  EXPECT_EQ(GetMigration(*stub_a, id).progress().max_bandwidth(), 2u << 20);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // frames already paid for
  const double at_2m = MeasureRate(*stub_a, id, std::chrono::milliseconds(2000));
  EXPECT_LT(at_2m, at_16m / 2) << "16M: " << at_16m << " B/s, then 2M: " << at_2m << " B/s";

  CliResult raise = RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "0"});
  ASSERT_EQ(raise.exit_code, 0) << raise.out;
  EXPECT_THAT(raise.out, HasSubstr("max bandwidth none"));
  // Uncapped it sends at least twice as fast, or leaves precopy within the
  // window (the rest, about 200 MiB, would take over a minute at 2M).
  const double uncapped = MeasureRate(*stub_a, id, std::chrono::milliseconds(1000));
  m = GetMigration(*stub_a, id);
  if (m.phase() == ferry::v1::MIGRATION_PHASE_PRECOPY)
    EXPECT_GT(uncapped, 2 * at_2m) << "2M: " << at_2m << " B/s, uncapped: " << uncapped;

  m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 300000);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << m.error();
  ASSERT_EQ(m.report().parameter_changes_size(), 2);
  const ferry::v1::ParameterChange& c1 = m.report().parameter_changes(0);
  const ferry::v1::ParameterChange& c2 = m.report().parameter_changes(1);
  EXPECT_EQ(c1.parameter(), "max_bandwidth");
  EXPECT_EQ(c1.old_value(), 16 << 20);
  EXPECT_EQ(c1.new_value(), 2 << 20);
  EXPECT_EQ(c2.old_value(), 2 << 20);
  EXPECT_EQ(c2.new_value(), 0);
  EXPECT_GT(c1.time_ms(), 0);
  EXPECT_GE(c2.time_ms(), c1.time_ms() + 2000);
  EXPECT_TRUE(VerifyVm(*stub_b, "bw"));

  // The CLI shows the changes (text and JSON).
  CliResult get = RunCli({"migration", "get", id, "--agent", a});
  EXPECT_THAT(get.out, HasSubstr("max_bandwidth 16777216 -> 2097152")) << get.out;
  CliResult json = RunCli({"migration", "get", id, "--agent", a, "--json"});
  EXPECT_THAT(json.out, HasSubstr("\"parameter_changes\"")) << json.out;

  // Finished: refused, and nothing recorded.
  CliResult late = RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "1M"});
  EXPECT_EQ(late.exit_code, 6) << late.out;
  EXPECT_THAT(late.out, HasSubstr("no longer runs"));
  EXPECT_EQ(GetMigration(*stub_a, id).report().parameter_changes_size(), 2);
}

TEST_F(LiveControlTest, ChangesThatCannotApplyAreRefusedAndChangeNothing) {
  const std::string a = a_->address();
  // Unknown id: not found (exit 4); nothing given: usage (exit 2).
  CliResult unknown =
      RunCli({"migration", "set", "mig-nope", "--agent", a, "--max-bandwidth", "1M"});
  EXPECT_EQ(unknown.exit_code, 4) << unknown.out;
  const std::string id = StartDetached("ph", "128M", "postcopy", "4M");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(RunCli({"migration", "set", id, "--agent", a}).exit_code, 2);
  EXPECT_EQ(RunCli({"migration", "set", id, "--agent", a, "--downtime-target-ms", "0"}).exit_code,
            2);
  auto stub_a = Stub(a);
  {  // The API refuses an empty request too.
    grpc::ClientContext ctx;
    ferry::v1::SetMigrationParametersRequest r;
    r.set_id(id);
    ferry::v1::MigrationResource out;
    EXPECT_EQ(stub_a->SetMigrationParameters(&ctx, r, &out).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  ferry::v1::MigrationResource m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_POSTCOPY);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY) << m.error();
  const int64_t target = m.progress().downtime_target_ms();

  // The downtime target after switchover: refused, and the bandwidth given
  // with it is not applied either.
  CliResult wrong = RunCli({"migration", "set", id, "--agent", a, "--downtime-target-ms", "500",
                            "--max-bandwidth", "1M"});
  EXPECT_EQ(wrong.exit_code, 6) << wrong.out;
  EXPECT_THAT(wrong.out, HasSubstr("only applies before switchover"));
  m = GetMigration(*stub_a, id);
  EXPECT_EQ(m.progress().downtime_target_ms(), target);
  EXPECT_EQ(m.progress().max_bandwidth(), 4u << 20);
  // Streams carry precopy pages: none in postcopy.
  CliResult streams = RunCli({"migration", "set", id, "--agent", a, "--streams", "2"});
  EXPECT_EQ(streams.exit_code, 6) << streams.out;
  EXPECT_THAT(streams.out, HasSubstr("precopy has stopped"));

  // The bandwidth still applies in postcopy (the push): lift the cap.
  CliResult lift = RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "0"});
  EXPECT_EQ(lift.exit_code, 0) << lift.out;
  m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 300000);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << m.error();
  ASSERT_EQ(m.report().parameter_changes_size(), 1);
  EXPECT_EQ(m.report().parameter_changes(0).new_value(), 0);
  EXPECT_TRUE(VerifyVm(*Stub(b_->address()), "ph"));
}

// `migration set --streams` mid-precopy, on a guest that keeps writing
// (2 MB/s against an 8 MiB/s link and a 500 ms downtime target: precopy
// converges at any machine speed, after rounds that resend pages). A raise applies at the start of the next
// round, once everything sent is installed: round 0's pages, sent over the
// old count, are resent over the new one, which the digest checks. The
// report lists each change the operator made; after the end a change is
// refused.
TEST_F(LiveControlTest, StreamsChangeMidPrecopy) {
  const std::string a = a_->address(), b = b_->address();
  CliResult c = RunCli({"vm", "create", "st", "--agent", a, "--memory", "64M", "--workload",
                        "dirty-rate", "--dirty-rate", "2M"});
  ASSERT_EQ(c.exit_code, 0) << c.out;
  // The guest rewrites a few hundred pages in every round: a 500 ms
  // target fits them at this rate, and round 0's writes (about 16 MB) do
  // not, so round 1 comes.
  CliResult d = RunCli({"migrate", "st", "--from", a, "--to", b, "--mode", "precopy",
                        "--max-bandwidth", "8M", "--downtime-target-ms", "500", "--detach"});
  ASSERT_EQ(d.exit_code, 0) << d.out;
  const std::string id = d.out.substr(0, d.out.size() - 1);
  auto stub_a = Stub(a), stub_b = Stub(b);
  ferry::v1::MigrationResource m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_PRECOPY);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_PRECOPY) << m.error();
  const int64_t at_start = m.progress().streams();
  ASSERT_GE(at_start, 1);
  ASSERT_LT(at_start, 3) << "the test raises the count to 3";
  EXPECT_EQ(RunCli({"migration", "set", id, "--agent", a, "--streams", "9"}).exit_code, 2);

  CliResult up = RunCli({"migration", "set", id, "--agent", a, "--streams", "3"});
  ASSERT_EQ(up.exit_code, 0) << up.out;
  EXPECT_THAT(up.out, HasSubstr("from the next precopy round"));
  // The count in use becomes 3 when round 1 starts (and stays: the
  // migration keeps it to its end). The deadline bounds a hang.
  bool three = false;
  for (int i = 0; i < 1800 && !three; ++i) {
    m = GetMigration(*stub_a, id);
    three = m.progress().streams() == 3;
    if (!three) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(three) << "phase " << m.phase() << ": " << m.error();
  // Lower it again: applied if another round comes, refused if precopy
  // has already ended; either way recorded only when accepted.
  CliResult down = RunCli({"migration", "set", id, "--agent", a, "--streams", "2"});
  EXPECT_TRUE(down.exit_code == 0 || down.exit_code == 6) << down.out;

  ASSERT_EQ(RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "0"}).exit_code == 0 ||
                GetMigration(*stub_a, id).phase() != ferry::v1::MIGRATION_PHASE_PRECOPY,
            true);
  m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 300000);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << m.error();
  EXPECT_TRUE(VerifyVm(*stub_b, "st"));
  std::vector<std::pair<int64_t, int64_t>> streams;
  for (const ferry::v1::ParameterChange& ch : m.report().parameter_changes())
    if (ch.parameter() == "streams") streams.emplace_back(ch.old_value(), ch.new_value());
  if (down.exit_code == 0) {
    EXPECT_THAT(streams, ::testing::ElementsAre(std::make_pair(at_start, int64_t{3}),
                                                std::make_pair(int64_t{3}, int64_t{2})));
  } else {
    EXPECT_THAT(streams, ::testing::ElementsAre(std::make_pair(at_start, int64_t{3})));
  }
  CliResult late = RunCli({"migration", "set", id, "--agent", a, "--streams", "1"});
  EXPECT_EQ(late.exit_code, 6) << late.out;
  EXPECT_THAT(late.out, HasSubstr("no longer runs"));
}

// `migration postcopy` switches a hybrid migration of an idle guest (whose
// policy would finish precopy and stop-and-copy) to postcopy mid-round.
TEST_F(LiveControlTest, PostcopyForcesTheSwitchMidPrecopy) {
  const std::string a = a_->address(), b = b_->address();
  CliResult unknown = RunCli({"migration", "postcopy", "mig-nope", "--agent", a});
  EXPECT_EQ(unknown.exit_code, 4) << unknown.out;
  const std::string id = StartDetached("fp", "256M", "hybrid", "8M");
  ASSERT_FALSE(id.empty());
  auto stub_a = Stub(a), stub_b = Stub(b);
  ferry::v1::MigrationResource m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_PRECOPY);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_PRECOPY) << m.error();
  CliResult pc = RunCli({"migration", "postcopy", id, "--agent", a});
  ASSERT_EQ(pc.exit_code, 0) << pc.out;
  m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_POSTCOPY);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_POSTCOPY) << m.error();
  // Past precopy: a second request is refused.
  CliResult again = RunCli({"migration", "postcopy", id, "--agent", a});
  EXPECT_EQ(again.exit_code, 6) << again.out;
  EXPECT_THAT(again.out, HasSubstr("precopy has already stopped"));
  EXPECT_EQ(RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "0"}).exit_code, 0);
  m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED, 300000);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << m.error();
  EXPECT_THAT(m.report().switchover_reason(), HasSubstr("forced by the operator"));
  EXPECT_GT(m.report().pages_pushed() + m.report().pages_demand(), 0u);
  EXPECT_TRUE(VerifyVm(*stub_b, "fp"));
  CliResult late = RunCli({"migration", "postcopy", id, "--agent", a});
  EXPECT_EQ(late.exit_code, 6) << late.out;
  EXPECT_THAT(late.out, HasSubstr("no longer runs"));
}

}  // namespace
}  // namespace ferry::e2e
