#include "vmm/workload.h"

#include "absl/strings/str_format.h"
#include "base/clock.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace ferry::vmm {
namespace {

struct KindName {
  WorkloadKind kind;
  const char* name;
};
constexpr KindName kKinds[] = {
    {WorkloadKind::kIdle, "idle"},
    {WorkloadKind::kSequential, "sequential"},
    {WorkloadKind::kUniform, "uniform"},
    {WorkloadKind::kZipf, "zipf"},
    {WorkloadKind::kDirtyRate, "dirty-rate"},
    {WorkloadKind::kHotset, "hotset"},
};

static_assert(static_cast<uint64_t>(WorkloadKind::kIdle) == guest::kIdle);
static_assert(static_cast<uint64_t>(WorkloadKind::kZipf) == guest::kZipf);
static_assert(static_cast<uint64_t>(WorkloadKind::kDirtyRate) == guest::kDirtyRate);
static_assert(static_cast<uint64_t>(WorkloadKind::kHotset) == guest::kHotset);

// A multiplier coprime with every region size below 2^32 (it is a prime
// above that), so page = rank * scatter mod R is a permutation.
constexpr uint64_t kScatterPrime = 4294967311ull;

uint64_t PageSeed(const WorkloadSpec& spec, uint64_t page) {
  return Mix64(spec.seed ^ Mix64(page + 0x5851f42d4c957f2dull));
}

}  // namespace

absl::StatusOr<WorkloadKind> ParseWorkloadKind(absl::string_view name) {
  for (const KindName& k : kKinds)
    if (name == k.name) return k.kind;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload '", name,
                   "': choose idle, sequential, uniform, zipf, dirty-rate or hotset"));
}

const char* WorkloadKindName(WorkloadKind kind) {
  for (const KindName& k : kKinds)
    if (k.kind == kind) return k.name;
  return "unknown";
}

absl::Status ValidateWorkload(const WorkloadSpec& spec) {
  if (std::string(WorkloadKindName(spec.kind)) == "unknown")
    return absl::InvalidArgumentError("workload kind is unspecified or unknown");
  if (!(spec.zero_fraction >= 0 && spec.zero_fraction <= 1))
    return absl::InvalidArgumentError(
        absl::StrCat("zero fraction ", spec.zero_fraction, " is not in [0, 1]"));
  if (!(spec.write_fraction >= 0 && spec.write_fraction <= 1))
    return absl::InvalidArgumentError(
        absl::StrCat("write fraction ", spec.write_fraction, " is not in [0, 1]"));
  if (!(spec.hot_fraction > 0 && spec.hot_fraction <= 1))
    return absl::InvalidArgumentError(
        absl::StrCat("hot fraction ", spec.hot_fraction, " is not in (0, 1]"));
  if (!(spec.hot_access_fraction > 0 && spec.hot_access_fraction <= 1))
    return absl::InvalidArgumentError(
        absl::StrCat("hot access fraction ", spec.hot_access_fraction, " is not in (0, 1]"));
  if (spec.kind == WorkloadKind::kDirtyRate && spec.dirty_bytes_per_sec == 0)
    return absl::InvalidArgumentError("the dirty-rate workload needs a rate above 0");
  return absl::OkStatus();
}

int64_t OpIntervalNanos(const WorkloadSpec& spec, uint32_t page_size) {
  switch (spec.kind) {
    case WorkloadKind::kIdle:
      return 1'000'000;
    case WorkloadKind::kDirtyRate:
      return static_cast<int64_t>(1e9 * page_size /
                                  static_cast<double>(spec.dirty_bytes_per_sec));
    default:
      return 0;
  }
}

guest::OpParams MakeOpParams(const WorkloadSpec& spec, uint64_t ram_pages,
                             uint32_t page_size, int vcpu, int vcpus) {
  guest::OpParams p{};
  p.kind = static_cast<uint64_t>(spec.kind);
  p.seed = Mix64(spec.seed * kGolden + static_cast<uint64_t>(vcpu) + 1);
  p.pages = std::max<uint64_t>(1, ram_pages / static_cast<uint64_t>(vcpus));
  p.words = page_size / sizeof(uint64_t);
  p.write_threshold = static_cast<uint64_t>(spec.write_fraction * (1 << 20));
  p.log2_pages_q26 = guest::Log2Q26(p.pages + 1);
  p.scatter = kScatterPrime % p.pages;
  if (p.scatter == 0 || std::gcd(p.scatter, p.pages) != 1) p.scatter = 1;
  p.hot_pages = std::clamp<uint64_t>(
      static_cast<uint64_t>(spec.hot_fraction * static_cast<double>(p.pages)), 1, p.pages);
  p.hot_threshold = static_cast<uint64_t>(spec.hot_access_fraction * (1 << 20));
  return p;
}

