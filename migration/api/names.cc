#include "migration/api/names.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/proto_json.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/generated_enum_reflection.h"

namespace ferry::api {
namespace {

namespace pb = google::protobuf;

// MIGRATION_MODE_HYBRID of enum MigrationMode -> "hybrid".
std::string SpellingOf(const pb::EnumDescriptor* e, int number) {
  const pb::EnumValueDescriptor* v = e->FindValueByNumber(number);
  if (v == nullptr || number == 0) return "unknown";
  return EnumValueSpelling(*v);
}

std::vector<std::string> Choices(const pb::EnumDescriptor* e) {
  std::vector<std::string> out;
  for (int i = 0; i < e->value_count(); ++i)
    if (e->value(i)->number() != 0) out.push_back(SpellingOf(e, e->value(i)->number()));
  return out;
}

std::string JoinChoices(const std::vector<std::string>& c) {
  if (c.size() < 2) return absl::StrJoin(c, "");
  return absl::StrCat(absl::StrJoin(c.begin(), c.end() - 1, ", "), " or ", c.back());
}

absl::StatusOr<int> Parse(const pb::EnumDescriptor* e, absl::string_view name,
                          absl::string_view what) {
  for (int i = 0; i < e->value_count(); ++i) {
    const int n = e->value(i)->number();
    if (n != 0 && SpellingOf(e, n) == name) return n;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown ", what, " '", name, "': choose ",
                                                 JoinChoices(Choices(e))));
}

}  // namespace

std::string Spelling(ferry::v1::WorkloadKind kind) {
  return SpellingOf(ferry::v1::WorkloadKind_descriptor(), kind);
}
std::string Spelling(ferry::v1::MigrationMode mode) {
  return SpellingOf(ferry::v1::MigrationMode_descriptor(), mode);
}
std::string Spelling(ferry::v1::FaultMode mode) {
  return SpellingOf(ferry::v1::FaultMode_descriptor(), mode);
}
std::string Spelling(ferry::v1::MigrationPhase phase) {
  return SpellingOf(ferry::v1::MigrationPhase_descriptor(), phase);
}
std::string Spelling(ferry::v1::VmState state) {
  return SpellingOf(ferry::v1::VmState_descriptor(), state);
}

std::string Spelling(ferry::v1::VmBackend backend) {
  return SpellingOf(ferry::v1::VmBackend_descriptor(), backend);
}

std::string Spelling(ferry::v1::EventKind kind) {
  return SpellingOf(ferry::v1::EventKind_descriptor(), kind);
}

absl::StatusOr<ferry::v1::VmBackend> ParseVmBackend(absl::string_view name) {
  absl::StatusOr<int> n = Parse(ferry::v1::VmBackend_descriptor(), name, "backend");
  if (!n.ok()) return n.status();
  return static_cast<ferry::v1::VmBackend>(*n);
}

absl::StatusOr<ferry::v1::WorkloadKind> ParseWorkloadKind(absl::string_view name) {
  absl::StatusOr<int> n = Parse(ferry::v1::WorkloadKind_descriptor(), name, "workload");
  if (!n.ok()) return n.status();
  return static_cast<ferry::v1::WorkloadKind>(*n);
}
absl::StatusOr<ferry::v1::MigrationMode> ParseMigrationMode(absl::string_view name) {
  absl::StatusOr<int> n = Parse(ferry::v1::MigrationMode_descriptor(), name, "migration mode");
  if (!n.ok()) return n.status();
  return static_cast<ferry::v1::MigrationMode>(*n);
}
absl::StatusOr<ferry::v1::FaultMode> ParseFaultMode(absl::string_view name) {
  absl::StatusOr<int> n = Parse(ferry::v1::FaultMode_descriptor(), name, "fault mode");
  if (!n.ok()) return n.status();
  return static_cast<ferry::v1::FaultMode>(*n);
}

std::string ErrorCodeName(int code) {
  if (code == 0) return "";
  return absl::AsciiStrToLower(absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
}

std::string WorkloadKindChoices() {
  return JoinChoices(Choices(ferry::v1::WorkloadKind_descriptor()));
}

absl::Status ValidateVmName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxVmNameSize)
    return absl::InvalidArgumentError(
        absl::StrCat("a VM name of ", name.size(), " characters: a name has ", kVmNameRule));
  auto alnum = [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); };
  bool ok = alnum(name[0]);
  for (char c : name) ok = ok && (alnum(c) || c == '-' || c == '_' || c == '.');
  if (!ok)
    return absl::InvalidArgumentError(
        absl::StrCat("VM name '", absl::CHexEscape(name), "': a name has ", kVmNameRule));
  return absl::OkStatus();
}

}  // namespace ferry::api
