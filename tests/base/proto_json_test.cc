// ProtoToJson on ferry.v1 messages: every field without presence is
// written (zero when unset), an unset optional is absent, numbers stay
// numbers (64-bit too), enums are spelled as operators read them, repeated
// fields are arrays.
#include "base/proto_json.h"

#include <limits>
#include <string>

#include "ferry/v1/control.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ProtoJsonTest, ReportWithSomeFieldsSet) {
  ferry::v1::MigrationReport r;
  r.set_migration_id("mig-1");
  r.set_mode("hybrid");
  r.set_memory_bytes(1ull << 40);
  r.set_total_ms(12.5);
  r.set_impact_measured(true);
  r.add_blocktime_ms_per_vcpu(1.5);
  r.add_blocktime_ms_per_vcpu(2);
  r.add_timeline_phase("precopy");
  const std::string json = ProtoToJson(r).ToString();
  EXPECT_THAT(json, HasSubstr(R"("mode":"hybrid")"));
  EXPECT_THAT(json, HasSubstr(R"("memory_bytes":1099511627776)"));  // a number
  EXPECT_THAT(json, HasSubstr(R"("total_ms":12.5)"));
  EXPECT_THAT(json, HasSubstr(R"("impact_measured":true)"));
  EXPECT_THAT(json, HasSubstr(R"("blocktime_ms_per_vcpu":[1.5,2])"));
  EXPECT_THAT(json, HasSubstr(R"("timeline_phase":["precopy"])"));
  EXPECT_THAT(json, HasSubstr(R"("migration_id":"mig-1")"));
  // Unset fields without presence are written at zero; declaration order.
  EXPECT_THAT(json, HasSubstr(R"("fault_mode":"")"));
  EXPECT_THAT(json, HasSubstr(R"("vcpus":0)"));
  EXPECT_THAT(json, HasSubstr(R"("mgu_curve":[])"));
  EXPECT_EQ(json.rfind(R"({"mode":"hybrid","fault_mode":"","memory_bytes":)", 0), 0u) << json;
}

TEST(ProtoJsonTest, UnsetOptionalIsAbsentSetOneIsWritten) {
  ferry::v1::MigrationReport r;
  EXPECT_THAT(ProtoToJson(r).ToString(), Not(HasSubstr("digest_match")));
  r.set_digest_match(false);
  EXPECT_THAT(ProtoToJson(r).ToString(), HasSubstr(R"("digest_match":false)"));
}

TEST(ProtoJsonTest, NestedMessagesAndEnums) {
  ferry::v1::MigrationResource m;
  m.set_id("mig-2");
  m.set_phase(ferry::v1::MIGRATION_PHASE_COMPLETED);
  const std::string unset = ProtoToJson(m).ToString();
  EXPECT_THAT(unset, HasSubstr(R"("phase":"completed")"));
  EXPECT_THAT(unset, HasSubstr(R"("mode":"unspecified")"));
  EXPECT_THAT(unset, Not(HasSubstr(R"("report")")));  // a message field unset: absent
  m.mutable_report()->set_outcome("completed");
  EXPECT_THAT(ProtoToJson(m).ToString(), HasSubstr(R"("report":{"mode":"",)"));
  EXPECT_THAT(ProtoToJson(m).ToString(), HasSubstr(R"("outcome":"completed")"));
}

TEST(ProtoJsonTest, EnumsAreSpelledWithoutTheirTypesPrefix) {
  ferry::v1::PhaseTiming t;
  t.set_phase(ferry::v1::MIGRATION_PHASE_POSTCOPY_PAUSED);
  EXPECT_THAT(ProtoToJson(t).ToString(), HasSubstr(R"("phase":"postcopy-paused")"));
  ferry::v1::CreateVmRequest vm;
  vm.set_backend(ferry::v1::VM_BACKEND_KVM);
  EXPECT_THAT(ProtoToJson(vm).ToString(), HasSubstr(R"("backend":"kvm")"));
  // A number the enum does not know stays a number.
  t.set_phase(static_cast<ferry::v1::MigrationPhase>(99));
  EXPECT_THAT(ProtoToJson(t).ToString(), HasSubstr(R"("phase":99)"));
}

TEST(ProtoJsonTest, NonFiniteNumbersAreNull) {
  ferry::v1::MigrationReport r;
  r.set_precopy_gbps(std::numeric_limits<double>::infinity());
  EXPECT_THAT(ProtoToJson(r).ToString(), HasSubstr(R"("precopy_gbps":null)"));
}

}  // namespace
}  // namespace ferry
