// Turns an errno value into an absl::Status that names the failed call.
//
//   if (ioctl(fd, UFFDIO_API, &api) != 0) return ErrnoStatus("UFFDIO_API", errno);
//
// The message reads "<call>: <strerror> (errno <name>)"; the code follows
// the errno (ENOENT -> NotFound, EINVAL -> InvalidArgument, EPERM/EACCES ->
// PermissionDenied, ENOMEM/ENOSPC -> ResourceExhausted, EAGAIN/EINTR ->
// Unavailable, ENOSYS/ENOTTY/EOPNOTSUPP -> Unimplemented, EEXIST ->
// AlreadyExists (also EBUSY, EADDRINUSE), EFAULT/ERANGE -> OutOfRange, others -> Internal).
#ifndef FERRY_BASE_ERRNO_STATUS_H_
#define FERRY_BASE_ERRNO_STATUS_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace ferry {

absl::Status ErrnoStatus(absl::string_view call, int err);

// The symbolic name of an errno value ("EEXIST"), or "E<number>".
absl::string_view ErrnoName(int err);

}  // namespace ferry

#endif  // FERRY_BASE_ERRNO_STATUS_H_
