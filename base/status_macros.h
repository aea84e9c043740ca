// RETURN_IF_ERROR and ASSIGN_OR_RETURN: abseil 20220623 ships no status
// macros, so Ferry keeps these two.
//
//   RETURN_IF_ERROR(fd.Close());
//   ASSIGN_OR_RETURN(UniqueFd fd, OpenThing(path));
//
// Both evaluate their argument once. ASSIGN_OR_RETURN's left side may declare
// a variable (`auto x`, `Type x`) or name an existing lvalue.
#ifndef FERRY_BASE_STATUS_MACROS_H_
#define FERRY_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FERRY_STATUS_CONCAT_INNER_(a, b) a##b
#define FERRY_STATUS_CONCAT_(a, b) FERRY_STATUS_CONCAT_INNER_(a, b)

// Returns the absl::Status of `expr` from the current function if it is not OK.
#define RETURN_IF_ERROR(expr)                                            \
  do {                                                                   \
    ::absl::Status ferry_status_ = (expr);                               \
    if (!ferry_status_.ok()) return ferry_status_;                       \
  } while (false)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status if not OK,
// otherwise moves the value into `lhs`.
#define ASSIGN_OR_RETURN(lhs, rexpr)                                            \
  FERRY_ASSIGN_OR_RETURN_IMPL_(FERRY_STATUS_CONCAT_(ferry_statusor_, __LINE__), \
                               lhs, rexpr)

#define FERRY_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // FERRY_BASE_STATUS_MACROS_H_
