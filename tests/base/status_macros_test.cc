#include "base/status_macros.h"

#include <memory>

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::ferry::testing::IsOk;
using ::ferry::testing::IsOkAndHolds;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

absl::Status FailIf(bool fail) {
  return fail ? absl::InvalidArgumentError("asked to fail") : absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<int>> MakeInt(bool fail, int value) {
  if (fail) return absl::NotFoundError("no int");
  return std::make_unique<int>(value);
}

int calls = 0;
absl::Status CountedCall() {
  ++calls;
  return absl::OkStatus();
}

absl::Status ChainReturn(bool fail) {
  RETURN_IF_ERROR(FailIf(fail));
  return absl::AbortedError("reached the end");
}

absl::StatusOr<int> ChainAssign(bool fail) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> p, MakeInt(fail, 7));  // move-only
  int existing = 0;
  ASSIGN_OR_RETURN(existing, absl::StatusOr<int>(*p + 1));
  return existing;
}

TEST(StatusMacros, ReturnIfErrorPropagatesFailure) {
  EXPECT_THAT(ChainReturn(true), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("asked to fail")));
  EXPECT_THAT(ChainReturn(false), StatusIs(absl::StatusCode::kAborted));
}

TEST(StatusMacros, ReturnIfErrorEvaluatesOnce) {
  calls = 0;
  auto f = []() -> absl::Status {
    RETURN_IF_ERROR(CountedCall());
    return absl::OkStatus();
  };
  EXPECT_THAT(f(), IsOk());
  EXPECT_EQ(calls, 1);
}

TEST(StatusMacros, AssignOrReturnMovesValueOrReturnsStatus) {
  EXPECT_THAT(ChainAssign(false), IsOkAndHolds(8));
  EXPECT_THAT(ChainAssign(true), StatusIs(absl::StatusCode::kNotFound));
}

TEST(StatusMatchers, MatchersReportMismatch) {
  EXPECT_FALSE(::testing::Matches(IsOk())(absl::InternalError("x")));
  EXPECT_FALSE(::testing::Matches(IsOkAndHolds(3))(absl::StatusOr<int>(4)));
  EXPECT_FALSE(::testing::Matches(StatusIs(absl::StatusCode::kInternal))(
      absl::OkStatus()));
}

}  // namespace
}  // namespace ferry
