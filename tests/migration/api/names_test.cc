// The API's spellings come from the .proto; the VMM's and the engine's own
// enum names must spell every value the same way.
#include "migration/api/names.h"

#include "base/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/options.h"
#include "vmm/demand_pager.h"
#include "vmm/workload.h"

namespace ferry::api {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ApiNames, SpellingsComeFromTheProto) {
  EXPECT_EQ(Spelling(ferry::v1::WORKLOAD_KIND_DIRTY_RATE), "dirty-rate");
  EXPECT_EQ(Spelling(ferry::v1::MIGRATION_MODE_HYBRID), "hybrid");
  EXPECT_EQ(Spelling(ferry::v1::FAULT_MODE_BLOCKING), "blocking");
  EXPECT_EQ(Spelling(ferry::v1::MIGRATION_PHASE_POSTCOPY), "postcopy");
  EXPECT_EQ(Spelling(ferry::v1::VM_STATE_MIGRATING), "migrating");
  EXPECT_EQ(Spelling(ferry::v1::WORKLOAD_KIND_UNSPECIFIED), "unknown");
  EXPECT_EQ(WorkloadKindChoices(), "idle, sequential, uniform, zipf, dirty-rate or hotset");
}

TEST(ApiNames, ErrorCodesAreNamedNeverNumbered) {
  EXPECT_EQ(ErrorCodeName(0), "");
  EXPECT_EQ(ErrorCodeName(static_cast<int>(absl::StatusCode::kUnavailable)), "unavailable");
  EXPECT_EQ(ErrorCodeName(static_cast<int>(absl::StatusCode::kNotFound)), "not_found");
  EXPECT_EQ(ErrorCodeName(static_cast<int>(absl::StatusCode::kCancelled)), "cancelled");
}

TEST(ApiNames, ParsingRoundTripsAndRefusesUnknownNames) {
  for (int k = 1; k <= 5; ++k) {
    const auto kind = static_cast<ferry::v1::WorkloadKind>(k);
    EXPECT_THAT(ParseWorkloadKind(Spelling(kind)), ::ferry::testing::IsOkAndHolds(kind));
  }
  EXPECT_THAT(ParseWorkloadKind("unspecified"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("choose idle")));
  EXPECT_THAT(ParseMigrationMode("live"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("choose precopy, postcopy or hybrid")));
  EXPECT_THAT(ParseFaultMode(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ApiNames, TheVmmAndTheEngineSpellEveryValueTheSameWay) {
  for (int k = 1; k <= 5; ++k)
    EXPECT_EQ(vmm::WorkloadKindName(static_cast<vmm::WorkloadKind>(k)),
              Spelling(static_cast<ferry::v1::WorkloadKind>(k)));
  EXPECT_EQ(vmm::FaultModeName(vmm::FaultMode::kExit), Spelling(ferry::v1::FAULT_MODE_EXIT));
  EXPECT_EQ(vmm::FaultModeName(vmm::FaultMode::kBlocking),
            Spelling(ferry::v1::FAULT_MODE_BLOCKING));
  for (int m = 1; m <= 3; ++m)
    EXPECT_EQ(migration::MigrationModeName(static_cast<migration::MigrationMode>(m)),
              Spelling(static_cast<ferry::v1::MigrationMode>(m)));
}

}  // namespace
}  // namespace ferry::api
