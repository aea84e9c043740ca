#include "migration/agent/event_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "base/log_line.h"
#include "migration/api/names.h"

namespace ferry::agent {

bool EventFilter::Matches(const ferry::v1::Event& e) const {
  // A lost-events marker concerns every subscriber.
  if (e.kind() == ferry::v1::EVENT_KIND_EVENTS_LOST) return true;
  return (vm_name.empty() || e.vm_name() == vm_name) &&
         (migration_id.empty() || e.migration_id() == migration_id);
}

std::string EventLogLine(const ferry::v1::Event& e) {
  LogLevel level = LogLevel::kInfo;
  switch (e.kind()) {
    case ferry::v1::EVENT_KIND_REQUEST_REFUSED:
    case ferry::v1::EVENT_KIND_VM_FAILED:
    case ferry::v1::EVENT_KIND_EVENTS_LOST:
      level = LogLevel::kWarn;
      break;
    case ferry::v1::EVENT_KIND_MIGRATION_ENDED:
      if (e.outcome() == "failed") level = LogLevel::kWarn;
      break;
    default:
      break;
  }
  // Log event names are [a-z_.]: phase-changed logs as event.phase_changed.
  LogLine line(level,
               absl::StrCat("event.", absl::StrReplaceAll(api::Spelling(e.kind()), {{"-", "_"}})));
  line.Kv("seq", static_cast<uint64_t>(e.sequence()));
  if (!e.vm_name().empty()) line.Kv("vm", e.vm_name());
  if (!e.migration_id().empty()) line.Kv("migration", e.migration_id());
  if (!e.side().empty()) line.Kv("side", e.side());
  if (e.kind() == ferry::v1::EVENT_KIND_PHASE_CHANGED)
    line.Kv("from", e.from_phase() ? api::Spelling(e.from_phase()) : "-")
        .Kv("to", api::Spelling(e.to_phase()));
  if (!e.parameter().empty())
    line.Kv("parameter", e.parameter())
        .Kv("old", static_cast<int64_t>(e.old_value()))
        .Kv("new", static_cast<int64_t>(e.new_value()));
  if (!e.outcome().empty()) line.Kv("outcome", e.outcome());
  if (!e.rpc().empty()) line.Kv("rpc", e.rpc()).Kv("code", e.code());
  if (!e.identity().empty()) line.Kv("identity", e.identity());
  if (e.lost() > 0) line.Kv("lost", static_cast<uint64_t>(e.lost()));
  if (!e.message().empty()) line.Kv("message", e.message());
  return line.str();
}

ferry::v1::Event MakeEvent(ferry::v1::EventKind kind, const std::string& vm_name,
                           const std::string& migration_id, const std::string& side,
                           const std::string& message) {
  ferry::v1::Event e;
  e.set_kind(kind);
  e.set_vm_name(vm_name);
  e.set_migration_id(migration_id);
  e.set_side(side);
  e.set_message(message);
  return e;
}

ferry::v1::Event PhaseChangedEvent(const std::string& vm_name, const std::string& migration_id,
                                   const std::string& side, ferry::v1::MigrationPhase from,
                                   ferry::v1::MigrationPhase to) {
  ferry::v1::Event e = MakeEvent(ferry::v1::EVENT_KIND_PHASE_CHANGED, vm_name, migration_id, side);
  e.set_from_phase(from);
  e.set_to_phase(to);
  return e;
}

ferry::v1::Event RefusedEvent(const std::string& rpc, const absl::Status& why,
                              const std::string& identity, const std::string& vm_name,
                              const std::string& migration_id) {
  ferry::v1::Event e = MakeEvent(ferry::v1::EVENT_KIND_REQUEST_REFUSED, vm_name, migration_id, "",
                                 std::string(why.message()));
  e.set_rpc(rpc);
  e.set_code(absl::StatusCodeToString(why.code()));
  e.set_identity(identity.substr(0, 64));
  return e;
}

EventLog::EventLog(Options options) : options_(std::move(options)) {}

uint64_t EventLog::Publish(ferry::v1::Event event) {
  const int64_t now =
      options_.now_unix_ms ? options_.now_unix_ms() : absl::ToUnixMillis(absl::Now());
  absl::MutexLock lock(&mu_);
  event.set_sequence(next_sequence_++);
  // Never earlier than the event before, whatever the wall clock did.
  event.set_time_unix_ms(ring_.empty() ? now : std::max(now, ring_.back().time_unix_ms()));
  if (options_.log) options_.log(EventLogLine(event));
  ring_.push_back(std::move(event));
  while (ring_.size() > std::max<size_t>(options_.capacity, 1)) ring_.pop_front();
  return ring_.back().sequence();
}

void EventLog::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

uint64_t EventLog::next_sequence() const {
  absl::MutexLock lock(&mu_);
  return next_sequence_;
}

std::unique_ptr<EventLog::Subscription> EventLog::Subscribe(EventFilter filter,
                                                            uint64_t since_sequence) {
  absl::MutexLock lock(&mu_);
  const uint64_t cursor =
      since_sequence == 0 ? next_sequence_ : std::min(since_sequence, next_sequence_);
  return std::unique_ptr<Subscription>(new Subscription(this, std::move(filter), cursor));
}

EventLog::Subscription::~Subscription() = default;

void EventLog::Subscription::Cancel() {
  absl::MutexLock lock(&log_->mu_);
  cancelled_ = true;
}

bool EventLog::Subscription::Next(absl::Duration timeout, std::vector<ferry::v1::Event>* out) {
  EventLog& log = *log_;
  absl::MutexLock lock(&log.mu_);
  auto ready = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return cancelled_ || log.closed_ || log.next_sequence_ > cursor_;
  };
  log.mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (cancelled_) return false;
  if (log.next_sequence_ <= cursor_) return !log.closed_;  // nothing new
  const uint64_t oldest = log.ring_.empty() ? log.next_sequence_ : log.ring_.front().sequence();
  if (cursor_ < oldest) {
    ferry::v1::Event lost;
    lost.set_kind(ferry::v1::EVENT_KIND_EVENTS_LOST);
    lost.set_sequence(oldest - 1);
    lost.set_time_unix_ms(log.ring_.empty() ? 0 : log.ring_.front().time_unix_ms());
    lost.set_lost(oldest - cursor_);
    lost.set_message(absl::StrCat("events lost: ", oldest - cursor_,
                                  " (this watcher fell behind the agent's last ",
                                  log.options_.capacity, ")"));
    out->push_back(std::move(lost));
    cursor_ = oldest;
  }
  for (size_t i = cursor_ - oldest; i < log.ring_.size(); ++i)
    if (filter_.Matches(log.ring_[i])) out->push_back(log.ring_[i]);
  cursor_ = log.next_sequence_;
  return true;
}

}  // namespace ferry::agent
