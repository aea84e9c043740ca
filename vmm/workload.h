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
//   dirty-rate  a plain store (no load) to one random page per op, paced to
//               dirty_bytes_per_sec (each op dirties one page)
//
// Initial memory: page p is zero with probability zero_fraction, else filled
// with pseudo-random words; both from (seed, p). Zero pages are left as holes.
#ifndef FERRY_VMM_WORKLOAD_H_
#define FERRY_VMM_WORKLOAD_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::vmm {

enum class WorkloadKind { kIdle = 1, kSequential, kUniform, kZipf, kDirtyRate };

struct WorkloadSpec {
  WorkloadKind kind = WorkloadKind::kSequential;
  uint64_t ops_per_vcpu = 0;  // 0: run until stopped
  uint64_t seed = 1;
  double zero_fraction = 0;
  uint64_t dirty_bytes_per_sec = 16ull << 20;  // dirty-rate only
  double write_fraction = 0.5;                 // uniform and zipf
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

inline uint64_t Mix64(uint64_t x) {  // splitmix64's finalizer: a bijection
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

// The op stream of one vCPU over its region.
class GuestProgram {
 public:
  // `ram` is the start of RAM offset space; the program uses region `vcpu`
  // of `vcpus` over `ram_pages` pages.
  GuestProgram(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
               uint32_t page_size, int vcpu, int vcpus);

  uint64_t region_pages() const { return pages_; }
  uint64_t first_page() const { return first_page_; }

  // Executes op `index` with accumulator `acc`; returns the new accumulator.
  // Accesses guest memory through volatile pointers: each load and store
  // happens exactly as written, in order.
  inline uint64_t Step(uint64_t index, uint64_t acc) const {
    const uint64_t x = Mix64(seed_ + index * kGolden);
    uint64_t page, word;
    bool write;
    switch (kind_) {
      case WorkloadKind::kIdle:
        page = index % pages_;
        word = 0;
        write = false;
        break;
      case WorkloadKind::kSequential:
        page = index % pages_;
        word = (index / pages_) % words_;
        write = true;
        break;
      case WorkloadKind::kUniform:
        page = x % pages_;
        word = (x >> 40) % words_;
        write = ((x >> 20) & 0xfffff) < write_threshold_;
        break;
      case WorkloadKind::kZipf: {
        // rank = floor((R + 1)^u) - 1 has P(rank = k) ~ 1 / (k + 1): Zipf(1).
        double u = static_cast<double>(x >> 11) * 0x1.0p-53;
        uint64_t rank = static_cast<uint64_t>(std::exp(u * log_pages_)) - 1;
        if (rank >= pages_) rank = pages_ - 1;
        page = (rank * scatter_) % pages_;  // spread the hot set over the region
        word = (x >> 40) % words_;
        write = ((x >> 20) & 0xfffff) < write_threshold_;
        break;
      }
      case WorkloadKind::kDirtyRate:
      default:
        page = x % pages_;
        word = (x >> 40) % words_;
        write = true;
        break;
    }
    volatile uint64_t* p = region_ + page * words_ + word;
    if (kind_ == WorkloadKind::kDirtyRate) {  // a pure store: a write fault
      const uint64_t next = Mix64(acc ^ seed_ ^ (index + 1) * kGolden);
      *p = next;
      return next;
    }
    const uint64_t v = *p;
    if (!write) return Mix64(acc ^ v);
    const uint64_t next = Mix64(v ^ acc ^ seed_ ^ (index + 1) * kGolden);
    *p = next;
    return next;
  }

 private:
  WorkloadKind kind_;
  uint64_t seed_;
  volatile uint64_t* region_;
  uint64_t first_page_;
  uint64_t pages_;
  uint64_t words_;
  uint64_t write_threshold_;  // of 2^20
  double log_pages_;
  uint64_t scatter_;
};

// True when page `page` (RAM page index) starts as a zero page.
bool InitialPageIsZero(const WorkloadSpec& spec, uint64_t page);
// Writes the initial content of RAM pages [first, first + count) into
// `ram` (RAM offset 0); zero pages are not touched. Returns pages written.
uint64_t FillInitialPages(const WorkloadSpec& spec, uint8_t* ram, uint32_t page_size,
                          uint64_t first, uint64_t count);

// Runs ops [0, ops[v]) of every vCPU v on `ram` (already filled), with no
// faults, pacing or threads: the replay of a run without migration.
void RunReference(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
                  uint32_t page_size, const std::vector<uint64_t>& ops);

}  // namespace ferry::vmm

#endif  // FERRY_VMM_WORKLOAD_H_
