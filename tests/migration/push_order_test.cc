// The postcopy push order: each owed page is taken exactly once (push or
// demand), pages after a recent fault go first, then the rest in order.
#include "migration/push_order.h"

#include <algorithm>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

TEST(PostcopyPushOrder, EveryOwedPageIsPushedOnce) {
  PostcopyPushOrder order(1000);
  for (uint64_t p = 0; p < 1000; p += 3) order.MarkUnsent(p);
  const uint64_t owed = order.left();
  EXPECT_EQ(owed, 334u);
  std::multiset<uint64_t> pushed;
  std::vector<uint64_t> batch;
  while (order.left() > 0) {
    order.NextBatch(64, &batch);
    EXPECT_LE(batch.size(), 64u);
    pushed.insert(batch.begin(), batch.end());
  }
  EXPECT_EQ(pushed.size(), owed);
  for (uint64_t p : pushed) {
    EXPECT_EQ(p % 3, 0u);
    EXPECT_EQ(pushed.count(p), 1u);
  }
}

TEST(PostcopyPushOrder, PagesAfterARecentFaultGoFirst) {
  PostcopyPushOrder order(1000);
  for (uint64_t p = 0; p < 1000; ++p) order.MarkUnsent(p);
  ASSERT_TRUE(order.Take(500));  // served on demand
  order.RecordFault(500);
  std::vector<uint64_t> batch;
  order.NextBatch(64, &batch);
  ASSERT_EQ(batch.size(), 64u);
  for (uint64_t i = 0; i < PostcopyPushOrder::kFaultWindow; ++i) EXPECT_EQ(batch[i], 501 + i);
  EXPECT_EQ(batch[PostcopyPushOrder::kFaultWindow], 0u);  // then the rest, from the start
}

TEST(PostcopyPushOrder, DemandAndPushNeverTakeTheSamePage) {
  constexpr uint64_t kPages = 1 << 16;
  PostcopyPushOrder order(kPages);
  for (uint64_t p = 0; p < kPages; ++p) order.MarkUnsent(p);
  std::vector<uint64_t> demand;
  std::thread server([&] {
    for (uint64_t p = kPages - 1; p > 0; p -= 7) {
      if (order.Take(p)) demand.push_back(p);
      order.RecordFault(p);
      if (p < 7) break;
    }
  });
  std::vector<uint64_t> pushed, batch;
  while (order.left() > 0) {
    order.NextBatch(64, &batch);
    pushed.insert(pushed.end(), batch.begin(), batch.end());
  }
  server.join();
  std::vector<uint64_t> all = pushed;
  all.insert(all.end(), demand.begin(), demand.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), kPages);
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_EQ(all[p], p);
}

TEST(PostcopyPushOrder, TakeIsFalseForPagesNotOwedOrOutOfRange) {
  PostcopyPushOrder order(10);
  order.MarkUnsent(3);
  EXPECT_FALSE(order.Take(4));
  EXPECT_FALSE(order.Take(10));
  EXPECT_TRUE(order.Take(3));
  EXPECT_FALSE(order.Take(3));
  EXPECT_EQ(order.left(), 0u);
}

}  // namespace
}  // namespace ferry::migration
