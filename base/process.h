// Process-wide settings a Ferry binary applies once, first thing in main().
#ifndef FERRY_BASE_PROCESS_H_
#define FERRY_BASE_PROCESS_H_

#include <cstdint>

namespace ferry {

// Migration moves memory in buffers of about a megabyte (protobuf messages,
// gRPC slices). glibc's malloc would serve each from a fresh mmap and give it
// back on free, so every buffer costs page faults and kernel page zeroing.
// Raising the mmap and trim thresholds keeps such buffers in the heap and
// reuses them. Call once from main(), before any thread starts.
void TuneMallocForBulkTransfers();

// Gives the heap's free memory back to the kernel (malloc_trim). The tuning
// above keeps freed buffers for reuse; an agent calls this when a migration
// ends, so its resident memory returns to what it holds.
void ReturnFreedHeap();

// This process's anonymous resident memory (RssAnon: heap, stacks, gRPC
// buffers; not guest memory, which is a memfd), in bytes; 0 if unknown.
uint64_t AnonymousResidentBytes();

// Sets the calling thread's nice value (Linux schedules threads, so this
// affects only the caller). Bulk transfer threads lower their priority while
// demand work (faults, the page server) must go first; raising it back to 0
// is allowed because it only undoes our own lowering. Returns the old value.
int SetThreadNice(int nice);

// RAII: lowers the calling thread's priority for the object's lifetime.
class ScopedThreadNice {
 public:
  explicit ScopedThreadNice(int nice) : old_(SetThreadNice(nice)) {}
  ~ScopedThreadNice() { SetThreadNice(old_); }
  ScopedThreadNice(const ScopedThreadNice&) = delete;
  ScopedThreadNice& operator=(const ScopedThreadNice&) = delete;

 private:
  int old_;
};

}  // namespace ferry

#endif  // FERRY_BASE_PROCESS_H_
