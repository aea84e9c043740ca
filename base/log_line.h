// LogLine: one structured, levelled log line in logfmt (key=value), for the
// agent's lifecycle events:
//
//   ts=2026-12-02T01:02:03.456Z level=info event=vm.created vm=web memory_mib=1024
//
// Keys are fixed by the caller; values are written bare when they need no
// quoting and in double quotes (with \" \\ \n escaped) otherwise, and are
// cut at 256 bytes so a peer-supplied value cannot flood the log.
#ifndef FERRY_BASE_LOG_LINE_H_
#define FERRY_BASE_LOG_LINE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// "debug", "info", "warn" or "error"; InvalidArgument naming `what`.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name, absl::string_view what);
// The level of a line LogLine wrote (its "level=" key); info if none.
LogLevel LevelOfLine(absl::string_view line);

class LogLine {
 public:
  LogLine(LogLevel level, absl::string_view event);
  LogLine& Kv(absl::string_view key, absl::string_view value);
  LogLine& Kv(absl::string_view key, const std::string& value) {
    return Kv(key, absl::string_view(value));
  }
  LogLine& Kv(absl::string_view key, const char* value) {
    return Kv(key, absl::string_view(value));
  }
  LogLine& Kv(absl::string_view key, int64_t value);
  LogLine& Kv(absl::string_view key, uint64_t value);
  LogLine& Kv(absl::string_view key, int value) { return Kv(key, static_cast<int64_t>(value)); }
  LogLine& Kv(absl::string_view key, double value);
  const std::string& str() const { return line_; }

 private:
  std::string line_;
};

// logfmt quoting of one value (what Kv writes).
std::string LogValue(absl::string_view value);

}  // namespace ferry

#endif  // FERRY_BASE_LOG_LINE_H_
