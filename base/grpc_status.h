// The one mapping between absl::Status and grpc::Status. The canonical codes
// are the same numbers in both; messages pass through unchanged.
#ifndef FERRY_BASE_GRPC_STATUS_H_
#define FERRY_BASE_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace ferry {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace ferry

#endif  // FERRY_BASE_GRPC_STATUS_H_
