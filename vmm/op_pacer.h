// OpPacer: holds a paced workload (idle, dirty-rate) to its rate: op i may
// start only at its slot. Sleeps at most 200 us at a time so an exit request
// is honoured quickly; after Reset() (a pause) the pace restarts from now,
// without a burst; a backlog is capped at 10 ms. Used by both vCPU kinds.
//
// Threads: one vCPU thread; `exit_requested` may be set by any thread.
#ifndef FERRY_VMM_OP_PACER_H_
#define FERRY_VMM_OP_PACER_H_

#include <atomic>
#include <cstdint>

#include "base/clock.h"

namespace ferry::vmm {

class OpPacer {
 public:
  // `interval_ns` 0: unpaced (Wait returns at once).
  OpPacer(int64_t interval_ns, const Clock* clock) : interval_ns_(interval_ns), clock_(clock) {}

  bool paced() const { return interval_ns_ > 0; }

  // Waits until op `index` may run. A retried op (the same index again)
  // does not take a second slot. False if `exit_requested` became true.
  bool Wait(uint64_t index, const std::atomic<bool>& exit_requested);
  // The vCPU paused: the next op starts a new pace.
  void Reset() { paced_since_resume_ = false; }

 private:
  const int64_t interval_ns_;
  const Clock* const clock_;
  int64_t next_op_ns_ = 0;
  bool paced_since_resume_ = false;
  uint64_t paced_index_ = ~0ull;
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_OP_PACER_H_
