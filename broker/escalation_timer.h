// EscalationTimer: raises an Escalation event (URGENT, addressed to the
// responsible team) when a workflow deadline passes. The deadlines are
// durable: the state machine keeps them in the store (d/ keys) in the same
// write as the state change that sets them, so after a restart the timer
// simply finds them again. A Boost.Asio steady timer sleeps until the
// earliest stored deadline (one seek finds it), at most `max_sleep_ms`; the
// state machine wakes it sooner when it arms an earlier one (Notify). It
// runs every day of the week.
//
// The event's source_message_id is derived from (referral, kind, deadline),
// so an escalation republished after a crash is stored once. An escalation
// refused because the referral moved on meanwhile is dropped.
//
// Thread-safety: Start/Stop from any thread; the work runs on its own thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstdint>
#include <climits>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "store/store.h"

namespace icr::broker {

class Ingest;

struct EscalationTimerOptions {
  // ODS code the escalations are published under (the ICB's). Default:
  // QWU (NHS Coventry and Warwickshire ICB).
  std::string organisation = "QWU";
  // Shortest sleep between two looks at the stored deadlines. Default:
  // 1,000 ms (a deadline is raised at most this late).
  int poll_ms = 1000;
  // Longest sleep when nothing is due sooner. Default: 60,000 ms.
  int max_sleep_ms = 60000;
  // Off: deadlines are still kept, but nothing is raised (e.g. while
  // importing history). Default: on.
  bool enabled = true;
};

class EscalationTimer {
 public:
  EscalationTimer(store::EventStore* store, Ingest* ingest, EscalationTimerOptions options);
  ~EscalationTimer();
  EscalationTimer(const EscalationTimer&) = delete;
  EscalationTimer& operator=(const EscalationTimer&) = delete;

  void Start();
  // A deadline due at `due_micros` was (probably) just stored: look again by
  // then. Thread-safe, cheap; a spurious call is harmless.
  void Notify(int64_t due_micros);
  // Waits for escalations being published to be answered. Idempotent.
  void Stop();

  uint64_t raised() const { return raised_.load(); }

 private:
  void Arm(int64_t next_due_micros);
  void Check();

  store::EventStore* store_;
  Ingest* ingest_;
  const EscalationTimerOptions options_;
  boost::asio::io_context io_;
  boost::asio::steady_timer timer_;
  std::thread thread_;

  std::mutex mu_;
  std::set<std::string> in_flight_;  // deadline keys being published
  std::set<std::string> dropped_;    // deadline keys whose escalation was refused
  std::atomic<uint64_t> raised_{0};
  // When the timer will look next (micros since the epoch). "Never" until
  // the first look is armed, so a deadline armed during start-up still
  // posts its wake-up (it runs after the first look).
  std::atomic<int64_t> wake_at_{INT64_MAX};
  std::atomic<bool> running_{false};
  std::atomic<int> pending_{0};
  bool stopped_ = false;
};

}  // namespace icr::broker
