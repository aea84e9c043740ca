// AgentMetrics' counters across a migration's end: a migration counts with
// its live figures until its end is recorded, then with its final ones,
// never both and never neither, whatever phase the listing shows. (A
// counter that fell, e.g. when the session said "completed" before the
// agent recorded it, is a counter reset to Prometheus: rate() spikes.)
#include "migration/agent/agent_metrics.h"
#include "migration/agent/prometheus.h"

#include <string>

#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

// One unlabelled sample's value; -1 when absent.
double Value(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + name.size() + 2));
}

ferry::v1::MigrationResource Outgoing(ferry::v1::MigrationPhase phase, uint64_t bytes) {
  ferry::v1::MigrationResource r;
  r.set_id("mig-1");
  r.set_direction("outgoing");
  r.set_vm_name("web");
  r.set_phase(phase);
  r.mutable_progress()->set_bytes_sent(bytes);
  return r;
}

TEST(AgentMetricsTest, OutgoingBytesNeverFallAcrossTheEnd) {
  AgentMetrics m;
  auto bytes = [&](const std::vector<ferry::v1::MigrationResource>& listing) {
    return Value(m.Render({}, listing), "ferry_migration_bytes_sent_total");
  };
  EXPECT_EQ(bytes({Outgoing(ferry::v1::MIGRATION_PHASE_POSTCOPY, 100)}), 100);
  // The session says completed while the agent still releases the VM: not
  // recorded yet, so it still counts live.
  const auto ended = Outgoing(ferry::v1::MIGRATION_PHASE_COMPLETED, 110);
  EXPECT_EQ(bytes({ended}), 110);
  migration::MigrationReport report;
  report.set_bytes_sent(120);
  m.RecordOutgoing("mig-1", absl::OkStatus(), report);
  // A listing taken before the recording: counted finished only.
  EXPECT_EQ(bytes({Outgoing(ferry::v1::MIGRATION_PHASE_POSTCOPY, 105)}), 120);
  auto with_report = ended;
  with_report.mutable_report()->set_outcome("completed");
  EXPECT_EQ(bytes({with_report}), 120);
  EXPECT_EQ(bytes({}), 120);  // pruned
  EXPECT_EQ(bytes({with_report}), 120);  // a listing older than the pruning
  const std::string text = m.Render({}, {});
  EXPECT_EQ(Value(text, "ferry_migrations_finished_total{direction=\"outgoing\",outcome="
                        "\"completed\"}"),
            1);
}

TEST(AgentMetricsTest, IncomingFaultsAndPagesNeverFallAcrossTheEnd) {
  AgentMetrics m;
  ferry::v1::MigrationResource in;
  in.set_id("mig-2");
  in.set_direction("incoming");
  in.set_vm_name("web");
  in.set_phase(ferry::v1::MIGRATION_PHASE_POSTCOPY);
  in.mutable_progress()->set_faults(5);
  in.mutable_progress()->set_pages_transferred(50);
  std::string text = m.Render({}, {in});
  EXPECT_EQ(Value(text, "ferry_faults_total"), 5);
  EXPECT_EQ(Value(text, "ferry_migration_pages_received_total"), 50);
  vmm::DemandPagerStats pager;
  pager.fault_latency.total = 7;
  pager.pages_installed = 60;
  m.RecordIncoming("mig-2", /*completed=*/true, pager, {});
  // Recorded while the listing still shows it in postcopy: final figures only.
  text = m.Render({}, {in});
  EXPECT_EQ(Value(text, "ferry_faults_total"), 7);
  EXPECT_EQ(Value(text, "ferry_migration_pages_received_total"), 60);
  in.set_phase(ferry::v1::MIGRATION_PHASE_COMPLETED);
  text = m.Render({}, {in});
  EXPECT_EQ(Value(text, "ferry_faults_total"), 7);
  EXPECT_EQ(Value(text, "ferry_migration_pages_received_total"), 60);
}

