// Args: command-line parsing for Ferry's binaries (ferry, ferryd,
// ferry-bench). Accepts `--name=value` and `--name value`; a boolean flag
// (kBooleanFlags, or one the binary names) is bare `--flag` (or
// `--flag=false`) and never takes the next word as its value. `-h` is
// `--help`. Any other word starting with `-` (but a negative number) is an
// error, not a positional. Every getter names the flag in its error (a
// non-boolean flag given without a value: "--memory needs a value"), and
// Finish() rejects flags nobody asked for and positionals past the ones a
// command takes, so a typo is an error rather than a silently ignored
// option.
//
//   ASSIGN_OR_RETURN(Args args, Args::Parse(argc - 1, argv + 1));
//   ASSIGN_OR_RETURN(uint64_t memory, args.Bytes("memory", 1ull << 30));
//   bool json = args.Bool("json");
//   RETURN_IF_ERROR(args.Finish());
#ifndef FERRY_BASE_ARGS_H_
#define FERRY_BASE_ARGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry {

// Flags that are boolean in every binary.
inline const std::set<std::string>& kBooleanFlags() {
  static const std::set<std::string> flags = {"help", "version", "json"};
  return flags;
}

class Args {
 public:
  // `booleans`: the binary's boolean flags besides kBooleanFlags().
  static absl::StatusOr<Args> Parse(int argc, const char* const* argv,
                                    const std::set<std::string>& booleans = {});
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& booleans = {});

  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& name) const { return flags_.count(name) > 0; }

  std::string String(const std::string& name, const std::string& def = "");
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t def);
  absl::StatusOr<double> Double(const std::string& name, double def);
  // A size in bytes and a rate in bytes per second, by the rules of
  // base/units.h ("1G", "125MB/s", "1Gbit/s").
  absl::StatusOr<uint64_t> Bytes(const std::string& name, uint64_t def);
  absl::StatusOr<uint64_t> Rate(const std::string& name, uint64_t def);
  // A comma-separated list of integers ("1,2,4,8").
  absl::StatusOr<std::vector<int64_t>> IntList(const std::string& name,
                                               std::vector<int64_t> def);
  // A comma-separated list of words.
  std::vector<std::string> List(const std::string& name, std::vector<std::string> def);
  bool Bool(const std::string& name);

  // A value for --`name` when the command line does not give one (from the
  // environment or a config file): the getters return it instead of their
  // own default, and an error about it names `origin` ("FILE:LINE").
  void SetDefault(const std::string& name, const std::string& value,
                  const std::string& origin);
  // InvalidArgument naming a SetDefault no getter read: an unknown setting.
  absl::Status CheckDefaultsRead() const;

  // Accepts --`old_name` as another spelling of --`name` (a renamed flag);
  // InvalidArgument if both are given.
  absl::Status Alias(const std::string& old_name, const std::string& name);

  // InvalidArgument naming every flag that was given but never read.
  absl::Status Finish() const;
  // As Finish(), and InvalidArgument naming the first positional past the
  // first `positionals` ("unexpected argument 'x' (usage: ...)").
  absl::Status Finish(size_t positionals, absl::string_view usage) const;

 private:
  // A flag given with no value where one is needed.
  absl::Status NeedsValue(const std::string& name) const;
  std::set<std::string> valueless_;
  std::set<std::string> bool_reads_;
  std::vector<std::string> positional_;
  // The flag's value, else its SetDefault, else null; *origin says where a
  // default came from (" (from FILE:LINE)").
  const std::string* Find(const std::string& name, std::string* origin) const;
  std::map<std::string, std::string> flags_;
  std::map<std::string, std::pair<std::string, std::string>> defaults_;  // value, origin
  std::set<std::string> used_;
};

}  // namespace ferry

#endif  // FERRY_BASE_ARGS_H_
