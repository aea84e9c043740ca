// IoUring: one io_uring instance, the liburing way. Only io_uring.cc
// includes liburing.h.
//
// Model: the caller prepares operations (each with a 64-bit tag of its own
// choosing), then Submit()s them and waits for completions, which it reads
// back as (tag, result) pairs. A result is the kernel's: bytes transferred,
// a new fd, or a negative errno; CompletionError() turns a negative result
// into a Status naming the operation. The queue depth is bounded: preparing
// more operations than fit fails with ResourceExhausted after flushing.
//
// Threads: with `single_issuer` (IORING_SETUP_SINGLE_ISSUER |
// IORING_SETUP_DEFER_TASKRUN, the low-latency setup) the ring belongs to the
// thread that created it, and only that thread may use it. Without it, one
// thread at a time.
//
//   ASSIGN_OR_RETURN(auto ring, IoUring::Create(8, /*single_issuer=*/true));
//   RETURN_IF_ERROR(ring->PrepareSend(fd, req, sizeof(req), kSendTag, /*link=*/true));
//   RETURN_IF_ERROR(ring->PrepareRecv(fd, buf, sizeof(buf), kRecvTag));
//   RETURN_IF_ERROR(ring->SubmitAndWait(2));
//   IoCompletion c;
//   while (ring->PopCompletion(&c)) { ... c.tag, c.result ... }
#ifndef FERRY_SYS_IO_URING_H_
#define FERRY_SYS_IO_URING_H_

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct io_uring;
struct io_uring_sqe;

namespace ferry::sys {

struct IoCompletion {
  uint64_t tag = 0;
  int32_t result = 0;  // >= 0: bytes or fd; < 0: -errno
};

class IoUring {
 public:
  static absl::StatusOr<std::unique_ptr<IoUring>> Create(unsigned depth,
                                                         bool single_issuer);
  ~IoUring();
  IoUring(const IoUring&) = delete;
  IoUring& operator=(const IoUring&) = delete;

  // Each Prepare* queues one operation. `link` chains it to the next one
  // prepared (the next starts only after this one completes in full).
  absl::Status PrepareSend(int fd, const void* buf, size_t len, uint64_t tag,
                           bool link = false);
  absl::Status PrepareRecv(int fd, void* buf, size_t len, uint64_t tag,
                           bool wait_all = false);
  // `msg` (and what it points to) must stay valid until the completion.
  absl::Status PrepareSendMsg(int fd, const msghdr* msg, uint64_t tag);
  absl::Status PrepareAccept(int fd, uint64_t tag);
  // Reads at file `offset` (ignored for pipes, sockets and eventfds).
  absl::Status PrepareRead(int fd, void* buf, size_t len, uint64_t tag, uint64_t offset = 0);
  absl::Status PrepareCancel(uint64_t target_tag, uint64_t tag);

  // Submits what was prepared and waits until at least `wait_nr`
  // completions are available (0: do not wait). With timeout_ns >= 0, waits
  // at most that long (DeadlineExceeded when nothing completed).
  absl::Status SubmitAndWait(unsigned wait_nr, int64_t timeout_ns = -1);

  // Takes the next available completion; false when none is ready.
  bool PopCompletion(IoCompletion* out);

  // The Status of a negative completion result of operation `op`.
  static absl::Status CompletionError(const char* op, int32_t result);

 private:
  explicit IoUring(std::unique_ptr<io_uring> ring);
  absl::StatusOr<::io_uring_sqe*> NextSqe();

  std::unique_ptr<io_uring> ring_;
};

}  // namespace ferry::sys

#endif  // FERRY_SYS_IO_URING_H_
