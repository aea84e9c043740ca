// DestinationSession::OnCheck: the destination's end of a preflight check
// (migration/preflight.h).
#include "migration/destination_session.h"
#include "migration/preflight.h"

namespace ferry::migration {

absl::Status DestinationSession::OnCheck(const ferry::v1::Hello& hello) {
  // Nothing here changes the session's state: no id, no secret, no VM. The
  // migration service lists sessions by migration id, so a check is never
  // shown as a migration.
  const std::vector<CheckItem> items =
      CheckIncoming(hello, options_.expected_token, options_.admit_check);
  if (options_.checked) options_.checked(hello.vm_name().substr(0, kMaxCheckTextBytes), items);
  ferry::v1::DestinationMessage reply;
  for (const CheckItem& item : items) *reply.mutable_check_result()->add_items() = ToProto(item);
  absl::Status sent = Send(reply);
  receiving_ = false;
  End(sent);  // OK: the stream ends cleanly after the answer
  return absl::OkStatus();
}

}  // namespace ferry::migration
