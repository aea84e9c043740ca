#include "base/args.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"

namespace ferry {

absl::StatusOr<uint64_t> ParseBytes(absl::string_view text, absl::string_view what) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  absl::ConsumeSuffix(&t, "/s");
  size_t digits = 0;
  while (digits < t.size() && (std::isdigit(static_cast<unsigned char>(t[digits])) ||
                               t[digits] == '.'))
    ++digits;
  double number;
  if (digits == 0 || !absl::SimpleAtod(t.substr(0, digits), &number) || number < 0)
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": '", text, "' is not a size (use e.g. 4096, 64K, 16M, 1G)"));
  std::string upper = absl::AsciiStrToUpper(t.substr(digits));
  absl::string_view unit = upper;
  absl::ConsumeSuffix(&unit, "IB") || absl::ConsumeSuffix(&unit, "B");
  uint64_t scale;
  if (unit.empty()) scale = 1;
  else if (unit == "K") scale = 1ull << 10;
  else if (unit == "M") scale = 1ull << 20;
  else if (unit == "G") scale = 1ull << 30;
  else if (unit == "T") scale = 1ull << 40;
  else
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": '", text, "' has an unknown unit (use K, M, G or T)"));
  double bytes = number * static_cast<double>(scale);
  if (bytes >= 1.8e19)
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", text, "' is too large"));
  return static_cast<uint64_t>(bytes);
}

absl::StatusOr<Args> Args::Parse(int argc, const char* const* argv,
                                 const std::set<std::string>& booleans) {
  std::vector<std::string> v(argv, argv + argc);
  return Parse(v, booleans);
}

namespace {

bool IsNumber(absl::string_view s) {
  double d;
  return absl::SimpleAtod(s, &d);
}

}  // namespace

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::set<std::string>& booleans) {
  Args args;
  auto boolean = [&](const std::string& name) {
    return kBooleanFlags().count(name) > 0 || booleans.count(name) > 0;
  };
  for (size_t i = 0; i < argv.size(); ++i) {
    absl::string_view a = argv[i];
    if (a == "--") {
      for (++i; i < argv.size(); ++i) args.positional_.push_back(argv[i]);
      break;
    }
    if (a == "-h") a = "--help";
    if (!absl::ConsumePrefix(&a, "--")) {
      if (a.size() > 1 && a[0] == '-' && !IsNumber(a))
        return absl::InvalidArgumentError(absl::StrCat(
            "unknown flag '", a, "' (flags are spelled --name; -h is --help)"));
      args.positional_.push_back(argv[i]);
      continue;
    }
    if (a.empty()) return absl::InvalidArgumentError("empty flag name '--'");
    size_t eq = a.find('=');
    std::string name(a.substr(0, eq));
    std::string value;
    if (eq != absl::string_view::npos) {
      value = std::string(a.substr(eq + 1));
    } else if (boolean(name)) {
      value = "true";
    } else if (i + 1 < argv.size() && !absl::StartsWith(argv[i + 1], "--") &&
               argv[i + 1] != "-h") {
      value = argv[++i];
    } else {
      value = "true";
      args.valueless_.insert(name);
    }
    if (args.flags_.count(name))
      return absl::InvalidArgumentError(absl::StrCat("--", name, " is given twice"));
    args.flags_[name] = value;
  }
  return args;
}

absl::Status Args::NeedsValue(const std::string& name) const {
  return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
}

std::string Args::String(const std::string& name, const std::string& def) {
  used_.insert(name);
  // A bare --name reads as "" (callers that need a value refuse that).
  if (valueless_.count(name)) return "";
  auto it = flags_.find(name);
  return it == flags_.end() ? def : it->second;
}

absl::StatusOr<int64_t> Args::Int(const std::string& name, int64_t def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  auto it = flags_.find(name);
  if (it == flags_.end()) return def;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v))
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", it->second, "' is not an integer"));
  return v;
}

absl::StatusOr<double> Args::Double(const std::string& name, double def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  auto it = flags_.find(name);
  if (it == flags_.end()) return def;
  double v;
  if (!absl::SimpleAtod(it->second, &v))
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", it->second, "' is not a number"));
  return v;
}

absl::StatusOr<uint64_t> Args::Bytes(const std::string& name, uint64_t def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  auto it = flags_.find(name);
  if (it == flags_.end()) return def;
  return ParseBytes(it->second, absl::StrCat("--", name));
}

absl::StatusOr<std::vector<int64_t>> Args::IntList(const std::string& name,
                                                   std::vector<int64_t> def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  auto it = flags_.find(name);
  if (it == flags_.end()) return def;
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(it->second, ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v))
      return absl::InvalidArgumentError(absl::StrCat(
          "--", name, ": '", part, "' is not an integer (want e.g. 1,2,4)"));
    out.push_back(v);
  }
  if (out.empty())
    return absl::InvalidArgumentError(absl::StrCat("--", name, " is empty"));
  return out;
}

std::vector<std::string> Args::List(const std::string& name,
                                    std::vector<std::string> def) {
  used_.insert(name);
  auto it = flags_.find(name);
  if (it == flags_.end()) return def;
  return absl::StrSplit(it->second, ',', absl::SkipEmpty());
}

bool Args::Bool(const std::string& name) {
  used_.insert(name);
  bool_reads_.insert(name);
  auto it = flags_.find(name);
  return it != flags_.end() && it->second != "false" && it->second != "0";
}

absl::Status Args::Alias(const std::string& old_name, const std::string& name) {
  auto old = flags_.find(old_name);
  if (old == flags_.end()) return absl::OkStatus();
  if (flags_.count(name))
    return absl::InvalidArgumentError(
        absl::StrCat("--", old_name, " is the old spelling of --", name, ": give one of them"));
  flags_[name] = old->second;
  flags_.erase(old);
  return absl::OkStatus();
}

absl::Status Args::Finish(size_t positionals, absl::string_view usage) const {
  RETURN_IF_ERROR(Finish());
  if (positional_.size() > positionals)
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '",
                                                   positional_[positionals],
                                                   "' (usage: ", usage, ")"));
  return absl::OkStatus();
}

absl::Status Args::Finish() const {
  // A flag read as a string but given bare (Bool reads of it are fine).
  for (const std::string& name : valueless_)
    if (used_.count(name) && !bool_reads_.count(name)) return NeedsValue(name);
  std::vector<std::string> unknown;
  for (const auto& [name, value] : flags_)
    if (!used_.count(name)) unknown.push_back("--" + name);
  if (unknown.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown flag", unknown.size() > 1 ? "s " : " ",
                   absl::StrJoin(unknown, ", "), " (see --help)"));
}

}  // namespace ferry
