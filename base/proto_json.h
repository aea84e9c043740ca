// ProtoToJson: a protobuf message as one JSON object, derived from its
// descriptor, so a report defined once in a .proto is written as JSON
// without a hand-written field list.
//
// The shape, stable for a given .proto:
//  - keys are the fields' names as declared (snake_case), in declaration
//    order;
//  - a field without presence (a proto3 scalar, string or enum) is always
//    written, at its zero value when unset;
//  - a field with presence (proto3 `optional`, a message field) is written
//    only when set: an unset optional is absent, never null;
//  - integers (64-bit included) and floating point are JSON numbers
//    (non-finite ones null); bytes are written as strings;
//  - enums are spelled as operators read them (migration/api/names.h):
//    the value's name without its type's prefix (the type's name in
//    UPPER_SNAKE form and '_'), in lower case, with '-' for '_':
//    MIGRATION_PHASE_POSTCOPY_PAUSED of MigrationPhase is
//    "postcopy-paused", UNSPECIFIED values "unspecified"; a value without
//    that prefix keeps its whole name (lower case, '-'); a number the enum
//    does not know is written as that number;
//  - repeated fields are arrays (empty when unset); maps are arrays of
//    {"key", "value"} objects.
//
// Unlike google::protobuf::util::MessageToJsonString, 64-bit integers are
// numbers, not strings, and names are not camelCased: what jq and the
// benchmark scripts read stays as it was.
//
// Pure function; safe from any thread.
//
//   std::cout << ProtoToJson(report).ToString() << "\n";
#ifndef FERRY_BASE_PROTO_JSON_H_
#define FERRY_BASE_PROTO_JSON_H_

#include <string>

#include "base/json.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace ferry {

JsonObject ProtoToJson(const google::protobuf::Message& message);

// An enum value as operators read it: its name without its type's prefix
// (the type's name in UPPER_SNAKE and '_'), in lower case, '-' for '_':
// MIGRATION_PHASE_POSTCOPY_PAUSED of MigrationPhase is "postcopy-paused".
// The one rule of the CLI, the logs, the report and this JSON
// (migration/api/names.h).
std::string EnumValueSpelling(const google::protobuf::EnumValueDescriptor& value);

}  // namespace ferry

#endif  // FERRY_BASE_PROTO_JSON_H_
