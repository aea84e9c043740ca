// Kernel ABI that Debian 12's linux-libc-dev (6.1) lacks, defined once here
// and pinned with static_asserts. Values are from the kernel's
// include/uapi/linux/userfaultfd.h and fs.h (6.7+). Nothing else in Ferry
// defines kernel constants.
#ifndef FERRY_SYS_KERNEL_ABI_H_
#define FERRY_SYS_KERNEL_ABI_H_

#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace ferry::sys::abi {

// userfaultfd feature bits (uffdio_api.features).
inline constexpr uint64_t kUffdFeatureWpUnpopulated = 1ull << 13;  // 6.4
inline constexpr uint64_t kUffdFeaturePoison = 1ull << 14;         // 6.6
inline constexpr uint64_t kUffdFeatureWpAsync = 1ull << 15;        // 6.7
inline constexpr uint64_t kUffdFeatureMove = 1ull << 16;           // 6.8

static_assert(UFFD_FEATURE_SIGBUS == (1 << 7));
static_assert(UFFD_FEATURE_THREAD_ID == (1 << 8));
static_assert(UFFD_FEATURE_MISSING_SHMEM == (1 << 5));
static_assert(UFFD_FEATURE_WP_HUGETLBFS_SHMEM == (1 << 12));
static_assert(sizeof(uffd_msg) == 32);
static_assert(sizeof(uffdio_copy) == 40);

// PAGEMAP_SCAN (fs.h, 6.7): an ioctl on /proc/<pid>/pagemap.
struct PageRegion {
  uint64_t start;
  uint64_t end;
  uint64_t categories;
};

struct PmScanArg {
  uint64_t size;
  uint64_t flags;
  uint64_t start;
  uint64_t end;
  uint64_t walk_end;
  uint64_t vec;
  uint64_t vec_len;
  uint64_t max_pages;
  uint64_t category_inverted;
  uint64_t category_mask;
  uint64_t category_anyof_mask;
  uint64_t return_mask;
};
static_assert(sizeof(PageRegion) == 24);
static_assert(sizeof(PmScanArg) == 96);

inline constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
static_assert(kPagemapScan == 0xc0606610);

inline constexpr uint64_t kPmScanWpMatching = 1 << 0;
inline constexpr uint64_t kPmScanCheckWpAsync = 1 << 1;

inline constexpr uint64_t kPageIsWpAllowed = 1 << 0;
inline constexpr uint64_t kPageIsWritten = 1 << 1;
inline constexpr uint64_t kPageIsFile = 1 << 2;
inline constexpr uint64_t kPageIsPresent = 1 << 3;

// x86 page-fault error code bits (uc_mcontext.gregs[REG_ERR] in a SIGBUS or
// SIGSEGV handler).
inline constexpr uint64_t kX86PfWrite = 1 << 1;

}  // namespace ferry::sys::abi

#endif  // FERRY_SYS_KERNEL_ABI_H_
