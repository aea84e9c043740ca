#include "base/net.h"

#include "gtest/gtest.h"

namespace ferry {
namespace {

TEST(IsLoopbackHost, LoopbackAddressesAndLocalhostAre) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
}

// Judged on the resolved address, not the spelling: a name that starts
// like a loopback address is not loopback unless it resolves to one (the
// review's "127.ferry-test" resolved to a routable address).
TEST(IsLoopbackHost, OthersAreNot) {
  EXPECT_FALSE(IsLoopbackHost(""));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("[::]"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("::ffff:10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("127.ferry-test.invalid"));  // does not resolve
  EXPECT_FALSE(IsLoopbackHost("127.0.0.1.invalid"));
}

}  // namespace
}  // namespace ferry
