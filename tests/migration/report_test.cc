// The report's JSON (derived from ferry.v1.MigrationReport: every field,
// enums spelled as operators read them, an unset digest_match absent) and
// its text (the key figures a person reads).
#include "migration/report.h"

#include <string>

#include "ferry/v1/control.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

void AddTiming(ferry::v1::MigrationPhase phase, int64_t start, int64_t end, MigrationReport* r) {
  ferry::v1::PhaseTiming* t = r->add_phase_timings();
  t->set_phase(phase);
  t->set_start_unix_ms(start);
  t->set_end_unix_ms(end);
  t->set_duration_ms(static_cast<double>(end - start));
}

// A completed hybrid migration with some of each kind of figure.
MigrationReport Completed() {
  MigrationReport r;
  r.set_migration_id("mig-1");
  r.set_mode("hybrid");
  r.set_fault_mode("exit");
  r.set_backend("soft");
  r.set_memory_bytes(1ull << 30);
  r.set_vcpus(2);
  r.set_workload("zipf");
  r.set_outcome("completed");
  r.set_total_ms(3673.8);
  r.set_downtime_ms(4.03);
  r.set_switchover_reason("converged");
  r.set_precopy_rounds(2);
  r.set_precopy_ms(3000);
  r.set_postcopy_ms(600);
  r.set_pages_sent(262144);
  r.set_reconnects(1);
  r.set_auto_converge(true);
  r.set_max_throttle_percent(40);
  ferry::v1::ThrottleChange* c = r.add_throttle_changes();
  c->set_time_ms(1200);
  c->set_old_percent(20);
  c->set_new_percent(40);
  r.add_timeline_t_ms(100);
  r.add_timeline_ops_per_sec(1e6);
  r.add_timeline_phase("precopy");
  AddTiming(ferry::v1::MIGRATION_PHASE_SETUP, 1000, 1010, &r);
  AddTiming(ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED, 1010, 1500, &r);
  return r;
}

TEST(ReportJsonTest, HasEveryFieldOfTheMessageUnderItsName) {
  const std::string json = ReportJson(MigrationReport()).ToString();
  const auto* d = MigrationReport::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const std::string key = "\"" + d->field(i)->name() + "\":";
    if (d->field(i)->name() == "digest_match")
      EXPECT_THAT(json, Not(HasSubstr(key)));  // unset: absent
    else
      EXPECT_THAT(json, HasSubstr(key));
  }
}

TEST(ReportJsonTest, PhasesSpelledAsOperatorsReadThem) {
  const std::string json = ReportJson(Completed()).ToString();
  EXPECT_THAT(json, HasSubstr(R"("phase_timings":[{"phase":"setup","start_unix_ms":1000,)"
                              R"("end_unix_ms":1010,"duration_ms":10},)"
                              R"({"phase":"postcopy-paused",)"));
  EXPECT_THAT(json, HasSubstr(R"("timeline_t_ms":[100],"timeline_ops_per_sec":[1000000],)"
                              R"("timeline_phase":["precopy"])"));
  EXPECT_THAT(json, HasSubstr(R"("throttle_changes":[{"time_ms":1200,"old_percent":20,)"));
  EXPECT_THAT(json, HasSubstr(R"("migration_id":"mig-1")"));
}

TEST(ReportJsonTest, DigestMatchOnlyOnceSet) {
  MigrationReport r = Completed();
  EXPECT_THAT(ReportJson(r).ToString(), Not(HasSubstr("digest_match")));
  r.set_digest_match(true);
  EXPECT_THAT(ReportJson(r).ToString(), HasSubstr(R"("digest_match":true)"));
}

TEST(ReportTextTest, MentionsTheKeyFigures) {
  MigrationReport r = Completed();
  r.set_digest_match(false);
  const std::string text = ReportText(r);
  EXPECT_EQ(text.rfind("migration mig-1: completed\n", 0), 0u) << text;
  EXPECT_THAT(text, HasSubstr("hybrid, 1024 MiB, 2 vCPUs (soft), workload zipf, fault mode exit"));
  EXPECT_THAT(text, HasSubstr("total 3673.8 ms, downtime 4.03 ms"));
  EXPECT_THAT(text, HasSubstr("switchover: converged"));
  EXPECT_THAT(text, HasSubstr("re-established 1 times"));
  EXPECT_THAT(text, HasSubstr("precopy 2 rounds in 3000.0 ms"));
  EXPECT_THAT(text, HasSubstr("262144 pages"));
  EXPECT_THAT(text, HasSubstr("throttled up to 40%"));
  EXPECT_THAT(text, HasSubstr("at 1200 ms: throttle 20% -> 40%"));
  EXPECT_THAT(text, HasSubstr("memory digest vs reference run: MISMATCH"));
  EXPECT_THAT(text, Not(HasSubstr("fault stages")));  // no fetch, no stages
  r.set_fetch_rtt_p50_us(100);
  r.set_fetch_rtt_p99_us(900);
  // Blocking mode times no install per fault: no stages either.
  EXPECT_THAT(ReportText(r), Not(HasSubstr("fault stages")));
  r.set_source_service_p50_us(14);
  r.set_source_service_p99_us(160);
  r.set_fault_trap_p50_us(0.5);
  r.set_fault_trap_p99_us(1);
  r.set_fault_install_p50_us(15);
  r.set_fault_install_p99_us(170);
  r.set_send_path("copy (as configured)");
  const std::string with_stages = ReportText(r);
  EXPECT_THAT(with_stages,
              HasSubstr("fault stages p50 / p99: trap 0.5 / 1.0 us, fetch 100.0 / 900.0 us "
                        "(source 14.0 / 160.0 us of it), install 15.0 / 170.0 us"));
  EXPECT_THAT(with_stages, HasSubstr("frames: copy (as configured)"));
}

TEST(ReportTextTest, PhaseTimingsByName) {
  const std::string text = PhaseTimingsText(Completed().phase_timings());
  EXPECT_THAT(text, HasSubstr("  phase setup "));
  EXPECT_THAT(text, HasSubstr("  phase postcopy-paused "));
  EXPECT_THAT(text, HasSubstr("(490 ms)"));
}

TEST(ReportOfTest, TakesTheResourcesId) {
  ferry::v1::MigrationResource m;
  m.set_id("mig-2");
  m.mutable_report()->set_outcome("completed");
  const MigrationReport r = ReportOf(m);
  EXPECT_EQ(r.migration_id(), "mig-2");
  EXPECT_EQ(r.outcome(), "completed");
}

}  // namespace
}  // namespace ferry::migration
