// MigrationReport: how a migration went, produced by the source session at
// the end. It is defined once, as ferry.v1.MigrationReport in
// proto/ferry/v1/control.proto (field comments there); the engine fills
// that message, the agent serves it, and its JSON is derived from it
// (ProtoToJson), so no field list is written anywhere else. Times in ms,
// latencies in us.
#ifndef FERRY_MIGRATION_REPORT_H_
#define FERRY_MIGRATION_REPORT_H_

#include <string>
#include <vector>

#include "base/json.h"
#include "ferry/v1/control.pb.h"
#include "google/protobuf/repeated_field.h"

namespace ferry::migration {

using MigrationReport = ferry::v1::MigrationReport;
using PhaseTimings = google::protobuf::RepeatedPtrField<ferry::v1::PhaseTiming>;

// `migration`'s report, its migration_id the resource's id (what the
// engine sets too; also set for a record whose report lacks it).
MigrationReport ReportOf(const ferry::v1::MigrationResource& migration);

// The report as one JSON object: ProtoToJson (base/proto_json.h), so every
// field of the message, under its .proto name, always present except an
// unset digest_match; enums spelled as operators read them ("precopy").
JsonObject ReportJson(const MigrationReport& report);

// A human-readable multi-line summary; its first line is
// "migration ID: OUTCOME".
std::string ReportText(const MigrationReport& report);

// [{"phase": "setup", "start_unix_ms": ..., "end_unix_ms": ..., "duration_ms": ...}, ...]
std::vector<JsonObject> PhaseTimingsJson(const PhaseTimings& timings);
// One line per phase: "  phase precopy: 10:00:00.120 to 10:00:01.500 (1380 ms)".
std::string PhaseTimingsText(const PhaseTimings& timings);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_REPORT_H_
