#include "base/config_file.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/file.h"
#include "base/status_macros.h"

namespace ferry {

absl::StatusOr<std::vector<ConfigSetting>> ParseConfig(absl::string_view text,
                                                       absl::string_view file) {
  std::vector<ConfigSetting> out;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::string origin = absl::StrCat(file, ":", line_number);
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos)
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": '", line, "' is not `key = value`"));
    ConfigSetting s;
    s.key = std::string(absl::StripAsciiWhitespace(line.substr(0, eq)));
    s.value = std::string(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    s.origin = origin;
    if (s.key.empty())
      return absl::InvalidArgumentError(absl::StrCat(origin, ": a setting without a key"));
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::vector<ConfigSetting>> ReadConfigFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseConfig(text, path);
}

}  // namespace ferry
