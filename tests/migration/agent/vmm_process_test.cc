// The state directory's records and ferry-vmm's ready line (vmm_process.h):
// what a restarted ferryd re-adopts from, and what it refuses to.
#include "migration/agent/vmm_process.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

class VmmRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/ferry-record-XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    state_ = t;
    dir_ = VmmDir(state_, "web.0000abcd");
    ASSERT_EQ(mkdir((state_ + "/vmm").c_str(), 0700), 0);
    ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0);
  }
  void TearDown() override { RemoveVmmDir(state_); }

  void WriteRaw(const std::string& text) { std::ofstream(dir_ + "/record") << text; }

  std::string state_, dir_;
};

TEST_F(VmmRecordTest, ARecordRoundTripsAndIsOwnerOnly) {
  VmmRecord r;
  r.key = "web.0000abcd";
  r.name = "web";
  r.role = "incoming";
  r.migration_id = "mig-1";
  r.pid = 4242;
  r.migration_port = 7100;
  r.fetch_port = 7101;
  r.memory_bytes = 1ull << 30;
  r.max_memory_bytes = 4ull << 30;
  r.started_unix_ms = 1765000000000;
  ASSERT_OK(WriteRecord(dir_, r));
  ASSERT_OK_AND_ASSIGN(VmmRecord back, ReadRecord(dir_));
  EXPECT_EQ(back.key, r.key);
  EXPECT_EQ(back.name, r.name);
  EXPECT_EQ(back.role, r.role);
  EXPECT_EQ(back.migration_id, r.migration_id);
  EXPECT_EQ(back.pid, r.pid);
  EXPECT_EQ(back.migration_port, r.migration_port);
  EXPECT_EQ(back.fetch_port, r.fetch_port);
  EXPECT_EQ(back.memory_bytes, r.memory_bytes);
  EXPECT_EQ(back.max_memory_bytes, r.max_memory_bytes);
  EXPECT_EQ(back.started_unix_ms, r.started_unix_ms);
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/record").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> dirs, ListVmmDirs(state_));
  EXPECT_EQ(dirs, std::vector<std::string>{dir_});
}

TEST_F(VmmRecordTest, DamagedRecordsAreRefusedWithTheReason) {
  WriteRaw("key=web.0000abcd\nname=web\npid=notanumber\nmigration_port=7100\n");
  EXPECT_THAT(ReadRecord(dir_), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("pid")));
  WriteRaw("key=web.0000abcd\nname=web\npid=12\n");  // no port
  EXPECT_THAT(ReadRecord(dir_), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("incomplete")));
  WriteRaw("key=web.0000abcd\nname=web\npid=12\nmigration_port=70000\n");
  EXPECT_THAT(ReadRecord(dir_), StatusIs(absl::StatusCode::kDataLoss));
  WriteRaw(std::string(5000, 'x'));
  EXPECT_THAT(ReadRecord(dir_), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bytes")));
  RemoveVmmDir(dir_);
  EXPECT_FALSE(ReadRecord(dir_).ok());
}

TEST(ReadyLineTest, ParsesWhatFerryVmmPrintsAndNothingElse) {
  VmmRecord r;
  ASSERT_OK(ParseReadyLine(ReadyLine(321, 7100, 7101), &r));
  EXPECT_EQ(r.pid, 321);
  EXPECT_EQ(r.migration_port, 7100);
  EXPECT_EQ(r.fetch_port, 7101);
  EXPECT_FALSE(ParseReadyLine("ferry-vmm: cannot listen", &r).ok());
  EXPECT_FALSE(ParseReadyLine(ReadyLine(321, 0, 7101), &r).ok());
  EXPECT_FALSE(ParseReadyLine(ReadyLine(321, 7100, 70000), &r).ok());
}

TEST(VmmKeyTest, KeysNameTheVmAndDiffer) {
  const std::string a = NewVmmKey("web");
  const std::string b = NewVmmKey("web");
  EXPECT_EQ(a.rfind("web.", 0), 0u);
  EXPECT_EQ(a.size(), 4u + 8u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace ferry::agent
