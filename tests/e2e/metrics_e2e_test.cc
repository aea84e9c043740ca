// The metrics endpoint (ferryd --metrics-listen) through real agents and an
// independent HTTP client (Python's urllib): the exposition format, the
// figures of finished migrations, counters and per-migration gauges that
// move while a migration runs, and the process metrics.
#include <ctime>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/eventually.h"
#include "base/net.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ::testing::HasSubstr;

// GET with Python's urllib: a real, independent HTTP client. Returns
// "STATUS\nBODY".
std::string HttpGet(const std::string& url) {
  CliResult r = RunCommand(
      {"python3", "-c",
       "import sys, urllib.request, urllib.error\n"
       "try:\n"
       "  r = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
       "  print(r.status); sys.stdout.write(str(r.info())); sys.stdout.write(r.read().decode())\n"
       "except urllib.error.HTTPError as e:\n"
       "  print(e.code)\n",
       url});
  return r.out;
}

// One sample's value from Prometheus text ("name{labels} value"); -1 when
// the series is absent.
double Metric(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pa_ = FreePort();
    pb_ = FreePort();
    auto a = agent::AgentProcess::Start(
        Ferryd(), {"--metrics-listen", absl::StrCat("127.0.0.1:", pa_)}, TempDir() + "/ma.log");
    auto b = agent::AgentProcess::Start(
        Ferryd(), {"--metrics-listen", absl::StrCat("127.0.0.1:", pb_)}, TempDir() + "/mb.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }
  std::string Source() { return HttpGet(absl::StrCat("http://127.0.0.1:", pa_, "/metrics")); }
  std::string Destination() {
    return HttpGet(absl::StrCat("http://127.0.0.1:", pb_, "/metrics"));
  }

  int pa_ = 0, pb_ = 0;
  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(MetricsTest, FinishedMigrationsAreServedInPrometheusFormat) {
  ASSERT_EQ(RunCli({"vm", "create", "m", "--agent", a_->address(), "--memory", "64M",
                    "--workload", "zipf"}).exit_code, 0);
  ASSERT_EQ(RunCli({"migrate", "m", "--from", a_->address(), "--to", b_->address(), "--mode",
                    "postcopy"}).exit_code, 0);
  const std::string src = Source();
  ASSERT_EQ(src.substr(0, 4), "200\n") << src;
  EXPECT_THAT(src, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(src, HasSubstr("# TYPE ferry_migration_downtime_seconds histogram"));
  EXPECT_THAT(src, HasSubstr("# TYPE ferry_migrations_finished_total counter"));
  EXPECT_EQ(Metric(src, "ferry_migrations_finished_total{direction=\"outgoing\",outcome=\"completed\"}"), 1) << src;
  EXPECT_EQ(Metric(src, "ferry_migration_downtime_seconds_count"), 1) << src;
  EXPECT_EQ(Metric(src, "ferry_migration_blocktime_seconds_count{outcome=\"completed\"}"), 1);
  EXPECT_GT(Metric(src, "ferry_migration_bytes_sent_total"), 64 << 19);
  EXPECT_GT(Metric(src, "ferry_migration_pages_sent_total"), 0);
  EXPECT_EQ(Metric(src, "ferry_vms{state=\"running\"}"), 0);
  // The gauge counts migrations under way only: a finished one is in the
  // counter above, not in a gauge that grows with history.
  EXPECT_EQ(Metric(src, "ferry_migrations{direction=\"outgoing\",phase=\"postcopy\"}"), 0);
  EXPECT_THAT(src, Not(HasSubstr("phase=\"completed\"")));
  EXPECT_THAT(src, Not(HasSubstr("ferry_migration_progress_ratio{")));
  const std::string dst = Destination();
  ASSERT_EQ(dst.substr(0, 4), "200\n") << dst;
  EXPECT_EQ(Metric(dst, "ferry_vms{state=\"running\"}"), 1) << dst;
  EXPECT_EQ(Metric(dst, "ferry_migrations_finished_total{direction=\"incoming\",outcome=\"completed\"}"), 1);
  EXPECT_GT(Metric(dst, "ferry_faults_total"), 0) << dst;
  EXPECT_EQ(Metric(dst, "ferry_fault_latency_seconds_count"), Metric(dst, "ferry_faults_total"));
  EXPECT_EQ(Metric(dst, "ferry_fault_latency_seconds_bucket{le=\"+Inf\"}"),
            Metric(dst, "ferry_fault_latency_seconds_count"));
  EXPECT_GT(Metric(dst, "ferry_fetch_round_trip_seconds_count"), 0);
  EXPECT_EQ(Metric(dst, "ferry_migration_pages_received_total"), (64 << 20) / 4096) << dst;
  // Only GET /metrics.
  EXPECT_EQ(HttpGet(absl::StrCat("http://127.0.0.1:", pb_, "/other")).substr(0, 4), "404\n");
}

// While a (capped) postcopy migration runs, the counters move at both ends
// and each migration has its gauges, labelled by its id.
TEST_F(MetricsTest, CountersAndGaugesMoveWhileAMigrationRuns) {
  ASSERT_EQ(RunCli({"vm", "create", "live", "--agent", a_->address(), "--memory", "128M",
                    "--workload", "zipf"}).exit_code, 0);
  CliResult start = RunCli({"migrate", "live", "--from", a_->address(), "--to", b_->address(),
                            "--mode", "postcopy", "--max-bandwidth", "16M", "--detach"});
  ASSERT_EQ(start.exit_code, 0) << start.out;
  const std::string id = start.out.substr(0, start.out.find('\n'));
  const std::string label = "{migration=\"" + id + "\",vm=\"live\"";
  // The destination: faults and received pages counted before the end.
  std::string dst;
  EXPECT_TRUE(Eventually([&] {
    dst = Destination();
    return Metric(dst, "ferry_migrations{direction=\"incoming\",phase=\"postcopy\"}") == 1 &&
           Metric(dst, "ferry_faults_total") > 0 &&
           Metric(dst, "ferry_migration_pages_received_total") > 0;
  }, absl::Seconds(60))) << dst;
  EXPECT_EQ(Metric(dst, "ferry_migrations_finished_total{direction=\"incoming\",outcome=\"completed\"}"), 0);
  const double missing =
      Metric(dst, "ferry_migration_pages_remaining" + label + ",direction=\"incoming\"}");
  EXPECT_GT(missing, 0) << dst;
  // The source: bytes and pages grow between two scrapes while it runs.
  std::string src = Source();
  const double bytes = Metric(src, "ferry_migration_bytes_sent_total");
  EXPECT_GT(bytes, 0) << src;
  EXPECT_GT(Metric(src, "ferry_migration_pages_sent_total"), 0) << src;
  const double ratio =
      Metric(src, "ferry_migration_progress_ratio" + label + ",direction=\"outgoing\"}");
  EXPECT_GE(ratio, 0) << src;
  EXPECT_LE(ratio, 1) << src;
  EXPECT_GE(Metric(src, "ferry_migration_bandwidth_bytes_per_second" + label + "}"), 0) << src;
  EXPECT_TRUE(Eventually([&] {
    src = Source();
    return Metric(src, "ferry_migration_bytes_sent_total") > bytes ||
           Metric(src, "ferry_migrations_finished_total{direction=\"outgoing\",outcome=\"completed\"}") == 1;
  })) << src;
  CliResult done = RunCli({"migration", "watch", id, "--agent", a_->address()});
  EXPECT_EQ(done.exit_code, 0) << done.out;
}

TEST_F(MetricsTest, ProcessMetricsAreServed) {
  const std::string src = Source();
  EXPECT_THAT(src, HasSubstr("# TYPE process_cpu_seconds_total counter"));
  EXPECT_GT(Metric(src, "process_resident_memory_bytes"), 1 << 20) << src;
  EXPECT_GT(Metric(src, "process_virtual_memory_bytes"), 1 << 20);
  EXPECT_GT(Metric(src, "process_open_fds"), 2);
  EXPECT_GE(Metric(src, "process_max_fds"), Metric(src, "process_open_fds"));
  EXPECT_GT(Metric(src, "process_threads"), 1);
  const double start = Metric(src, "process_start_time_seconds");
  const double now = static_cast<double>(std::time(nullptr));
  // The kernel's boot time (btime, whole seconds) plus the process's start
  // in ticks, as Prometheus' process collector computes it: seconds off the
  // wall clock at most (more on a host whose clock was stepped).
  EXPECT_LE(start, now + 120) << std::fixed << start - now << " s after now";
  EXPECT_GT(start, now - 3600) << "the agent started in this test";
  EXPECT_GE(Metric(src, "process_cpu_seconds_total"), 0);
}

}  // namespace
}  // namespace ferry::e2e
