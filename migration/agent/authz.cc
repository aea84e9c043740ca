#include "migration/agent/authz.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/config_file.h"
#include "base/file.h"

namespace ferry::agent {
namespace {

constexpr size_t kMaxShownIdentity = 64;

const char* PermissionName(Permission p) {
  switch (p) {
    case Permission::kRead:
      return "read";
    case Permission::kVm:
      return "vm";
    case Permission::kMigrate:
      return "migrate";
  }
  return "?";
}

std::string Shown(absl::string_view identity) {
  if (identity.empty()) return "a client without a certificate";
  return absl::StrFormat("'%s'", identity.substr(0, kMaxShownIdentity));
}

}  // namespace

absl::StatusOr<AuthzPolicy> AuthzPolicy::Parse(absl::string_view text, absl::string_view file) {
  absl::StatusOr<std::vector<ConfigSetting>> settings = ParseConfig(text, file);
  if (!settings.ok()) return settings.status();
  AuthzPolicy p;
  for (const ConfigSetting& s : *settings) {
    std::vector<std::string> items;
    for (absl::string_view item : absl::StrSplit(s.value, ',', absl::SkipWhitespace()))
      items.emplace_back(absl::StripAsciiWhitespace(item));
    if (s.key == "destinations") {
      if (p.destinations_)
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: `destinations` is given twice", s.origin));
      p.destinations_.emplace(items.begin(), items.end());
      continue;
    }
    if (p.grants_.count(s.key))
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: identity '%s' is given twice", s.origin, s.key));
    int bits = 0;
    for (const std::string& item : items) {
      if (item == "read") {
        bits |= static_cast<int>(Permission::kRead);
      } else if (item == "vm") {
        bits |= static_cast<int>(Permission::kVm);
      } else if (item == "migrate") {
        bits |= static_cast<int>(Permission::kMigrate);
      } else if (item == "all") {
        bits |= 7;
      } else {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: unknown permission '%s' (read, vm, migrate or all)", s.origin, item));
      }
    }
    p.grants_[s.key] = bits;
  }
  return p;
}

absl::StatusOr<AuthzPolicy> AuthzPolicy::Read(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok())
    return absl::InvalidArgumentError(absl::StrCat("--authz: ", text.status().message()));
  return Parse(*text, path);
}

absl::Status AuthzPolicy::Check(absl::string_view identity, Permission permission,
                                absl::string_view what, absl::string_view destination) const {
  auto it = identity.empty() ? grants_.end() : grants_.find(identity);
  if (it == grants_.end()) it = grants_.find("*");
  const int bits = it == grants_.end() ? 0 : it->second;
  if (!(bits & static_cast<int>(permission)))
    return absl::PermissionDeniedError(
        absl::StrFormat("%s may not %s: it lacks the '%s' permission (ferryd --authz)",
                        Shown(identity), what, PermissionName(permission)));
  if (!destination.empty() && destinations_ && !destinations_->count(destination))
    return absl::PermissionDeniedError(
        absl::StrFormat("migrations from this agent may go only to %s, not to %s (ferryd --authz)",
                        absl::StrJoin(*destinations_, ", "), destination.substr(0, 255)));
  return absl::OkStatus();
}

std::string CallerIdentity(const grpc::ServerContext& ctx) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return "";
  for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name"))
    return std::string(cn.data(), cn.size());
  return "";
}

}  // namespace ferry::agent
