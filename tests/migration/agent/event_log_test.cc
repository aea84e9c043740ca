#include "migration/agent/event_log.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

using ::testing::HasSubstr;

ferry::v1::Event Ev(ferry::v1::EventKind kind, const std::string& vm = "",
                    const std::string& migration = "") {
  ferry::v1::Event e;
  e.set_kind(kind);
  e.set_vm_name(vm);
  e.set_migration_id(migration);
  return e;
}

// A log whose wall clock reads `*now`.
EventLog::Options Opts(int64_t* now, std::vector<std::string>* lines, size_t capacity = 4096) {
  EventLog::Options o;
  o.capacity = capacity;
  o.now_unix_ms = [now] { return *now; };
  o.log = [lines](const std::string& l) { lines->push_back(l); };
  return o;
}

std::vector<ferry::v1::Event> ReadAll(EventLog::Subscription& sub) {
  std::vector<ferry::v1::Event> got;
  EXPECT_TRUE(sub.Next(absl::ZeroDuration(), &got));
  return got;
}

TEST(EventLogTest, StampsSequenceAndTimeInOrderAndLogsEachEvent) {
  int64_t now = 1000;
  std::vector<std::string> lines;
  EventLog log(Opts(&now, &lines));
  auto sub = log.Subscribe({}, /*since_sequence=*/0);
  EXPECT_EQ(log.Publish(Ev(ferry::v1::EVENT_KIND_VM_CREATED, "web")), 1u);
  now = 900;  // the wall clock stepped back: times do not
  ferry::v1::Event phase = Ev(ferry::v1::EVENT_KIND_PHASE_CHANGED, "web", "m1");
  phase.set_from_phase(ferry::v1::MIGRATION_PHASE_SETUP);
  phase.set_to_phase(ferry::v1::MIGRATION_PHASE_PRECOPY);
  EXPECT_EQ(log.Publish(phase), 2u);
  std::vector<ferry::v1::Event> got = ReadAll(*sub);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].sequence(), 1u);
  EXPECT_EQ(got[0].time_unix_ms(), 1000);
  EXPECT_EQ(got[1].sequence(), 2u);
  EXPECT_EQ(got[1].time_unix_ms(), 1000);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr("event=event.vm_created seq=1 vm=web"));
  EXPECT_THAT(lines[1], HasSubstr("event=event.phase_changed seq=2"));
  EXPECT_THAT(lines[1], HasSubstr("from=setup to=precopy"));
}

TEST(EventLogTest, SinceZeroSeesOnlyNewEventsAndSinceNReplays) {
  int64_t now = 1;
  std::vector<std::string> lines;
  EventLog log(Opts(&now, &lines));
  for (int i = 0; i < 3; ++i) log.Publish(Ev(ferry::v1::EVENT_KIND_VM_CREATED));
  auto fresh = log.Subscribe({}, 0);
  auto from2 = log.Subscribe({}, 2);
  log.Publish(Ev(ferry::v1::EVENT_KIND_VM_DELETED));
  std::vector<ferry::v1::Event> a = ReadAll(*fresh), b = ReadAll(*from2);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].sequence(), 4u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].sequence(), 2u);
  EXPECT_EQ(b[2].sequence(), 4u);
}

TEST(EventLogTest, FiltersByVmAndMigration) {
  int64_t now = 1;
  std::vector<std::string> lines;
  EventLog log(Opts(&now, &lines));
  auto by_vm = log.Subscribe({.vm_name = "a"}, 0);
  auto by_migration = log.Subscribe({.migration_id = "m2"}, 0);
  auto both = log.Subscribe({.vm_name = "a", .migration_id = "m2"}, 0);
  log.Publish(Ev(ferry::v1::EVENT_KIND_VM_CREATED, "a"));
  log.Publish(Ev(ferry::v1::EVENT_KIND_MIGRATION_STARTED, "a", "m1"));
  log.Publish(Ev(ferry::v1::EVENT_KIND_MIGRATION_STARTED, "b", "m2"));
  log.Publish(Ev(ferry::v1::EVENT_KIND_MIGRATION_STARTED, "a", "m2"));
  std::vector<ferry::v1::Event> v = ReadAll(*by_vm), m = ReadAll(*by_migration),
                                ab = ReadAll(*both);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[2].sequence(), 4u);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].sequence(), 3u);
  ASSERT_EQ(ab.size(), 1u);
  EXPECT_EQ(ab[0].sequence(), 4u);
}

