#include "base/log_line.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ferry {
namespace {

constexpr size_t kMaxValue = 256;

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name, absl::string_view what) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError})
    if (name == LevelName(l)) return l;
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": unknown level '", name, "' (debug, info, warn or error)"));
}

LogLevel LevelOfLine(absl::string_view line) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kWarn, LogLevel::kError})
    if (line.find(absl::StrCat(" level=", LevelName(l), " ")) != absl::string_view::npos)
      return l;
  return LogLevel::kInfo;
}

std::string LogValue(absl::string_view value) {
  std::string v(value.substr(0, kMaxValue));
  if (value.size() > kMaxValue) v += "...";
  bool bare = !v.empty();
  for (char c : v)
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || c < 0x21 || c == 0x7f) bare = false;
  if (bare) return v;
  std::string q = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') {
      q += '\\';
      q += c;
    } else if (c == '\n') {
      q += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      q += absl::StrFormat("\\x%02x", static_cast<unsigned char>(c));
    } else {
      q += c;
    }
  }
  return q + "\"";
}

LogLine::LogLine(LogLevel level, absl::string_view event) {
  line_ = absl::StrCat("ts=", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                               absl::UTCTimeZone()),
                       " level=", LevelName(level), " event=", LogValue(event));
}

LogLine& LogLine::Kv(absl::string_view key, absl::string_view value) {
  absl::StrAppend(&line_, " ", key, "=", LogValue(value));
  return *this;
}

LogLine& LogLine::Kv(absl::string_view key, int64_t value) {
  absl::StrAppend(&line_, " ", key, "=", value);
  return *this;
}

LogLine& LogLine::Kv(absl::string_view key, uint64_t value) {
  absl::StrAppend(&line_, " ", key, "=", value);
  return *this;
}

LogLine& LogLine::Kv(absl::string_view key, double value) {
  absl::StrAppend(&line_, " ", key, "=", absl::StrFormat("%.6g", value));
  return *this;
}

}  // namespace ferry
