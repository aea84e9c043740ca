#include "migration/agent/authz.h"

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry::agent {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

TEST(AuthzPolicy, PermissionsPerIdentityAndADefault) {
  ASSERT_OK_AND_ASSIGN(AuthzPolicy p, AuthzPolicy::Parse(R"(
# comment
operator = read, vm, migrate
monitor = read
admin = all
* = read
)",
                                                         "test"));
  EXPECT_OK(p.Check("operator", Permission::kMigrate, "start migrations"));
  EXPECT_OK(p.Check("admin", Permission::kVm, "create VMs"));
  EXPECT_OK(p.Check("monitor", Permission::kRead, "read"));
  EXPECT_THAT(p.Check("monitor", Permission::kVm, "create VMs"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("'monitor' may not create VMs: it lacks the 'vm' permission")));
  EXPECT_OK(p.Check("stranger", Permission::kRead, "read")) << "the * line";
  EXPECT_THAT(p.Check("stranger", Permission::kMigrate, "start migrations"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_OK(p.Check("", Permission::kRead, "read")) << "no certificate: the * line too";
}

TEST(AuthzPolicy, WithoutADefaultAnUnlistedIdentityMayDoNothing) {
  ASSERT_OK_AND_ASSIGN(AuthzPolicy p, AuthzPolicy::Parse("operator = all\n", "test"));
  EXPECT_THAT(p.Check("other", Permission::kRead, "read"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("'other' may not read")));
  EXPECT_THAT(p.Check("", Permission::kRead, "read"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("a client without a certificate")));
}

TEST(AuthzPolicy, DestinationsAreAnAllowList) {
  ASSERT_OK_AND_ASSIGN(AuthzPolicy p, AuthzPolicy::Parse(
                                          "operator = migrate\n"
                                          "destinations = 10.0.0.2:7070, 10.0.0.3:7070\n",
                                          "test"));
  EXPECT_OK(p.Check("operator", Permission::kMigrate, "start migrations", "10.0.0.3:7070"));
  EXPECT_THAT(p.Check("operator", Permission::kMigrate, "start migrations", "10.0.0.9:7070"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("may go only to 10.0.0.2:7070, 10.0.0.3:7070, not to "
                                 "10.0.0.9:7070")));
  EXPECT_OK(p.Check("operator", Permission::kMigrate, "recover migrations", ""))
      << "no destination named: the migration's own";
}

TEST(AuthzPolicy, BadFilesAreRefusedNamingTheLine) {
  EXPECT_THAT(AuthzPolicy::Parse("operator = read, fly\n", "policy"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("policy:1: unknown permission 'fly'")));
  EXPECT_THAT(AuthzPolicy::Parse("a = read\na = vm\n", "policy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("given twice")));
  EXPECT_THAT(AuthzPolicy::Parse("no equals sign\n", "policy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("policy:1")));
  EXPECT_THAT(AuthzPolicy::Read("/nonexistent/policy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--authz")));
}

}  // namespace
}  // namespace ferry::agent