TEST(EventLogTest, ASubscriberBehindTheRingIsToldHowManyEventsItLost) {
  int64_t now = 1;
  std::vector<std::string> lines;
  EventLog log(Opts(&now, &lines, /*capacity=*/4));
  auto sub = log.Subscribe({}, 0);
  for (int i = 0; i < 10; ++i) log.Publish(Ev(ferry::v1::EVENT_KIND_VM_CREATED));
  std::vector<ferry::v1::Event> got = ReadAll(*sub);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].kind(), ferry::v1::EVENT_KIND_EVENTS_LOST);
  EXPECT_EQ(got[0].lost(), 6u);  // 1..6 dropped
  EXPECT_EQ(got[0].sequence(), 6u);
  EXPECT_THAT(got[0].message(), HasSubstr("events lost: 6"));
  for (size_t i = 1; i < got.size(); ++i) EXPECT_EQ(got[i].sequence(), 6 + i);
  // A replay from before the ring is told the same way.
  auto replay = log.Subscribe({}, 1);
  got = ReadAll(*replay);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].lost(), 6u);
}

TEST(EventLogTest, ManySubscribersEachGetEveryEventInOrder) {
  EventLog log({});
  constexpr int kReaders = 8, kPublishers = 4, kEach = 500;
  std::vector<std::unique_ptr<EventLog::Subscription>> subs;
  for (int i = 0; i < kReaders; ++i) subs.push_back(log.Subscribe({}, 0));
  std::vector<std::vector<uint64_t>> seen(kReaders);
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i)
    readers.emplace_back([&, i] {
      std::vector<ferry::v1::Event> got;
      while (seen[i].size() < kPublishers * kEach && subs[i]->Next(absl::Seconds(1), &got)) {
        for (const auto& e : got) seen[i].push_back(e.sequence());
        got.clear();
      }
    });
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p)
    publishers.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) log.Publish(Ev(ferry::v1::EVENT_KIND_VM_RESUMED));
    });
  for (auto& t : publishers) t.join();
  for (auto& t : readers) t.join();
  for (int i = 0; i < kReaders; ++i) {
    ASSERT_EQ(seen[i].size(), static_cast<size_t>(kPublishers * kEach)) << "reader " << i;
    for (size_t j = 0; j < seen[i].size(); ++j) EXPECT_EQ(seen[i][j], j + 1);
  }
}

TEST(EventLogTest, CancelWakesABlockedReader) {
  EventLog log({});
  auto sub = log.Subscribe({}, 0);
  std::atomic<bool> returned{false};
  bool result = true;
  std::thread reader([&] {
    std::vector<ferry::v1::Event> got;
    result = sub->Next(absl::InfiniteDuration(), &got);
    returned = true;
  });
  sub->Cancel();
  reader.join();  // would hang if Cancel did not wake it
  EXPECT_TRUE(returned);
  EXPECT_FALSE(result);
}

TEST(EventLogTest, CloseEndsSubscriptionsAfterWhatWasPublished) {
  EventLog log({});
  auto sub = log.Subscribe({}, 0);
  std::thread reader([&] {
    std::vector<ferry::v1::Event> got;
    while (sub->Next(absl::InfiniteDuration(), &got)) {
    }
    EXPECT_EQ(got.size(), 1u);
  });
  log.Publish(Ev(ferry::v1::EVENT_KIND_VM_CREATED));
  log.Close();
  reader.join();
  std::vector<ferry::v1::Event> got;
  EXPECT_FALSE(log.Subscribe({}, 0)->Next(absl::InfiniteDuration(), &got));
}

}  // namespace
}  // namespace ferry::agent
