#include "base/args.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "base/units.h"

namespace ferry {

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

const std::string* Args::Find(const std::string& name, std::string* origin) const {
  origin->clear();
  auto it = flags_.find(name);
  if (it != flags_.end()) return &it->second;
  auto d = defaults_.find(name);
  if (d == defaults_.end()) return nullptr;
  *origin = absl::StrCat(" (from ", d->second.second, ")");
  return &d->second.first;
}

void Args::SetDefault(const std::string& name, const std::string& value,
                      const std::string& origin) {
  defaults_[name] = {value, origin};
}

absl::Status Args::CheckDefaultsRead() const {
  for (const auto& [name, d] : defaults_)
    if (!used_.count(name))
      return absl::InvalidArgumentError(
          absl::StrCat("unknown setting '", name, "' (from ", d.second, ")"));
  return absl::OkStatus();
}

std::string Args::String(const std::string& name, const std::string& def) {
  used_.insert(name);
  // A bare --name reads as "" (callers that need a value refuse that).
  if (valueless_.count(name)) return "";
  std::string origin;
  const std::string* v = Find(name, &origin);
  return v == nullptr ? def : *v;
}

absl::StatusOr<int64_t> Args::Int(const std::string& name, int64_t def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  std::string origin;
  const std::string* text = Find(name, &origin);
  if (text == nullptr) return def;
  int64_t v;
  if (!absl::SimpleAtoi(*text, &v))
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", *text, "' is not an integer", origin));
  return v;
}

absl::StatusOr<double> Args::Double(const std::string& name, double def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  std::string origin;
  const std::string* text = Find(name, &origin);
  if (text == nullptr) return def;
  double v;
  if (!absl::SimpleAtod(*text, &v))
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", *text, "' is not a number", origin));
  return v;
}

absl::StatusOr<uint64_t> Args::Bytes(const std::string& name, uint64_t def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  std::string origin;
  const std::string* text = Find(name, &origin);
  if (text == nullptr) return def;
  return ParseSize(*text, absl::StrCat("--", name, origin));
}

absl::StatusOr<uint64_t> Args::Rate(const std::string& name, uint64_t def) {
  used_.insert(name);
  if (valueless_.count(name)) return NeedsValue(name);
  std::string origin;
  const std::string* text = Find(name, &origin);
  if (text == nullptr) return def;
  return ParseRate(*text, absl::StrCat("--", name, origin));
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
  std::string origin;
  const std::string* v = Find(name, &origin);
  return v != nullptr && *v != "false" && *v != "0";
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
