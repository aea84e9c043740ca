// MigrationTable: StartMigration's idempotence by request id, and the
// retention of finished migrations by count and by age.
#include "migration/agent/migration_table.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::IsNull;

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

std::shared_ptr<OutgoingMigration> Migration(const std::string& id,
                                             const std::string& request_id = "") {
  auto m = std::make_shared<OutgoingMigration>();
  m->id = id;
  m->request_id = request_id;
  m->vm_name = "web";
  m->destination = "dest:7000";
  return m;
}

void Finish(OutgoingMigration& m, absl::Time when) {
  absl::MutexLock lock(&m.mu);
  m.done = true;
  m.finished = when;
}

TEST(MigrationTableTest, TheSameRequestFindsTheSameMigration) {
  MigrationTable t({});
  t.Add(Migration("mig-1", "req-1"));
  ASSERT_OK_AND_ASSIGN(auto same, t.FindRequest("req-1", "web", "dest:7000", {}));
  ASSERT_NE(same, nullptr);
  EXPECT_EQ(same->id, "mig-1");
  // A new id, and no id at all, are new requests.
  EXPECT_THAT(t.FindRequest("req-2", "web", "dest:7000", {}), IsOkAndHolds(IsNull()));
  EXPECT_THAT(t.FindRequest("", "web", "dest:7000", {}), IsOkAndHolds(IsNull()));
}

TEST(MigrationTableTest, TheSameRequestIdWithOtherParametersIsRefused) {
  MigrationTable t({});
  t.Add(Migration("mig-1", "req-1"));
  migration::MigrationOptions other;
  other.max_rounds = 99;
  EXPECT_THAT(t.FindRequest("req-1", "web", "dest:7000", other),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("mig-1 with other parameters: max rounds")));
  EXPECT_THAT(t.FindRequest("req-1", "web", "elsewhere:1", {}),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("destination dest:7000 (now elsewhere:1)")));
}

TEST(MigrationTableTest, FindsByIdAndCountsRunning) {
  MigrationTable t({});
  t.Add(Migration("mig-1"));
  t.Add(Migration("mig-2"));
  ASSERT_OK_AND_ASSIGN(auto m, t.Find("mig-2"));
  EXPECT_EQ(m->id, "mig-2");
  EXPECT_THAT(t.Find("mig-3"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("mig-3")));
  EXPECT_EQ(t.Running(), 2);
  Finish(*m, kNow);
  EXPECT_EQ(t.Running(), 1);
  EXPECT_EQ(t.All().size(), 2u);
}

TEST(MigrationTableTest, PrunesFinishedPastTheirAge) {
  MigrationTable t({.keep_finished = absl::Minutes(10), .keep_count = 100});
  auto old = Migration("old", "req-old");
  auto recent = Migration("recent");
  auto running = Migration("running");
  Finish(*old, kNow - absl::Minutes(11));
  Finish(*recent, kNow - absl::Minutes(9));
  t.Add(old);
  t.Add(recent);
  t.Add(running);
  auto gone = t.Prune(kNow);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0]->id, "old");
  EXPECT_THAT(t.Find("old"), StatusIs(absl::StatusCode::kNotFound));
  // Its request id went with it: the same id now starts a new migration.
  EXPECT_THAT(t.FindRequest("req-old", "web", "dest:7000", {}), IsOkAndHolds(IsNull()));
  EXPECT_EQ(t.All().size(), 2u);
}

TEST(MigrationTableTest, PrunesTheOldestFinishedPastTheCount) {
  MigrationTable t({.keep_finished = absl::Hours(1), .keep_count = 2});
  for (int i = 0; i < 4; ++i) {
    auto m = Migration(absl::StrCat("mig-", i));
    Finish(*m, kNow - absl::Minutes(10 - i));  // mig-0 is the oldest
    t.Add(m);
  }
  t.Add(Migration("running"));  // never pruned, never counted
  auto gone = t.Prune(kNow);
  ASSERT_EQ(gone.size(), 2u);
  EXPECT_EQ(gone[0]->id, "mig-0");
  EXPECT_EQ(gone[1]->id, "mig-1");
  EXPECT_OK(t.Find("mig-2").status());
  EXPECT_OK(t.Find("mig-3").status());
  EXPECT_OK(t.Find("running").status());
  EXPECT_TRUE(t.Prune(kNow).empty());
}

}  // namespace
}  // namespace ferry::agent
