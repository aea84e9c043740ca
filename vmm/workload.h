// Guest workloads: what a software vCPU runs. Each vCPU owns one region of
// RAM (RAM pages [v * R, (v + 1) * R) with R = pages / vcpus) and executes a
// deterministic stream of operations on it: op i of vCPU v depends only on
// (seed, v, i), the region's contents and the vCPU's accumulator. Regions are
// disjoint, so the memory after K ops per vCPU does not depend on timing or
// interleaving: a run can be replayed without faults or migration
// (RunReference) and compared by digest.
//
// Op contract (what makes a faulted access invisible): an op performs its
// loads first and at most one store, last; the store's value depends only on
// what the op loaded and the accumulator. A fault on any access happens
// before the op has any effect, so the op is retried whole.
//
// Kinds:
//   idle        one read per 1 ms tick, nothing written
//   sequential  read-modify-write of one word per op, page after page
//   uniform     random page and word; a read or, with write_fraction, a
//               read-modify-write
//   zipf        like uniform with pages drawn from Zipf(1): a hot set
//   hotset      like uniform, but hot_access_fraction of the ops (default
//               0.9) go to a hot set of hot_fraction of the vCPU's pages
//               (default 0.1) spread over its region, the rest to any page:
//               a service with a working set
//   dirty-rate  a plain store (no load) to one random page per op, paced to
//               dirty_bytes_per_sec (each op dirties one page)
//
// Initial memory: page p is zero with probability zero_fraction, else filled
// with pseudo-random words; both from (seed, p). Zero pages are left as holes.
#ifndef FERRY_VMM_WORKLOAD_H_
#define FERRY_VMM_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/guest/ops.h"

namespace ferry::vmm {

// Numbered as guest::Kind and ferry.v1.WorkloadKind.
enum class WorkloadKind { kIdle = 1, kSequential, kUniform, kZipf, kDirtyRate, kHotset };

struct WorkloadSpec {
  WorkloadKind kind = WorkloadKind::kSequential;
  uint64_t ops_per_vcpu = 0;  // 0: run until stopped
  uint64_t seed = 1;
  double zero_fraction = 0;
  uint64_t dirty_bytes_per_sec = 16ull << 20;  // dirty-rate only
  double write_fraction = 0.5;                 // uniform, zipf and hotset
  double hot_fraction = 0.1;                   // hotset: pages in the hot set
  double hot_access_fraction = 0.9;            // hotset: ops that go to it
};

absl::StatusOr<WorkloadKind> ParseWorkloadKind(absl::string_view name);
const char* WorkloadKindName(WorkloadKind kind);
absl::Status ValidateWorkload(const WorkloadSpec& spec);

// Nanoseconds between ops for paced kinds (idle, dirty-rate); 0 if unpaced.
int64_t OpIntervalNanos(const WorkloadSpec& spec, uint32_t page_size);

// The vCPU-visible state carried from op to op.
struct GuestCpuState {
  uint64_t ops_done = 0;
  uint64_t acc = 0;
};

using guest::kGolden;
using guest::Mix64;

// The parameters of vCPU `vcpu`'s op stream (of `vcpus`) over `ram_pages`
// pages: what the KVM guest image receives in its boot page.
guest::OpParams MakeOpParams(const WorkloadSpec& spec, uint64_t ram_pages,
                             uint32_t page_size, int vcpu, int vcpus);

// The op stream of one vCPU over its region (RAM pages
// [first_page, first_page + region_pages)).
class GuestProgram {
 public:
  // `ram` is the start of RAM offset space; the program uses region `vcpu`
  // of `vcpus` over `ram_pages` pages.
  GuestProgram(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
               uint32_t page_size, int vcpu, int vcpus);

  uint64_t region_pages() const { return params_.pages; }
  uint64_t first_page() const { return first_page_; }
  const guest::OpParams& params() const { return params_; }

  // Executes op `index` with accumulator `acc`; returns the new accumulator
  // (guest::Step: the same code the KVM guest runs).
  inline uint64_t Step(uint64_t index, uint64_t acc) const {
    return guest::Step(params_, region_, index, acc);
  }

 private:
  guest::OpParams params_;
  uint64_t first_page_;
  volatile uint64_t* region_;
};

// True when page `page` (RAM page index) starts as a zero page.
bool InitialPageIsZero(const WorkloadSpec& spec, uint64_t page);
// Writes the initial content of RAM pages [first, first + count) into
// `ram` (RAM offset 0); zero pages are not touched. Returns pages written.
uint64_t FillInitialPages(const WorkloadSpec& spec, uint8_t* ram, uint32_t page_size,
                          uint64_t first, uint64_t count);

// Runs ops [0, ops[v]) of every vCPU v on `ram` (already filled), with no
// faults, pacing or threads: the replay of a run without migration.
// deadline_ns (CLOCK_MONOTONIC; 0: none): DeadlineExceeded once past it,
// so a replay that grows with a guest's age stays bounded.
absl::Status RunReference(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
                          uint32_t page_size, const std::vector<uint64_t>& ops,
                          int64_t deadline_ns = 0);
// Runs ops [first[v], last[v]) of every vCPU v, each from accumulator acc[v]
// (updated): one epoch of a replay whose memory map changed in between.
absl::Status RunReferenceSpan(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
                              uint32_t page_size, const std::vector<uint64_t>& first,
                              const std::vector<uint64_t>& last, std::vector<uint64_t>* acc,
                              int64_t deadline_ns = 0);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_WORKLOAD_H_
