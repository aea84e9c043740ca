#include "sys/io_uring.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "base/status_matchers.h"
#include "base/unique_fd.h"
#include "gtest/gtest.h"

namespace ferry::sys {
namespace {

using ::ferry::testing::StatusIs;

struct SocketPair {
  UniqueFd a, b;
};
SocketPair MakePair() {
  int fds[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

class IoUringTest : public ::testing::TestWithParam<bool> {};

TEST_P(IoUringTest, LinkedSendThenRecvRoundTrip) {
  ASSERT_OK_AND_ASSIGN(auto ring, IoUring::Create(8, GetParam()));
  SocketPair p = MakePair();
  const char request[] = "ping";
  char reply[16] = {};
  ASSERT_OK(ring->PrepareSend(p.a.get(), request, 4, 1, /*link=*/true));
  ASSERT_OK(ring->PrepareRecv(p.a.get(), reply, sizeof(reply), 2));
  ASSERT_OK(ring->SubmitAndWait(0));
  // The peer answers.
  char got[4];
  ASSERT_EQ(read(p.b.get(), got, 4), 4);
  EXPECT_EQ(std::memcmp(got, "ping", 4), 0);
  ASSERT_EQ(write(p.b.get(), "pong", 4), 4);
  ASSERT_OK(ring->SubmitAndWait(2));
  std::map<uint64_t, int32_t> results;
  IoCompletion c;
  while (ring->PopCompletion(&c)) results[c.tag] = c.result;
  EXPECT_EQ(results[1], 4);
  EXPECT_EQ(results[2], 4);
  EXPECT_EQ(std::memcmp(reply, "pong", 4), 0);
  EXPECT_FALSE(ring->PopCompletion(&c));
}

TEST_P(IoUringTest, ErrorsArriveAsNegativeResults) {
  ASSERT_OK_AND_ASSIGN(auto ring, IoUring::Create(4, GetParam()));
  char buf[4];
  ASSERT_OK(ring->PrepareRecv(/*fd=*/-1, buf, sizeof(buf), 7));
  ASSERT_OK(ring->SubmitAndWait(1));
  IoCompletion c;
  ASSERT_TRUE(ring->PopCompletion(&c));
  EXPECT_EQ(c.tag, 7u);
  EXPECT_LT(c.result, 0);
  EXPECT_THAT(IoUring::CompletionError("recv", c.result),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(IoUring::CompletionError("recv", 3));
}

TEST_P(IoUringTest, WaitTimesOutWhenNothingCompletes) {
  ASSERT_OK_AND_ASSIGN(auto ring, IoUring::Create(4, GetParam()));
  SocketPair p = MakePair();
  char buf[4];
  ASSERT_OK(ring->PrepareRecv(p.a.get(), buf, sizeof(buf), 1));
  EXPECT_THAT(ring->SubmitAndWait(1, 5'000'000),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_OK(ring->PrepareCancel(1, 2));
  ASSERT_OK(ring->SubmitAndWait(2));
  IoCompletion c;
  int seen = 0;
  while (ring->PopCompletion(&c)) ++seen;
  EXPECT_EQ(seen, 2);
}

TEST_P(IoUringTest, QueueDepthIsBoundedButFlushes) {
  ASSERT_OK_AND_ASSIGN(auto ring, IoUring::Create(2, GetParam()));
  SocketPair p = MakePair();
  char byte = 'x';
  for (int i = 0; i < 5; ++i) ASSERT_OK(ring->PrepareSend(p.a.get(), &byte, 1, i));
  ASSERT_OK(ring->SubmitAndWait(0));
  int done = 0;
  IoCompletion c;
  while (done < 5) {
    ASSERT_OK(ring->SubmitAndWait(1));
    while (ring->PopCompletion(&c)) {
      EXPECT_EQ(c.result, 1);
      ++done;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Setups, IoUringTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "SingleIssuer" : "Plain";
                         });

}  // namespace
}  // namespace ferry::sys
