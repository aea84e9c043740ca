// OpsMeter: the guest's throughput as it runs. A thread of its own reads
// every vCPU's operation counter every `interval` into a bounded ring, and a
// reader copies out what was sampled since a time. A migration's baseline
// and its guest-impact figures (migration/guest_impact.h) come from these
// samples, on both sides.
//
// Threads: Start/Stop from the owner; Since() from any thread.
#ifndef FERRY_VMM_OPS_METER_H_
#define FERRY_VMM_OPS_METER_H_

#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"

namespace ferry::vmm {

// Samples of cumulative per-vCPU operation counts. Row i was taken at
// t_ns[i] (non-decreasing); ops[i * vcpus + v] is vCPU v's count then.
struct OpsTrace {
  int vcpus = 0;
  std::vector<int64_t> t_ns;
  std::vector<uint64_t> ops;

  size_t rows() const { return t_ns.size(); }
  uint64_t total(size_t row) const;  // all vCPUs' ops at row
  // Appends other's rows (same vcpus) taken after this trace's last row.
  void Append(const OpsTrace& other);
  // Keeps every other row (and the last) while more than max_rows remain:
  // coarser, with every count still exact at the rows kept.
  void Thin(size_t max_rows);
};

class OpsMeter {
 public:
  // read(ops) fills ops[0..vcpus) with the vCPUs' current counts.
  using Reader = std::function<void(uint64_t* ops)>;

  OpsMeter(int vcpus, Reader read, absl::Duration interval, size_t capacity,
           const Clock* clock);
  ~OpsMeter();
  OpsMeter(const OpsMeter&) = delete;
  OpsMeter& operator=(const OpsMeter&) = delete;

  void Start();  // once; the first sample is taken at once
  void Stop();   // idempotent; samples stay readable

  // The samples taken at or after t_ns still in the ring, oldest first.
  OpsTrace Since(int64_t t_ns) const;
  // Appends to `trace` the samples taken after its last row (from first_ns
  // when it is empty), then thins it to max_rows. Called every few hundred
  // milliseconds, nothing the ring held is lost.
  void AppendTo(OpsTrace* trace, int64_t first_ns, size_t max_rows) const;
  absl::Duration interval() const { return interval_; }
  // When the first sample was taken (the VM started); 0 before Start().
  int64_t first_sample_ns() const;

 private:
  void Loop();
  void SampleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int vcpus_;
  const Reader read_;
  const absl::Duration interval_;
  const size_t capacity_;
  const Clock* const clock_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;   // ring slot of the next sample
  size_t count_ ABSL_GUARDED_BY(mu_) = 0;  // samples held (<= capacity)
  int64_t first_ns_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> t_ns_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> ops_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> scratch_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::vmm

#endif  // FERRY_VMM_OPS_METER_H_
