#include "base/errno_status.h"

#include <cerrno>

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(ErrnoStatus, NamesTheCallAndTheErrno) {
  EXPECT_THAT(ErrnoStatus("UFFDIO_COPY", EEXIST),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       AllOf(HasSubstr("UFFDIO_COPY"), HasSubstr("EEXIST"))));
}

TEST(ErrnoStatus, MapsCommonErrnos) {
  EXPECT_THAT(ErrnoStatus("open", ENOENT), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ErrnoStatus("ioctl", EINVAL),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ErrnoStatus("open", EACCES),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(ErrnoStatus("mmap", ENOMEM),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(ErrnoStatus("read", EAGAIN), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(ErrnoStatus("ioctl", ENOTTY),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(ErrnoStatus("x", EIO), StatusIs(absl::StatusCode::kInternal));
}

TEST(ErrnoStatus, ErrnoName) { EXPECT_EQ(ErrnoName(EAGAIN), "EAGAIN"); }

}  // namespace
}  // namespace ferry
