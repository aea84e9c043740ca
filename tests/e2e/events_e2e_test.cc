// The agents' events and per-phase timings through the real binaries: a
// watcher on each agent sees a whole migration in order (the VM's
// lifecycle, every phase change of that agent's side, a parameter change,
// forced postcopy, the end, and refused requests); both agents' records of
// the completed migration carry contiguous phase timings; `ferry events`
// prints the same stream; and a watcher does not hold up ferryd's exit.
//
// Nothing is timed: the waits below are bounds on a hang only.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/agent_harness.h"

namespace ferry::e2e {
namespace {

using ferry::v1::Event;
using ::testing::HasSubstr;

// Streams one agent's events (WatchEvents) on a thread of its own.
class Watcher {
 public:
  Watcher(ferry::v1::Control::Stub& stub, uint64_t since_sequence) {
    ferry::v1::WatchEventsRequest r;
    r.set_since_sequence(since_sequence);
    reader_ = stub.WatchEvents(&ctx_, r);
    thread_ = std::thread([this] {
      Event e;
      while (reader_->Read(&e)) {
        std::lock_guard<std::mutex> lock(mu_);
        events_.push_back(e);
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
      cv_.notify_all();
    });
  }
  ~Watcher() { Stop(); }

  // The events so far, once `done` holds for them (or the stream ended, or
  // a minute passed: a hang, which the caller's assertions then show).
  std::vector<Event> WaitFor(const std::function<bool(const std::vector<Event>&)>& done) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::minutes(1), [&] { return ended_ || done(events_); });
    return events_;
  }
  // Waits for the stream to end by itself; its status.
  grpc::Status AwaitEnd() {
    if (thread_.joinable()) thread_.join();
    return reader_->Finish();
  }
  void Stop() {
    if (!thread_.joinable()) return;
    ctx_.TryCancel();
    thread_.join();
    (void)reader_->Finish();
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<Event>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Event> events_;
  bool ended_ = false;
};

bool Has(const std::vector<Event>& events, const std::function<bool(const Event&)>& match) {
  for (const Event& e : events)
    if (match(e)) return true;
  return false;
}

// The position of each phase in a migration's course (phases.h).
int Rank(ferry::v1::MigrationPhase p) {
  switch (p) {
    case ferry::v1::MIGRATION_PHASE_SETUP:
      return 1;
    case ferry::v1::MIGRATION_PHASE_PRECOPY:
      return 2;
    case ferry::v1::MIGRATION_PHASE_SWITCHOVER:
      return 3;
    case ferry::v1::MIGRATION_PHASE_POSTCOPY:
      return 4;
    case ferry::v1::MIGRATION_PHASE_COMPLETED:
      return 5;
    default:
      return 0;
  }
}

// The phase changes of migration `id` on `side`, in order.
std::vector<Event> PhaseChanges(const std::vector<Event>& events, const std::string& id,
                                const std::string& side) {
  std::vector<Event> out;
  for (const Event& e : events)
    if (e.kind() == ferry::v1::EVENT_KIND_PHASE_CHANGED && e.migration_id() == id &&
        e.side() == side)
      out.push_back(e);
  return out;
}

std::vector<ferry::v1::MigrationPhase> ToPhases(const std::vector<Event>& changes) {
  std::vector<ferry::v1::MigrationPhase> out;
  for (const Event& e : changes) out.push_back(e.to_phase());
  return out;
}

// Sequence numbers strictly increase, times never go back; phase changes
// chain (each from the last one's to), in the course's order, ending in
// completed.
void ExpectOrdered(const std::vector<Event>& events, const std::string& id,
                   const std::string& side) {
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_GT(events[i].sequence(), events[i - 1].sequence()) << side << " event " << i;
    EXPECT_GE(events[i].time_unix_ms(), events[i - 1].time_unix_ms()) << side << " event " << i;
  }
  const std::vector<Event> changes = PhaseChanges(events, id, side);
  ASSERT_FALSE(changes.empty()) << side;
  for (size_t i = 1; i < changes.size(); ++i) {
    EXPECT_EQ(changes[i].from_phase(), changes[i - 1].to_phase()) << side << " change " << i;
    EXPECT_GT(Rank(changes[i].to_phase()), Rank(changes[i - 1].to_phase()))
        << side << " change " << i;
  }
  EXPECT_EQ(changes.back().to_phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << side;
}

// The record's phase timings: contiguous, non-overlapping, in order.
void ExpectTimings(const ferry::v1::MigrationResource& m,
                   const std::vector<ferry::v1::MigrationPhase>& phases) {
  const auto& t = m.report().phase_timings();
  ASSERT_EQ(t.size(), static_cast<int>(phases.size())) << m.direction() << m.DebugString();
  for (int i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].phase(), phases[i]) << m.direction() << " phase " << i;
    EXPECT_GT(t[i].start_unix_ms(), 0);
    EXPECT_LE(t[i].start_unix_ms(), t[i].end_unix_ms()) << m.direction() << " phase " << i;
    EXPECT_EQ(t[i].duration_ms(), t[i].end_unix_ms() - t[i].start_unix_ms());
    if (i > 0) {
      EXPECT_EQ(t[i].start_unix_ms(), t[i - 1].end_unix_ms()) << m.direction() << i;
    }
  }
}

class EventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/events-a.log");
    auto b = agent::AgentProcess::Start(Ferryd(), {}, TempDir() + "/events-b.log");
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    a_ = std::make_unique<agent::AgentProcess>(std::move(*a));
    b_ = std::make_unique<agent::AgentProcess>(std::move(*b));
  }
  std::unique_ptr<agent::AgentProcess> a_, b_;
};

TEST_F(EventsTest, BothAgentsStreamAWholeMigrationInOrderWithPhaseTimings) {
  const std::string a = a_->address(), b = b_->address();
  auto stub_a = Stub(a), stub_b = Stub(b);
  // From sequence 1: everything each agent published, whenever the stream
  // is set up.
  Watcher wa(*stub_a, 1), wb(*stub_b, 1);

  ASSERT_EQ(RunCli({"vm", "create", "ev", "--agent", a, "--memory", "64M", "--workload", "idle"})
                .exit_code,
            0);
  CliResult d = RunCli({"migrate", "ev", "--from", a, "--to", b, "--mode", "hybrid",
                        "--max-bandwidth", "4M", "--detach"});
  ASSERT_EQ(d.exit_code, 0) << d.out;
  const std::string id = d.out.substr(0, d.out.size() - 1);
  ferry::v1::MigrationResource m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_PRECOPY);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_PRECOPY) << m.error();
  CliResult pc = RunCli({"migration", "postcopy", id, "--agent", a});
  ASSERT_EQ(pc.exit_code, 0) << pc.out;
  CliResult lift = RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "0"});
  ASSERT_EQ(lift.exit_code, 0) << lift.out;
  m = AwaitPhase(*stub_a, id, ferry::v1::MIGRATION_PHASE_UNSPECIFIED);
  ASSERT_EQ(m.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED) << m.error();
  ferry::v1::MigrationResource in = AwaitPhase(*stub_b, id, ferry::v1::MIGRATION_PHASE_COMPLETED);
  ASSERT_EQ(in.phase(), ferry::v1::MIGRATION_PHASE_COMPLETED);

  // Refused requests: a change to a migration that ended, at the source;
  // an unknown migration, at the destination.
  EXPECT_EQ(RunCli({"migration", "set", id, "--agent", a, "--max-bandwidth", "1M"}).exit_code, 6);
  EXPECT_EQ(RunCli({"migration", "get", "mig-nope", "--agent", b}).exit_code, 4);

  auto refused = [](const std::string& rpc, const std::string& code) {
    return [=](const Event& e) {
      return e.kind() == ferry::v1::EVENT_KIND_REQUEST_REFUSED && e.rpc() == rpc &&
             e.code() == code;
    };
  };
  auto ended = [&](const Event& e) {
    return e.kind() == ferry::v1::EVENT_KIND_MIGRATION_ENDED && e.migration_id() == id;
  };
  const std::vector<Event> ea = wa.WaitFor([&](const std::vector<Event>& es) {
    return Has(es, refused("SetMigrationParameters", "FAILED_PRECONDITION")) && Has(es, ended);
  });
  const std::vector<Event> eb = wb.WaitFor([&](const std::vector<Event>& es) {
    return Has(es, refused("GetMigration", "NOT_FOUND")) && Has(es, ended);
  });

  // The source: created, started, each phase, the forced postcopy and the
  // lifted cap, the end, and the VM gone from here.
  ASSERT_FALSE(ea.empty());
  EXPECT_EQ(ea[0].sequence(), 1u);
  ExpectOrdered(ea, id, "source");
  EXPECT_THAT(ToPhases(PhaseChanges(ea, id, "source")),
              ::testing::ElementsAre(
                  ferry::v1::MIGRATION_PHASE_SETUP, ferry::v1::MIGRATION_PHASE_PRECOPY,
                  ferry::v1::MIGRATION_PHASE_SWITCHOVER, ferry::v1::MIGRATION_PHASE_POSTCOPY,
                  ferry::v1::MIGRATION_PHASE_COMPLETED));
  std::map<ferry::v1::EventKind, size_t> first_a;  // kind -> index of its first event
  for (size_t i = 0; i < ea.size(); ++i)
    if ((ea[i].vm_name() == "ev" || ea[i].migration_id() == id) && !first_a.count(ea[i].kind()))
      first_a[ea[i].kind()] = i;
  for (auto kind : {ferry::v1::EVENT_KIND_VM_CREATED, ferry::v1::EVENT_KIND_MIGRATION_STARTED,
                    ferry::v1::EVENT_KIND_POSTCOPY_FORCED, ferry::v1::EVENT_KIND_PARAMETER_CHANGED,
                    ferry::v1::EVENT_KIND_MIGRATION_ENDED, ferry::v1::EVENT_KIND_VM_DELETED})
    ASSERT_TRUE(first_a.count(kind)) << "source lacks " << ferry::v1::EventKind_Name(kind);
  EXPECT_LT(first_a[ferry::v1::EVENT_KIND_VM_CREATED],
            first_a[ferry::v1::EVENT_KIND_MIGRATION_STARTED]);
  EXPECT_LT(first_a[ferry::v1::EVENT_KIND_MIGRATION_STARTED],
            first_a[ferry::v1::EVENT_KIND_PHASE_CHANGED]);
  EXPECT_LT(first_a[ferry::v1::EVENT_KIND_POSTCOPY_FORCED],
            first_a[ferry::v1::EVENT_KIND_MIGRATION_ENDED]);
  const Event& cap = ea[first_a[ferry::v1::EVENT_KIND_PARAMETER_CHANGED]];
  EXPECT_EQ(cap.parameter(), "max_bandwidth");
  EXPECT_EQ(cap.old_value(), 4 << 20);
  EXPECT_EQ(cap.new_value(), 0);
  EXPECT_EQ(ea[first_a[ferry::v1::EVENT_KIND_MIGRATION_ENDED]].outcome(), "completed");
  EXPECT_THAT(ea[first_a[ferry::v1::EVENT_KIND_VM_DELETED]].message(), HasSubstr("migrated to"));

  // The destination: admitted, its own phases, the VM arrived, the end.
  ASSERT_FALSE(eb.empty());
  ExpectOrdered(eb, id, "destination");
  EXPECT_THAT(ToPhases(PhaseChanges(eb, id, "destination")),
              ::testing::ElementsAre(ferry::v1::MIGRATION_PHASE_PRECOPY,
                                     ferry::v1::MIGRATION_PHASE_POSTCOPY,
                                     ferry::v1::MIGRATION_PHASE_COMPLETED));
  EXPECT_EQ(PhaseChanges(eb, id, "destination")[0].from_phase(), ferry::v1::MIGRATION_PHASE_SETUP);
  EXPECT_TRUE(Has(eb, [&](const Event& e) {
    return e.kind() == ferry::v1::EVENT_KIND_MIGRATION_ADMITTED && e.migration_id() == id &&
           e.vm_name() == "ev";
  }));
  EXPECT_TRUE(Has(eb, [&](const Event& e) {
    return e.kind() == ferry::v1::EVENT_KIND_VM_CREATED && e.migration_id() == id &&
           e.vm_name() == "ev";
  }));

  // Per-phase timing at both ends, from the same hook.
  ExpectTimings(GetMigration(*stub_a, id),
                {ferry::v1::MIGRATION_PHASE_SETUP, ferry::v1::MIGRATION_PHASE_PRECOPY,
                 ferry::v1::MIGRATION_PHASE_SWITCHOVER, ferry::v1::MIGRATION_PHASE_POSTCOPY});
  ExpectTimings(GetMigration(*stub_b, id),
                {ferry::v1::MIGRATION_PHASE_SETUP, ferry::v1::MIGRATION_PHASE_PRECOPY,
                 ferry::v1::MIGRATION_PHASE_POSTCOPY});
  CliResult get_a = RunCli({"migration", "get", id, "--agent", a});
  EXPECT_EQ(get_a.exit_code, 0) << get_a.out;
  EXPECT_THAT(get_a.out, HasSubstr("phase switchover"));
  CliResult get_b = RunCli({"migration", "get", id, "--agent", b, "--json"});
  EXPECT_EQ(get_b.exit_code, 0) << get_b.out;
  EXPECT_THAT(get_b.out, HasSubstr("\"phase_timings\":[{\"phase\":\"setup\""));

  // The CLI prints the same stream: the destination's phase changes.
  CliResult cli =
      RunCli({"events", "--agent", b, "--migration", id, "--since", "1", "--count", "3", "--json"});
  EXPECT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_THAT(cli.out, HasSubstr("\"kind\":\"migration-admitted\""));
  EXPECT_THAT(cli.out, HasSubstr("\"to_phase\":\"precopy\""));
  CliResult text = RunCli({"events", "--agent", a, "--vm", "ev", "--since", "1", "--count", "1"});
  EXPECT_EQ(text.exit_code, 0) << text.out;
  EXPECT_THAT(text.out, HasSubstr("vm-created"));
}

TEST_F(EventsTest, AWatcherDoesNotHoldUpTheAgentsExit) {
  auto stub = Stub(a_->address());
  Watcher w(*stub, 1);
  CreateVm(*stub, VmRequest("sig", "idle"));
  // The stream is live once it delivered the VM's creation.
  std::vector<Event> got = w.WaitFor([](const std::vector<Event>& es) { return !es.empty(); });
  ASSERT_FALSE(got.empty());
  ASSERT_TRUE(a_->Signal(SIGTERM));
  // ferryd ends the stream itself (OK, not cancelled by a server deadline)
  // and exits cleanly.
  grpc::Status s = w.AwaitEnd();
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  std::optional<int> status = a_->Wait(60000);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
}

}  // namespace
}  // namespace ferry::e2e
