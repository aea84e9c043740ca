#include "base/process.h"

#include <malloc.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace ferry {

void TuneMallocForBulkTransfers() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

int SetThreadNice(int nice) {
  const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  int old = getpriority(PRIO_PROCESS, tid);
  if (errno != 0) old = 0;
  // Best effort: without the privilege to raise it back, the thread simply
  // stays at the lower priority.
  (void)setpriority(PRIO_PROCESS, tid, nice);
  return old;
}

}  // namespace ferry
