// SubscriptionEngine: what one subscription sends next, and its bookkeeping
// of acknowledgements, redelivery and parking. It knows nothing of gRPC: the
// stream reactor (broker/service.cc) asks it for the next delivery whenever
// the stream can take a write, and feeds it acks and clock ticks.
//
// Ordering: events are read in position (store) order. A durable
// subscription has at most one unacknowledged event per NHS number in flight;
// later events of that person wait ("held") until it is acknowledged or
// parked, so per person the delivery order equals the store order even
// across redeliveries. Other people's events flow past a held one.
//
// Cursor: every event at or below the cursor was acknowledged, parked or did
// not match the filter. It is what a reconnecting subscriber resumes after,
// so it never passes an event that was neither acknowledged nor parked.
//
// Memory: at most max_in_flight events are in flight or held; reading from
// the log stops while the window is full, so a slow subscriber costs a
// bounded amount of memory and catches up from the store later.
//
// Thread-safety: not thread-safe; the owner serialises calls (a mutex per
// stream).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker/filter.h"
#include "icr/v1/state.pb.h"
#include "store/store.h"

namespace icr::broker {

// Where committed events are read from (the hub's recent-events ring, falling
// back to the store).
class EventSource {
 public:
  virtual ~EventSource() = default;
  // Up to `max` committed events with position >= `from`, in order.
  virtual store::Status Read(uint64_t from, size_t max, std::vector<store::EventPtr>* out) = 0;
};

struct Delivery {
  store::EventPtr event;
  uint32_t attempt = 1;
};

struct AckOutcome {
  uint64_t cursor = 0;
  std::vector<uint64_t> unknown_positions;
};

class SubscriptionEngine {
 public:
  // Ephemeral: no acks, no redelivery, nothing persisted; starts at `start`.
  SubscriptionEngine(EventSource* source, CompiledFilter filter, uint64_t start);
  // Durable: resumes after state.cursor(); persists through `store`.
  SubscriptionEngine(EventSource* source, store::EventStore* store,
                     icr::v1::internal::SubscriptionState state);

  SubscriptionEngine(const SubscriptionEngine&) = delete;
  SubscriptionEngine& operator=(const SubscriptionEngine&) = delete;

  // The next event to send, if any is ready now. nullopt: caught up, or the
  // in-flight window is full. A read error from the store is returned.
  store::Status Next(int64_t now_micros, std::optional<Delivery>* out);

  // Team routing (see CompiledFilter::SetTeam). Call before the first Next.
  void SetTeam(const icr::v1::Team& team, CompiledFilter::RelationshipFn related) {
    filter_.SetTeam(team, std::move(related));
  }

  // Durable only: acknowledge delivered positions; persists a moved cursor.
  AckOutcome Ack(const std::vector<uint64_t>& positions);

  // Durable only: redeliver what timed out, park what ran out of attempts
  // (at most 64 per call: each park is a synced write; the rest wait for the
  // next tick). Returns an error if a parked record could not be written
  // (the event then stays in flight and is retried at the next tick).
  store::Status Tick(int64_t now_micros);

  // Durable only: parks a delivered, unacknowledged event now, for owners
  // that run their own retry policy instead of Tick's ack timeout (the FHIR
  // rest-hook deliverer). `position` must have been returned by Next and not
  // yet acknowledged or parked, else kNotFound and nothing changes. The
  // parked record says `attempts` (0: the engine's own count). Like Tick, the
  // cursor may then pass the event and the person's next held event becomes
  // ready; a replayed parked event goes back to parked. On a store error the
  // event stays in flight and the call may be repeated.
  store::Status ParkNow(uint64_t position, int64_t now_micros, uint32_t attempts = 0);

  // Durable only: queue parked events for delivery again (all when
  // `positions` is empty, else those listed). Their parked records are
  // removed when they are acknowledged. Sets *count to the number queued.
  store::Status ReplayParked(const std::vector<uint64_t>& positions, uint32_t* count);

  // Durable only: writes the state if the cursor moved (sync as asked).
  store::Status Persist(bool sync);

  bool durable() const { return durable_; }
  uint64_t cursor() const { return state_.cursor(); }
  size_t in_flight() const { return in_flight_.size() + replays_.size(); }
  const std::string& name() const { return state_.name(); }

 private:
  struct Flight {
    store::EventPtr event;
    uint32_t attempts = 0;
    int64_t deadline = 0;
    bool sent = false;
  };

  store::Status NextMatching(store::EventPtr* out);
  void Release(const std::string& nhs_number);
  uint64_t ComputeCursor() const;
  void RecomputeCursor();
  store::Status Park(uint64_t position, Flight flight, int64_t now_micros);

  EventSource* source_;
  store::EventStore* store_ = nullptr;
  const bool durable_;
  icr::v1::internal::SubscriptionState state_;
  CompiledFilter filter_;
  uint64_t persisted_cursor_ = 0;

  uint64_t next_read_;                      // first position not yet fetched
  std::deque<store::EventPtr> fetched_;     // fetched, not yet matched
  std::map<uint64_t, Flight> in_flight_;    // position -> flight (incl. ready)
  std::map<uint64_t, Flight> replays_;      // replayed parked events
  std::deque<uint64_t> ready_;              // positions to send next
  std::unordered_set<std::string> busy_patients_;
  std::unordered_map<std::string, std::deque<store::EventPtr>> held_;
  std::set<uint64_t> held_positions_;
  std::set<uint64_t> parked_ahead_;         // parked above the cursor: skip when read
};

}  // namespace icr::broker
