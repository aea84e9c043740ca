// JsonObject: writes one flat-or-nested JSON object, in insertion order, for
// reports and benchmark lines. Strings are escaped; non-finite numbers are
// written as null. Not a parser.
//
//   JsonObject o;
//   o.Add("scenario", "demand-paging").Add("vcpus", 4).Add("pages_per_sec", 1.5e5);
//   std::cout << o.ToString() << "\n";
#ifndef FERRY_BASE_JSON_H_
#define FERRY_BASE_JSON_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace ferry {

class JsonObject {
 public:
  JsonObject& Add(absl::string_view key, absl::string_view value);
  JsonObject& Add(absl::string_view key, const char* value);
  JsonObject& Add(absl::string_view key, const std::string& value);
  JsonObject& Add(absl::string_view key, bool value);
  JsonObject& Add(absl::string_view key, int value);
  JsonObject& Add(absl::string_view key, int64_t value);
  JsonObject& Add(absl::string_view key, uint64_t value);
  JsonObject& Add(absl::string_view key, double value);
  JsonObject& Add(absl::string_view key, const JsonObject& value);
  JsonObject& Add(absl::string_view key, const std::vector<double>& values);
  JsonObject& Add(absl::string_view key, const std::vector<JsonObject>& values);

  // `json` must already be one JSON value (e.g. an array built with
  // JsonQuote and JsonNumber); it is written as is.
  JsonObject& AddJson(absl::string_view key, std::string json) {
    return AddRaw(key, std::move(json));
  }
  std::string ToString() const;

 private:
  JsonObject& AddRaw(absl::string_view key, std::string raw);
  std::vector<std::pair<std::string, std::string>> fields_;
};

std::string JsonQuote(absl::string_view s);
std::string JsonNumber(double v);

}  // namespace ferry

#endif  // FERRY_BASE_JSON_H_
