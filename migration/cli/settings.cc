#include "migration/cli/settings.h"

#include <unistd.h>

#include <cstdlib>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/config_file.h"
#include "base/status_macros.h"

namespace ferry::cli {
namespace {

struct Setting {
  const char* key;       // in the config file
  const char* env;       // nullptr: none
  const char* flags[2];  // the flags it is the default of
};

constexpr Setting kSettings[] = {
    {"agent", "FERRY_AGENT", {"agent", "from"}},
    {"tls-ca", "FERRY_TLS_CA", {"tls-ca", nullptr}},
    {"tls-cert", "FERRY_TLS_CERT", {"tls-cert", nullptr}},
    {"tls-key", "FERRY_TLS_KEY", {"tls-key", nullptr}},
    {"connect-timeout-ms", nullptr, {"connect-timeout-ms", nullptr}},
};

const char* Env(const char* name) {
  const char* v = name ? getenv(name) : nullptr;
  return v && *v ? v : nullptr;
}

}  // namespace

std::string ConfigPath() {
  if (const char* p = Env("FERRY_CONFIG")) return p;
  if (const char* x = Env("XDG_CONFIG_HOME")) return absl::StrCat(x, "/ferry/config");
  if (const char* h = Env("HOME")) return absl::StrCat(h, "/.config/ferry/config");
  return "";
}

absl::Status ApplySettings(Args& args) {
  std::map<std::string, std::pair<std::string, std::string>> values;  // key: value, origin
  const std::string path = ConfigPath();
  if (!path.empty() && (Env("FERRY_CONFIG") || access(path.c_str(), F_OK) == 0)) {
    ASSIGN_OR_RETURN(std::vector<ConfigSetting> file, ReadConfigFile(path));
    for (const ConfigSetting& s : file) {
      bool known = false;
      for (const Setting& k : kSettings) known = known || s.key == k.key;
      if (!known)
        return absl::InvalidArgumentError(absl::StrCat(
            s.origin, ": unknown setting '", s.key,
            "' (agent, tls-ca, tls-cert, tls-key, connect-timeout-ms)"));
      values[s.key] = {s.value, s.origin};
    }
  }
  for (const Setting& k : kSettings)
    if (const char* v = Env(k.env)) values[k.key] = {v, absl::StrCat("$", k.env)};
  for (const Setting& k : kSettings) {
    auto it = values.find(k.key);
    if (it == values.end()) continue;
    for (const char* flag : k.flags)
      if (flag) args.SetDefault(flag, it->second.first, it->second.second);
  }
  return absl::OkStatus();
}

}  // namespace ferry::cli
