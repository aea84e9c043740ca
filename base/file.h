// Reading a whole small file (certificates, keys) into memory.
#ifndef FERRY_BASE_FILE_H_
#define FERRY_BASE_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace ferry {

// The file's bytes; InvalidArgument naming the path if it cannot be read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace ferry

#endif  // FERRY_BASE_FILE_H_