TEST(AgentMetricsTest, ALoopbackMigrationCountsInBothDirections) {
  // The same id outgoing and incoming (an agent migrating to itself): each
  // direction's recording stops only its own live figures.
  AgentMetrics m;
  auto out = Outgoing(ferry::v1::MIGRATION_PHASE_POSTCOPY, 100);
  ferry::v1::MigrationResource in;
  in.set_id("mig-1");
  in.set_direction("incoming");
  in.set_phase(ferry::v1::MIGRATION_PHASE_POSTCOPY);
  in.mutable_progress()->set_pages_transferred(40);
  vmm::DemandPagerStats pager;
  pager.pages_installed = 45;
  m.RecordIncoming("mig-1", /*completed=*/true, pager, {});
  const std::string text = m.Render({}, {out, in});
  EXPECT_EQ(Value(text, "ferry_migration_bytes_sent_total"), 100);
  EXPECT_EQ(Value(text, "ferry_migration_pages_received_total"), 45);
}

// ferryd --state-dir's exposition: its own figures and each process's, a
// family's samples together under one HELP and TYPE, each process's
// samples labelled with its VM, in place of any vm label of its own (a
// label value may hold `}`, `,` and escaped quotes); a line that is no
// sample is dropped.
TEST(MergeExpositions, GathersEachFamilyAndLabelsEachPart) {
  const std::string own =
      "# HELP ferry_vmm_processes p.\n# TYPE ferry_vmm_processes gauge\nferry_vmm_processes 2\n";
  const std::string vmm =
      "# HELP ferry_vms VMs.\n# TYPE ferry_vms gauge\nferry_vms{state=\"running\"} 1\n"
      "# TYPE ferry_migration_progress_ratio gauge\n"
      "ferry_migration_progress_ratio{migration=\"m}\\\",vm=\\\"y\",vm=\"x\"} 0.5\n"
      "not a sample\n"
      "# HELP ferry_fault_latency_seconds f.\n# TYPE ferry_fault_latency_seconds histogram\n"
      "ferry_fault_latency_seconds_bucket{le=\"0.001\"} 3\n"
      "ferry_fault_latency_seconds_sum 0.002\nferry_fault_latency_seconds_count 3\n";
  const std::string merged =
      MergeExpositions({{own, {}}, {vmm, {{"vm", "a"}}}, {vmm, {{"vm", "b\"c"}}}});
  EXPECT_EQ(merged,
            "# HELP ferry_vmm_processes p.\n# TYPE ferry_vmm_processes gauge\n"
            "ferry_vmm_processes 2\n"
            "# HELP ferry_vms VMs.\n# TYPE ferry_vms gauge\n"
            "ferry_vms{vm=\"a\",state=\"running\"} 1\n"
            "ferry_vms{vm=\"b\\\"c\",state=\"running\"} 1\n"
            "# TYPE ferry_migration_progress_ratio gauge\n"
            "ferry_migration_progress_ratio{vm=\"a\",migration=\"m}\\\",vm=\\\"y\"} 0.5\n"
            "ferry_migration_progress_ratio{vm=\"b\\\"c\",migration=\"m}\\\",vm=\\\"y\"} 0.5\n"
            "# HELP ferry_fault_latency_seconds f.\n"
            "# TYPE ferry_fault_latency_seconds histogram\n"
            "ferry_fault_latency_seconds_bucket{vm=\"a\",le=\"0.001\"} 3\n"
            "ferry_fault_latency_seconds_sum{vm=\"a\"} 0.002\n"
            "ferry_fault_latency_seconds_count{vm=\"a\"} 3\n"
            "ferry_fault_latency_seconds_bucket{vm=\"b\\\"c\",le=\"0.001\"} 3\n"
            "ferry_fault_latency_seconds_sum{vm=\"b\\\"c\"} 0.002\n"
            "ferry_fault_latency_seconds_count{vm=\"b\\\"c\"} 3\n");
}

}  // namespace
}  // namespace ferry::agent
