// ResultSink: where a benchmark run's results go. Every run is one Row: a
// JSON line appended to DIR/results.jsonl and a CSV row in
// DIR/<scenario>.csv (the header is the first row's keys; every later row of
// a scenario must have the same keys, in the same order).
//
// Threads: one thread at a time.
#ifndef FERRY_BENCH_OUTPUT_H_
#define FERRY_BENCH_OUTPUT_H_

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "base/json.h"

namespace ferry::bench {

using Value = std::variant<double, int64_t, std::string, bool>;

class Row {
 public:
  Row& Add(const std::string& key, Value value);
  Row& Add(const std::string& key, const char* value) { return Add(key, Value(std::string(value))); }
  Row& Add(const std::string& key, const std::string& value) { return Add(key, Value(value)); }
  Row& Add(const std::string& key, int value) { return Add(key, Value(int64_t{value})); }
  Row& Add(const std::string& key, uint64_t value) {
    return Add(key, Value(static_cast<int64_t>(value)));
  }
  Row& Add(const std::string& key, double value) { return Add(key, Value(value)); }
  Row& Add(const std::string& key, bool value) { return Add(key, Value(value)); }
  const std::vector<std::pair<std::string, Value>>& fields() const { return fields_; }
  JsonObject ToJson() const;

 private:
  std::vector<std::pair<std::string, Value>> fields_;
};

// A CSV field: quoted when it holds a comma, quote or line break.
std::string CsvField(const Value& v);

class ResultSink {
 public:
  static absl::StatusOr<std::unique_ptr<ResultSink>> Open(const std::string& dir);
  absl::Status Write(const std::string& scenario, const Row& row);
  const std::string& dir() const { return dir_; }

 private:
  explicit ResultSink(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  std::ofstream jsonl_;
  std::map<std::string, std::unique_ptr<std::ofstream>> csv_;
  std::map<std::string, std::vector<std::string>> headers_;
};

}  // namespace ferry::bench

#endif  // FERRY_BENCH_OUTPUT_H_
