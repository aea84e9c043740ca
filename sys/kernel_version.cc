#include "sys/kernel_version.h"

#include <sys/utsname.h>

#include "absl/strings/str_cat.h"

namespace ferry::sys {

std::string RunningKernelRelease() {
  utsname u;
  if (uname(&u) != 0) return "unknown";
  return u.release;
}

absl::Status MissingFacility(absl::string_view facility, absl::string_view since,
                             absl::string_view detail) {
  return absl::FailedPreconditionError(
      absl::StrCat(facility, " is not available: it needs Linux ", since,
                   " or later; this kernel is ", RunningKernelRelease(), ".",
                   detail.empty() ? "" : " ", detail));
}

}  // namespace ferry::sys