GuestProgram::GuestProgram(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
                           uint32_t page_size, int vcpu, int vcpus)
    : params_(MakeOpParams(spec, ram_pages, page_size, vcpu, vcpus)),
      first_page_(params_.pages * static_cast<uint64_t>(vcpu)),
      region_(reinterpret_cast<volatile uint64_t*>(ram + first_page_ * page_size)) {}

bool InitialPageIsZero(const WorkloadSpec& spec, uint64_t page) {
  if (spec.zero_fraction <= 0) return false;
  double u = static_cast<double>(PageSeed(spec, page) >> 11) * 0x1.0p-53;
  return u < spec.zero_fraction;
}

uint64_t FillInitialPages(const WorkloadSpec& spec, uint8_t* ram, uint32_t page_size,
                          uint64_t first, uint64_t count) {
  const uint64_t words = page_size / sizeof(uint64_t);
  uint64_t written = 0;
  for (uint64_t page = first; page < first + count; ++page) {
    if (InitialPageIsZero(spec, page)) continue;
    auto* w = reinterpret_cast<uint64_t*>(ram + page * page_size);
    uint64_t s = PageSeed(spec, page);
    for (uint64_t i = 0; i < words; ++i) {
      s += kGolden;
      uint64_t z = (s ^ (s >> 29)) * 0xbf58476d1ce4e5b9ull;
      w[i] = z ^ (z >> 32) ^ 1;  // ^1 keeps words (and so pages) non-zero
    }
    ++written;
  }
  return written;
}

absl::Status RunReference(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
                          uint32_t page_size, const std::vector<uint64_t>& ops,
                          int64_t deadline_ns) {
  std::vector<uint64_t> acc(ops.size(), 0);
  return RunReferenceSpan(spec, ram, ram_pages, page_size, std::vector<uint64_t>(ops.size(), 0),
                          ops, &acc, deadline_ns);
}

absl::Status RunReferenceSpan(const WorkloadSpec& spec, uint8_t* ram, uint64_t ram_pages,
                              uint32_t page_size, const std::vector<uint64_t>& first,
                              const std::vector<uint64_t>& last, std::vector<uint64_t>* acc,
                              int64_t deadline_ns) {
  constexpr uint64_t kOpsBetweenChecks = 1 << 16;
  const int vcpus = static_cast<int>(last.size());
  if (first.size() != last.size() || acc->size() != last.size())
    return absl::InvalidArgumentError("one first op, last op and accumulator per vCPU");
  uint64_t total = 0;
  for (int v = 0; v < vcpus; ++v) {
    if (first[v] > last[v])
      return absl::InvalidArgumentError(
          absl::StrFormat("vCPU %d: ops [%d, %d) run backwards", v, first[v], last[v]));
    total += last[v] - first[v];
  }
  const int64_t start = MonotonicNowNanos();
  if (deadline_ns > 0 && start > deadline_ns)
    return absl::DeadlineExceededError(absl::StrFormat(
        "no time is left to replay the %d ops the guest has run", total));
  uint64_t done = 0;
  for (int v = 0; v < vcpus; ++v) {
    GuestProgram program(spec, ram, ram_pages, page_size, v, vcpus);
    uint64_t a = (*acc)[v];
    for (uint64_t i = first[v]; i < last[v]; ++i) {
      a = program.Step(i, a);
      if (deadline_ns <= 0 || ++done % kOpsBetweenChecks != 0) continue;
      // Refused as soon as the pace says the rest cannot fit, not only once
      // the time is up. The pace is believed only after a tenth of the time
      // allowed (the first ops touch fresh memory and run many times slower
      // than the rest), and with a margin of two.
      const int64_t now = MonotonicNowNanos();
      const double left_ns = static_cast<double>(now - start) / done * (total - done);
      const bool pace_known = (now - start) * 10 >= deadline_ns - start;
      if (now > deadline_ns ||
          (pace_known && now + left_ns > deadline_ns + (deadline_ns - now)))
        return absl::DeadlineExceededError(absl::StrFormat(
            "replaying the %d ops the guest has run would take about %.0f ms", total,
            (now - start + left_ns) / 1e6));
    }
    (*acc)[v] = a;
  }
  return absl::OkStatus();
}

}  // namespace ferry::vmm
