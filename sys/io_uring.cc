#include "sys/io_uring.h"

#include <liburing.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "sys/kernel_version.h"

namespace ferry::sys {
namespace {

// liburing maps a ring's queues with raw syscalls, which ThreadSanitizer
// does not see: a ring created where a ring of another thread was mapped
// before looks like a race with that thread's accesses. In reality the
// munmap of the old ring precedes the mmap of the new one; say so: every
// ring's destruction happens before every later ring's creation.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
char ring_lifecycle;
void RingCreated() { __tsan_acquire(&ring_lifecycle); }
void RingDestroyed() { __tsan_release(&ring_lifecycle); }
#else
void RingCreated() {}
void RingDestroyed() {}
#endif

}  // namespace

absl::StatusOr<std::unique_ptr<IoUring>> IoUring::Create(unsigned depth,
                                                         bool single_issuer) {
  auto ring = std::make_unique<io_uring>();
  io_uring_params params{};
  if (single_issuer)
    params.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int rc = io_uring_queue_init_params(depth, ring.get(), &params);
  if (rc < 0) {
    if (rc == -ENOSYS) return MissingFacility("io_uring", "5.1");
    if (rc == -EINVAL && single_issuer)
      return MissingFacility("io_uring SINGLE_ISSUER and DEFER_TASKRUN", "6.1");
    return ErrnoStatus("io_uring_queue_init_params", -rc);
  }
  RingCreated();
  return std::unique_ptr<IoUring>(new IoUring(std::move(ring)));
}

IoUring::IoUring(std::unique_ptr<io_uring> ring) : ring_(std::move(ring)) {}

IoUring::~IoUring() {
  RingDestroyed();
  io_uring_queue_exit(ring_.get());
}

absl::StatusOr<io_uring_sqe*> IoUring::NextSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  if (sqe == nullptr) {
    // The submission queue is full: flush it and try once more.
    int rc = io_uring_submit(ring_.get());
    if (rc < 0) return ErrnoStatus("io_uring_submit", -rc);
    sqe = io_uring_get_sqe(ring_.get());
    if (sqe == nullptr)
      return absl::ResourceExhaustedError("io_uring submission queue is full");
  }
  return sqe;
}

absl::Status IoUring::PrepareSend(int fd, const void* buf, size_t len, uint64_t tag,
                                  bool link) {
  auto sqe = NextSqe();
  if (!sqe.ok()) return sqe.status();
  io_uring_prep_send(*sqe, fd, buf, len, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(*sqe, tag);
  if (link) (*sqe)->flags |= IOSQE_IO_LINK;
  return absl::OkStatus();
}

absl::Status IoUring::PrepareRecv(int fd, void* buf, size_t len, uint64_t tag,
                                  bool wait_all) {
  auto sqe = NextSqe();
  if (!sqe.ok()) return sqe.status();
  io_uring_prep_recv(*sqe, fd, buf, len, wait_all ? MSG_WAITALL : 0);
  io_uring_sqe_set_data64(*sqe, tag);
  return absl::OkStatus();
}

absl::Status IoUring::PrepareSendMsg(int fd, const msghdr* msg, uint64_t tag) {
  auto sqe = NextSqe();
  if (!sqe.ok()) return sqe.status();
  io_uring_prep_sendmsg(*sqe, fd, msg, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(*sqe, tag);
  return absl::OkStatus();
}

absl::Status IoUring::PrepareAccept(int fd, uint64_t tag) {
  auto sqe = NextSqe();
  if (!sqe.ok()) return sqe.status();
  io_uring_prep_accept(*sqe, fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(*sqe, tag);
  return absl::OkStatus();
}

absl::Status IoUring::PrepareRead(int fd, void* buf, size_t len, uint64_t tag, uint64_t offset) {
  auto sqe = NextSqe();
  if (!sqe.ok()) return sqe.status();
  io_uring_prep_read(*sqe, fd, buf, len, offset);
  io_uring_sqe_set_data64(*sqe, tag);
  return absl::OkStatus();
}

absl::Status IoUring::PrepareCancel(uint64_t target_tag, uint64_t tag) {
  auto sqe = NextSqe();
  if (!sqe.ok()) return sqe.status();
  io_uring_prep_cancel64(*sqe, target_tag, 0);
  io_uring_sqe_set_data64(*sqe, tag);
  return absl::OkStatus();
}

absl::Status IoUring::SubmitAndWait(unsigned wait_nr, int64_t timeout_ns) {
  if (timeout_ns < 0) {
    int rc;
    do {
      rc = io_uring_submit_and_wait(ring_.get(), wait_nr);
    } while (rc == -EINTR);
    if (rc < 0) return ErrnoStatus("io_uring_submit_and_wait", -rc);
    return absl::OkStatus();
  }
  __kernel_timespec ts{timeout_ns / 1'000'000'000, timeout_ns % 1'000'000'000};
  io_uring_cqe* cqe = nullptr;
  int rc;
  do {
    rc = io_uring_submit_and_wait_timeout(ring_.get(), &cqe, wait_nr, &ts, nullptr);
  } while (rc == -EINTR);
  // liburing 2.3 may return the number submitted even when the wait timed
  // out, so what decides is whether anything completed.
  if (rc < 0 && rc != -ETIME)
    return ErrnoStatus("io_uring_submit_and_wait_timeout", -rc);
  if (io_uring_cq_ready(ring_.get()) == 0)
    return absl::DeadlineExceededError("io_uring wait timed out");
  return absl::OkStatus();
}

bool IoUring::PopCompletion(IoCompletion* out) {
  io_uring_cqe* cqe = nullptr;
  if (io_uring_peek_cqe(ring_.get(), &cqe) != 0 || cqe == nullptr) return false;
  out->tag = io_uring_cqe_get_data64(cqe);
  out->result = cqe->res;
  io_uring_cqe_seen(ring_.get(), cqe);
  return true;
}

absl::Status IoUring::CompletionError(const char* op, int32_t result) {
  if (result >= 0) return absl::OkStatus();
  return ErrnoStatus(op, -result);
}

}  // namespace ferry::sys
