#include "base/json.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ferry {

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          absl::StrAppendFormat(&out, "\\u%04x", c);
        else
          out += c;
    }
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrFormat("%.0f", v);
  return absl::StrFormat("%.6g", v);
}

JsonObject& JsonObject::AddRaw(absl::string_view key, std::string raw) {
  fields_.emplace_back(std::string(key), std::move(raw));
  return *this;
}

JsonObject& JsonObject::Add(absl::string_view key, absl::string_view value) {
  return AddRaw(key, JsonQuote(value));
}
JsonObject& JsonObject::Add(absl::string_view key, const char* value) {
  return AddRaw(key, JsonQuote(value));
}
JsonObject& JsonObject::Add(absl::string_view key, const std::string& value) {
  return AddRaw(key, JsonQuote(value));
}
JsonObject& JsonObject::Add(absl::string_view key, bool value) {
  return AddRaw(key, value ? "true" : "false");
}
JsonObject& JsonObject::Add(absl::string_view key, int value) {
  return AddRaw(key, absl::StrCat(value));
}
JsonObject& JsonObject::Add(absl::string_view key, int64_t value) {
  return AddRaw(key, absl::StrCat(value));
}
JsonObject& JsonObject::Add(absl::string_view key, uint64_t value) {
  return AddRaw(key, absl::StrCat(value));
}
JsonObject& JsonObject::Add(absl::string_view key, double value) {
  return AddRaw(key, JsonNumber(value));
}
JsonObject& JsonObject::Add(absl::string_view key, const JsonObject& value) {
  return AddRaw(key, value.ToString());
}
JsonObject& JsonObject::Add(absl::string_view key, const std::vector<double>& values) {
  std::string raw = "[";
  for (size_t i = 0; i < values.size(); ++i)
    absl::StrAppend(&raw, i ? "," : "", JsonNumber(values[i]));
  return AddRaw(key, raw + "]");
}

std::string JsonObject::ToString() const {
  std::string out = "{";
  for (size_t i = 0; i < fields_.size(); ++i)
    absl::StrAppend(&out, i ? "," : "", JsonQuote(fields_[i].first), ":",
                    fields_[i].second);
  return out + "}";
}

JsonObject& JsonObject::Add(absl::string_view key, const std::vector<JsonObject>& values) {
  std::string raw = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) raw += ",";
    raw += values[i].ToString();
  }
  raw += "]";
  return AddRaw(key, std::move(raw));
}

}  // namespace ferry
