// The running kernel's release string (uname -r), for error messages that
// name the kernel version a missing facility needs.
#ifndef FERRY_SYS_KERNEL_VERSION_H_
#define FERRY_SYS_KERNEL_VERSION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ferry::sys {

std::string RunningKernelRelease();

// FailedPrecondition: "<facility> is not available: it needs Linux <since>
// or later; this kernel is <release>. <detail>".
absl::Status MissingFacility(absl::string_view facility, absl::string_view since,
                             absl::string_view detail = "");

}  // namespace ferry::sys

#endif  // FERRY_SYS_KERNEL_VERSION_H_
