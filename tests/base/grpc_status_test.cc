#include "base/grpc_status.h"

#include "gtest/gtest.h"

namespace ferry {
namespace {

TEST(GrpcStatus, RoundTripsEveryCanonicalCode) {
  for (int code = 0; code <= 16; ++code) {
    absl::Status s(static_cast<absl::StatusCode>(code), code ? "why" : "");
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
}

TEST(GrpcStatus, KeepsTheMessage) {
  grpc::Status g = ToGrpcStatus(absl::NotFoundError("vm web-1 not found"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "vm web-1 not found");
}

}  // namespace
}  // namespace ferry
