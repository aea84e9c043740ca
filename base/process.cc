#include "base/process.h"

#include <malloc.h>

#include <cstdio>
#include <fstream>
#include <string>

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
  // who = 0 is the calling thread on Linux (the kernel's "current"), the same
  // as its tid; the VMM's seccomp filter (base/sandbox.h) allows only 0, so
  // a sandboxed process cannot renice another process of its user.
  errno = 0;
  int old = getpriority(PRIO_PROCESS, 0);
  if (errno != 0) old = 0;
  // Best effort: without the privilege to raise it back, the thread simply
  // stays at the lower priority.
  (void)setpriority(PRIO_PROCESS, 0, nice);
  return old;
}

}  // namespace ferry

namespace ferry {

void ReturnFreedHeap() { malloc_trim(0); }

uint64_t AnonymousResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssAnon:", 0) != 0) continue;
    unsigned long long kib = 0;
    if (std::sscanf(line.c_str(), "RssAnon: %llu kB", &kib) == 1) return kib * 1024;
  }
  return 0;
}

}  // namespace ferry
