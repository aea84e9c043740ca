// EventLog: the agent-wide stream of events (ferry.v1.Event): VM lifecycle,
// migration phase changes on either side, parameter changes, recoveries,
// refusals. ferry.v1.Control WatchEvents and `ferry events` read it.
//
// Publish() stamps each event with the next sequence number (from 1, one
// per event) and the wall-clock time, writes it to the agent's log as one
// line (event=event.KIND, e.g. event.phase_changed), keeps it in a ring of the last `capacity`
// events, and wakes the subscribers. It never waits for a subscriber: a
// subscriber that falls more than `capacity` events behind skips the
// events the ring dropped and is told how many, by an EVENTS_LOST event
// (whose sequence is the last one lost).
//
// Threads: thread-safe. Publishers (migration threads, RPC handlers) may
// hold their own locks: Publish takes only the log's lock and calls the
// log function under it (so log lines are in sequence order). A
// Subscription is read by one thread at a time; Cancel() may come from any
// thread. The EventLog must outlive its subscriptions.
//
//   EventLog events({.log = log});
//   auto sub = events.Subscribe({.vm_name = "web"}, /*since_sequence=*/0);
//   std::vector<ferry::v1::Event> got;
//   while (sub->Next(absl::Milliseconds(250), &got)) { ...; got.clear(); }
#ifndef FERRY_MIGRATION_AGENT_EVENT_LOG_H_
#define FERRY_MIGRATION_AGENT_EVENT_LOG_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ferry/v1/control.pb.h"

namespace ferry::agent {

// Which events a subscriber wants; an empty field matches every event.
struct EventFilter {
  std::string vm_name;
  std::string migration_id;
  bool Matches(const ferry::v1::Event& event) const;
};

class EventLog {
 public:
  struct Options {
    size_t capacity = 4096;  // events kept for replay and slow subscribers
    // Milliseconds since the Unix epoch now; default absl::Now().
    std::function<int64_t()> now_unix_ms;
    std::function<void(const std::string&)> log;  // one line per event; may be empty
  };
  explicit EventLog(Options options);

  // Publishes `event` (its sequence and time are set here) and returns its
  // sequence.
  uint64_t Publish(ferry::v1::Event event);
  // Ends every subscription, present and future (their Next returns false
  // once they read what was published before). For the agent's shutdown.
  void Close();
  // The sequence the next event will get.
  uint64_t next_sequence() const;

  class Subscription {
   public:
    ~Subscription();
    // Waits up to `timeout` for events after those already read, and
    // appends the matching ones to *out (an EVENTS_LOST first if the ring
    // dropped some unread). True while the subscription goes on (*out may
    // have got nothing: the timeout); false once it was cancelled or the
    // log closed and nothing is left to read.
    bool Next(absl::Duration timeout, std::vector<ferry::v1::Event>* out);
    // Ends the subscription; a Next() waiting returns false at once.
    void Cancel();

   private:
    friend class EventLog;
    Subscription(EventLog* log, EventFilter filter, uint64_t cursor)
        : log_(log), filter_(std::move(filter)), cursor_(cursor) {}
    EventLog* const log_;
    const EventFilter filter_;
    uint64_t cursor_;         // the next sequence to read (under log_->mu_)
    bool cancelled_ = false;  // under log_->mu_
  };
  // A subscription to the events matching `filter`: with since_sequence 0
  // those published from now on; else first those still kept whose
  // sequence is at least since_sequence (an EVENTS_LOST first if some of
  // those are gone).
  std::unique_ptr<Subscription> Subscribe(EventFilter filter, uint64_t since_sequence);

 private:
  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<ferry::v1::Event> ring_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// The log line of `event` (event=event.KIND, with _ for -, seq=... and its fields).
std::string EventLogLine(const ferry::v1::Event& event);

// Builders of the events the agent publishes. `side` is "source" or
// "destination" for a migration's events.
ferry::v1::Event MakeEvent(ferry::v1::EventKind kind, const std::string& vm_name,
                           const std::string& migration_id = "", const std::string& side = "",
                           const std::string& message = "");
ferry::v1::Event PhaseChangedEvent(const std::string& vm_name, const std::string& migration_id,
                                   const std::string& side, ferry::v1::MigrationPhase from,
                                   ferry::v1::MigrationPhase to);
// A refused Control call `rpc` (or incoming migration), its status, the
// caller's identity ("" when none).
ferry::v1::Event RefusedEvent(const std::string& rpc, const absl::Status& why,
                              const std::string& identity, const std::string& vm_name = "",
                              const std::string& migration_id = "");

}  // namespace ferry::agent

#endif  // FERRY_MIGRATION_AGENT_EVENT_LOG_H_
