#include "migration/source_state.h"

#include "absl/strings/str_format.h"

namespace ferry::migration {
namespace {

using S = SourceState;
using ferry::v1::DestinationMessage;

bool Allowed(S from, S to) {
  if (IsFinal(from)) return false;
  if (to == S::kFailed) return true;  // any live state can fail
  switch (from) {
    case S::kConnecting:
      return to == S::kAccepted || to == S::kCancelling;
    case S::kAccepted:
      return to == S::kPrecopy || to == S::kPaused || to == S::kCancelling;
    case S::kPrecopy:
      return to == S::kDiscarding || to == S::kPaused || to == S::kCancelling;
    case S::kDiscarding:
      return to == S::kPaused || to == S::kCancelling;
    case S::kPaused:
      return to == S::kSwitchingOver || to == S::kCancelling;
    case S::kSwitchingOver:
      // Paused: the stream broke before Resumed (the destination's answer
      // to Reconnect tells whether it runs the VM).
      return to == S::kPostcopy || to == S::kPostcopyPaused;
    case S::kPostcopy:
      return to == S::kCompleting || to == S::kPostcopyPaused;
    case S::kCompleting:
      return to == S::kReleasing || to == S::kPostcopyPaused;
    case S::kPostcopyPaused:
      // Recovered: push what is missing; Completed: it had completed.
      return to == S::kPostcopy || to == S::kReleasing;
    case S::kReleasing:
      return to == S::kCompleted;
    case S::kCancelling:
      return to == S::kCancelled;
    default:
      return false;
  }
}

}  // namespace

const char* SourceStateName(SourceState state) {
  switch (state) {
    case S::kConnecting: return "connecting";
    case S::kAccepted: return "accepted";
    case S::kPrecopy: return "precopy";
    case S::kDiscarding: return "discarding";
    case S::kPaused: return "paused";
    case S::kSwitchingOver: return "switching-over";
    case S::kPostcopy: return "postcopy";
    case S::kPostcopyPaused: return "postcopy-paused";
    case S::kCompleting: return "completing";
    case S::kReleasing: return "releasing";
    case S::kCompleted: return "completed";
    case S::kCancelling: return "cancelling";
    case S::kCancelled: return "cancelled";
    case S::kFailed: return "failed";
  }
  return "unknown";
}

bool IsFinal(SourceState state) {
  return state == S::kCompleted || state == S::kCancelled || state == S::kFailed;
}

bool DestinationMayRun(SourceState state) {
  return state == S::kSwitchingOver || state == S::kPostcopy || state == S::kCompleting ||
         state == S::kPostcopyPaused || state == S::kReleasing || state == S::kCompleted;
}

absl::Status CheckTransition(SourceState from, SourceState to) {
  if (Allowed(from, to)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "the source session cannot go from %s to %s", SourceStateName(from),
      SourceStateName(to)));
}

const char* DestinationMessageName(DestinationMessage::MsgCase kind) {
  switch (kind) {
    case DestinationMessage::kAccepted: return "Accepted";
    case DestinationMessage::kProgress: return "Progress";
    case DestinationMessage::kResumed: return "Resumed";
    case DestinationMessage::kCompleted: return "Completed";
    case DestinationMessage::kError: return "Error";
    case DestinationMessage::kRecovered: return "Recovered";
    case DestinationMessage::kChallenge: return "Challenge";
    default: return "an empty or unknown message";
  }
}

absl::Status CheckDestinationMessage(SourceState state, DestinationMessage::MsgCase kind) {
  bool ok = false;
  switch (kind) {
    case DestinationMessage::kAccepted:
    case DestinationMessage::kRedirect:  // instead of Accepted
      ok = state == S::kConnecting;
      break;
    case DestinationMessage::kProgress:
      // Acknowledgements of rounds and discards, and the destination's
      // progress once it runs; a late one may cross a Cancel.
      ok = state != S::kConnecting && !IsFinal(state);
      break;
    case DestinationMessage::kResumed:
      ok = state == S::kSwitchingOver;
      break;
    case DestinationMessage::kCompleted:
      // Paused: the answer to Reconnect when the destination had completed.
      ok = state == S::kCompleting || state == S::kPostcopyPaused;
      break;
    case DestinationMessage::kRecovered:
    case DestinationMessage::kChallenge:  // on a Reconnect's stream
      ok = state == S::kPostcopyPaused;
      break;
    case DestinationMessage::kError:
      ok = true;  // the destination may give up at any time
      break;
    default:
      return absl::InvalidArgumentError(
          "protocol: an empty or unknown message from the destination");
  }
  if (ok) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "protocol: the destination sent %s while the source is %s",
      DestinationMessageName(kind), SourceStateName(state)));
}

}  // namespace ferry::migration
