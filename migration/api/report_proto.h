// MigrationReport <-> ferry.v1.MigrationReport, for the control API and the
// CLI (which prints the report as JSON with the engine's field names).
#ifndef FERRY_MIGRATION_API_REPORT_PROTO_H_
#define FERRY_MIGRATION_API_REPORT_PROTO_H_

#include "ferry/v1/control.pb.h"
#include "migration/report.h"

namespace ferry::api {

ferry::v1::MigrationReport ToProto(const migration::MigrationReport& r);
migration::MigrationReport FromProto(const ferry::v1::MigrationReport& p,
                                     const std::string& migration_id);

}  // namespace ferry::api

#endif  // FERRY_MIGRATION_API_REPORT_PROTO_H_
