// gtest matchers for absl::Status and absl::StatusOr (abseil 20220623 has
// none). Test-only.
//
//   EXPECT_THAT(DoThing(), IsOk());
//   EXPECT_THAT(Parse("x"), StatusIs(absl::StatusCode::kInvalidArgument,
//                                    HasSubstr("malformed")));
//   EXPECT_THAT(Size(), IsOkAndHolds(4096));
//   ASSERT_OK_AND_ASSIGN(auto fd, Open());
#ifndef FERRY_BASE_STATUS_MATCHERS_H_
#define FERRY_BASE_STATUS_MATCHERS_H_

#include <ostream>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s;
  return s.ok();
}

MATCHER_P(IsOkAndHolds, value_matcher, "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(value_matcher, *arg, result_listener);
}

MATCHER_P(StatusIs, code, "has status code " + std::string(absl::StatusCodeToString(code))) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + std::string(absl::StatusCodeToString(code)) +
               " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::Matches(message_matcher)(std::string(s.message()));
}

}  // namespace ferry::testing

#define FERRY_TEST_CONCAT_INNER_(a, b) a##b
#define FERRY_TEST_CONCAT_(a, b) FERRY_TEST_CONCAT_INNER_(a, b)

// Asserts that `rexpr` (a StatusOr) is OK and moves its value into `lhs`.
#define ASSERT_OK_AND_ASSIGN(lhs, rexpr)                                 \
  auto FERRY_TEST_CONCAT_(ferry_test_so_, __LINE__) = (rexpr);          \
  ASSERT_TRUE(FERRY_TEST_CONCAT_(ferry_test_so_, __LINE__).ok())         \
      << FERRY_TEST_CONCAT_(ferry_test_so_, __LINE__).status();          \
  lhs = std::move(FERRY_TEST_CONCAT_(ferry_test_so_, __LINE__)).value()

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::ferry::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::ferry::testing::IsOk())

#endif  // FERRY_BASE_STATUS_MATCHERS_H_
