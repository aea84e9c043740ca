// Config files of Ferry's binaries (docs/cli.md, "Settings"): one setting a
// line, `key = value`; blank lines and lines starting with '#' are skipped;
// the value is the rest of the line with its surrounding blanks trimmed.
// A line without '=' or with an empty key is InvalidArgument naming
// "FILE:LINE".
//
//   ASSIGN_OR_RETURN(auto settings, ReadConfigFile("/etc/ferry/ferryd.conf"));
//   for (const ConfigSetting& s : settings) args.SetDefault(s.key, s.value, s.origin);
#ifndef FERRY_BASE_CONFIG_FILE_H_
#define FERRY_BASE_CONFIG_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry {

struct ConfigSetting {
  std::string key;
  std::string value;
  std::string origin;  // "FILE:LINE"
};

// `text` read from `file` (named in errors).
absl::StatusOr<std::vector<ConfigSetting>> ParseConfig(absl::string_view text,
                                                       absl::string_view file);
// InvalidArgument naming the path when it cannot be read.
absl::StatusOr<std::vector<ConfigSetting>> ReadConfigFile(const std::string& path);

}  // namespace ferry

#endif  // FERRY_BASE_CONFIG_FILE_H_
