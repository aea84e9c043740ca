#include "base/proto_json.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"

namespace ferry {
namespace {

using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// MigrationPhase -> "MIGRATION_PHASE": an upper-case letter that follows a
// lower-case letter or a digit starts a new word.
std::string UpperSnake(absl::string_view camel) {
  std::string out;
  for (size_t i = 0; i < camel.size(); ++i) {
    const char c = camel[i];
    if (i > 0 && absl::ascii_isupper(c) &&
        (absl::ascii_islower(camel[i - 1]) || absl::ascii_isdigit(camel[i - 1])))
      out += '_';
    out += absl::ascii_toupper(c);
  }
  return out;
}

// One element of `field` (element `index` if repeated, else -1) as JSON.
std::string ValueJson(const Message& m, const FieldDescriptor* f, int index) {
  const Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return JsonNumber(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return JsonNumber(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_ENUM: {
      const int number = rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      const EnumValueDescriptor* value = f->enum_type()->FindValueByNumber(number);
      return value != nullptr ? JsonQuote(EnumValueSpelling(*value)) : absl::StrCat(number);
    }
    case FieldDescriptor::CPPTYPE_STRING:
      return JsonQuote(rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f));
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJson(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f)).ToString();
  }
  return "null";
}

}  // namespace

std::string EnumValueSpelling(const EnumValueDescriptor& value) {
  absl::string_view name = value.name();
  absl::ConsumePrefix(&name, UpperSnake(value.type()->name()) + "_");
  return absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
}

JsonObject ProtoToJson(const Message& message) {
  JsonObject o;
  const auto* d = message.GetDescriptor();
  const Reflection* r = message.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      std::string array = "[";
      for (int k = 0; k < r->FieldSize(message, f); ++k)
        absl::StrAppend(&array, k ? "," : "", ValueJson(message, f, k));
      o.AddJson(f->name(), array + "]");
    } else if (!f->has_presence() || r->HasField(message, f)) {
      o.AddJson(f->name(), ValueJson(message, f, -1));
    }
  }
  return o;
}

}  // namespace ferry
