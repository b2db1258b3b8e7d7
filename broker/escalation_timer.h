// EscalationTimer: raises an Escalation event (URGENT, addressed to the
// responsible team) when a workflow deadline passes. The deadlines are
// durable: the state machine keeps them in the store (d/ keys) in the same
// write as the state change that sets them, so after a restart the timer
// simply finds them again. A Boost.Asio steady timer polls the earliest
// deadlines (one seek), every day of the week.
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
  // How often deadlines are checked. Default: 1,000 ms.
  int poll_ms = 1000;
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
  // Waits for escalations being published to be answered. Idempotent.
  void Stop();

  uint64_t raised() const { return raised_.load(); }

 private:
  void Arm();
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
  std::atomic<int> pending_{0};
  bool stopped_ = false;
};

}  // namespace icr::broker
