// Waiting for a condition in tests without a fixed sleep.
//
// A fixed sleep followed by "something happened" fails whenever the machine is
// loaded (threads are not scheduled within any short interval). Eventually
// polls `condition` until it holds or `limit` passes; `limit` is a generous
// bound on a hang, never a performance expectation.
#ifndef FERRY_BASE_EVENTUALLY_H_
#define FERRY_BASE_EVENTUALLY_H_

#include <chrono>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ferry {

template <typename Condition>
bool Eventually(Condition condition, absl::Duration limit = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + limit;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace ferry

#endif  // FERRY_BASE_EVENTUALLY_H_
