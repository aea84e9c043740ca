#include "bench/output.h"

#include <sys/stat.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/errno_status.h"

namespace ferry::bench {

Row& Row::Add(const std::string& key, Value value) {
  fields_.emplace_back(key, std::move(value));
  return *this;
}

JsonObject Row::ToJson() const {
  JsonObject o;
  for (const auto& [k, v] : fields_) {
    if (auto* d = std::get_if<double>(&v)) o.Add(k, *d);
    else if (auto* i = std::get_if<int64_t>(&v)) o.Add(k, *i);
    else if (auto* s = std::get_if<std::string>(&v)) o.Add(k, *s);
    else o.Add(k, std::get<bool>(v));
  }
  return o;
}

std::string CsvField(const Value& v) {
  if (auto* d = std::get_if<double>(&v)) return JsonNumber(*d);
  if (auto* i = std::get_if<int64_t>(&v)) return absl::StrCat(*i);
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  const std::string& s = std::get<std::string>(v);
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

absl::StatusOr<std::unique_ptr<ResultSink>> ResultSink::Open(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return ErrnoStatus(absl::StrCat("mkdir ", dir), errno);
  std::unique_ptr<ResultSink> sink(new ResultSink(dir));
  sink->jsonl_.open(dir + "/results.jsonl", std::ios::app);
  if (!sink->jsonl_)
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", dir, "/results.jsonl"));
  return sink;
}

absl::Status ResultSink::Write(const std::string& scenario, const Row& row) {
  jsonl_ << row.ToJson().ToString() << "\n";
  jsonl_.flush();
  std::vector<std::string> keys;
  for (const auto& [k, v] : row.fields()) keys.push_back(k);
  auto& csv = csv_[scenario];
  if (csv == nullptr) {
    csv = std::make_unique<std::ofstream>(dir_ + "/" + scenario + ".csv", std::ios::trunc);
    if (!*csv) return absl::PermissionDeniedError(absl::StrCat("cannot write ", dir_, "/", scenario, ".csv"));
    headers_[scenario] = keys;
    *csv << absl::StrJoin(keys, ",") << "\n";
  } else if (headers_[scenario] != keys) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", scenario, " row has columns ", absl::StrJoin(keys, ","), " where the file has ",
        absl::StrJoin(headers_[scenario], ",")));
  }
  std::vector<std::string> cells;
  for (const auto& [k, v] : row.fields()) cells.push_back(CsvField(v));
  *csv << absl::StrJoin(cells, ",") << "\n";
  csv->flush();
  return absl::OkStatus();
}

}  // namespace ferry::bench
