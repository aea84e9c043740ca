// The source state machine's tables: every transition of the diagram in
// source_state.h is allowed, every other pair refused naming both; every
// destination message is accepted exactly in the states that expect it.
#include "migration/source_state.h"

#include <set>
#include <utility>

#include "base/status_matchers.h"
#include "gtest/gtest.h"

namespace ferry::migration {
namespace {

using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;
using S = SourceState;
using ferry::v1::DestinationMessage;

constexpr S kAll[] = {S::kConnecting, S::kAccepted,   S::kPrecopy,       S::kDiscarding,
                      S::kPaused,     S::kSwitchingOver, S::kPostcopy,   S::kCompleting,
                      S::kReleasing,  S::kCompleted,  S::kCancelling,    S::kCancelled,
                      S::kFailed,     S::kPostcopyPaused};

TEST(SourceState, OnlyTheDiagramsTransitionsAreAllowed) {
  const std::set<std::pair<S, S>> allowed = {
      {S::kConnecting, S::kAccepted},     {S::kAccepted, S::kPrecopy},
      {S::kAccepted, S::kPaused},         {S::kPrecopy, S::kDiscarding},
      {S::kPrecopy, S::kPaused},          {S::kDiscarding, S::kPaused},
      {S::kPaused, S::kSwitchingOver},    {S::kSwitchingOver, S::kPostcopy},
      {S::kPostcopy, S::kCompleting},     {S::kCompleting, S::kReleasing},
      {S::kReleasing, S::kCompleted},     {S::kConnecting, S::kCancelling},
      {S::kAccepted, S::kCancelling},     {S::kPrecopy, S::kCancelling},
      {S::kDiscarding, S::kCancelling},   {S::kPaused, S::kCancelling},
      {S::kCancelling, S::kCancelled},
      // Postcopy recovery.
      {S::kSwitchingOver, S::kPostcopyPaused}, {S::kPostcopy, S::kPostcopyPaused},
      {S::kCompleting, S::kPostcopyPaused},    {S::kPostcopyPaused, S::kPostcopy},
      {S::kPostcopyPaused, S::kReleasing},
  };
  for (S from : kAll) {
    for (S to : kAll) {
      const bool want = allowed.count({from, to}) > 0 || (!IsFinal(from) && to == S::kFailed);
      absl::Status s = CheckTransition(from, to);
      if (want) {
        EXPECT_OK(s) << SourceStateName(from) << " -> " << SourceStateName(to);
      } else {
        EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition,
                                HasSubstr(absl::StrCat("from ", SourceStateName(from), " to ",
                                                       SourceStateName(to)))));
      }
    }
  }
}

TEST(SourceState, TheDestinationMayRunFromSwitchoverOn) {
  for (S s : kAll) {
    const bool want = s == S::kSwitchingOver || s == S::kPostcopy || s == S::kCompleting ||
                      s == S::kPostcopyPaused || s == S::kReleasing || s == S::kCompleted;
    EXPECT_EQ(DestinationMayRun(s), want) << SourceStateName(s);
  }
}

TEST(SourceState, DestinationMessagesFitTheirStates) {
  struct Case {
    DestinationMessage::MsgCase kind;
    std::set<S> accepted_in;
  };
  std::set<S> live_after_accept;
  for (S s : kAll)
    if (!IsFinal(s) && s != S::kConnecting) live_after_accept.insert(s);
  const Case cases[] = {
      {DestinationMessage::kAccepted, {S::kConnecting}},
      {DestinationMessage::kProgress, live_after_accept},
      {DestinationMessage::kResumed, {S::kSwitchingOver}},
      {DestinationMessage::kCompleted, {S::kCompleting, S::kPostcopyPaused}},
      {DestinationMessage::kRecovered, {S::kPostcopyPaused}},
      {DestinationMessage::kError, std::set<S>(std::begin(kAll), std::end(kAll))},
  };
  for (const Case& c : cases) {
    for (S s : kAll) {
      absl::Status st = CheckDestinationMessage(s, c.kind);
      if (c.accepted_in.count(s)) {
        EXPECT_OK(st) << DestinationMessageName(c.kind) << " in " << SourceStateName(s);
      } else {
        EXPECT_THAT(st, StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr(absl::StrCat("sent ", DestinationMessageName(c.kind),
                                                        " while the source is ",
                                                        SourceStateName(s)))));
      }
    }
  }
  EXPECT_THAT(CheckDestinationMessage(S::kPrecopy, DestinationMessage::MSG_NOT_SET),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty or unknown")));
}

}  // namespace
}  // namespace ferry::migration
