#include "base/errno_status.h"

#include <cerrno>
#include <cstring>
#include <string>


#include "absl/strings/str_cat.h"

namespace ferry {
namespace {

absl::StatusCode CodeForErrno(int err) {
  switch (err) {
    case ENOENT:
    case ENODEV:
    case ESRCH:
      return absl::StatusCode::kNotFound;
    case EINVAL:
    case EBADF:
      return absl::StatusCode::kInvalidArgument;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
      return absl::StatusCode::kResourceExhausted;
    case EAGAIN:
    case EINTR:
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case ENOTCONN:
    case ESHUTDOWN:
    case ENETDOWN:
    case ENETRESET:
    case EHOSTDOWN:
    case EPIPE:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
      return absl::StatusCode::kUnavailable;
    case ENOSYS:
    case ENOTTY:
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    case EEXIST:
    case EADDRINUSE:
    case EBUSY:
      return absl::StatusCode::kAlreadyExists;
    case EFAULT:
    case ERANGE:
      return absl::StatusCode::kOutOfRange;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::string_view ErrnoName(int err) {
  // strerrorname_np is glibc >= 2.32; Debian 12 has 2.36.
  const char* name = strerrorname_np(err);
  return name != nullptr ? absl::string_view(name) : absl::string_view("E?");
}

absl::Status ErrnoStatus(absl::string_view call, int err) {
  return absl::Status(CodeForErrno(err),
                      absl::StrCat(call, ": ", std::strerror(err), " (errno ",
                                   ErrnoName(err), ")"));
}

}  // namespace ferry
