// SubscriptionEngine: what one subscription sends next, and its bookkeeping
// of acknowledgements, redelivery and parking. It knows nothing of gRPC: the
// stream reactor (broker/service.cc) asks it for the next delivery whenever
// the stream can take a write, and feeds it acks and clock ticks.
//
// Priority lanes: every matched event waits in its person's queue, and the
// people with something to send wait in one of three lanes, URGENT, ROUTINE
// (and unspecified) and BULK, by the most urgent event they wait with. Next
// serves redeliveries and people of the URGENT lane first, then ROUTINE, then
// BULK. A person's events always leave in store order: an urgent event
// waiting behind that person's routine one lifts the whole queue to URGENT.
//
// Catch-up: a subscription that is behind reads the log in position order,
// at most max_in_flight events ahead of what is acknowledged. So that an
// urgent event never waits behind that backlog, the engine also reads the
// store's urgent index ahead of the log reader, and sends each matching
// urgent event at once together with the earlier unsent events of the same
// person (read from the person index; at most 64, else it waits its turn).
// Events sent ahead are skipped when the log reader reaches them, and a
// durable subscription persists which of them were acknowledged, so a
// reconnect does not send them again.
//
// Tail: a subscription that has caught up stops reading the log and follows
// it instead (EventSource::Follow): the hub matches each committed event
// against an index of the followers' filters and queues it to those it
// matches, up to a bound; a follower that falls that far behind is dropped
// back to catch-up, from where it left off, with nothing lost.
//
// Ordering: a durable subscription has at most one unacknowledged event per
// NHS number in flight; later events of that person wait until it is
// acknowledged or parked. Other people's events flow past a waiting one.
//
// Cursor: every event at or below the cursor was acknowledged, parked or did
// not match the filter. It is what a reconnecting subscriber resumes after,
// so it never passes an event that was neither acknowledged nor parked.
//
// Memory: at most max_in_flight events are in flight or waiting, plus at most
// 1,024 sent ahead by the urgent lane and the follower's queue bound.
//
// Thread-safety: not thread-safe; the owner serialises calls (a mutex per
// stream). The Follower is shared with the hub's thread and locks itself.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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

class Follower;

// Where committed events are read from (the hub's recent-events ring, falling
// back to the store).
class EventSource {
 public:
  virtual ~EventSource() = default;
  // Up to `max` committed events with position >= `from`, in order.
  virtual store::Status Read(uint64_t from, size_t max, std::vector<store::EventPtr>* out) = 0;
  // The urgent lane index (store::EventStore::ReadUrgent) and one person's
  // events after `after` (store::EventStore::ReadPatient). A source without
  // them returns nothing, and urgent events then wait their turn.
  virtual store::Status ReadUrgent(uint64_t from, size_t max,
                                   std::vector<std::pair<uint64_t, std::string>>* out) {
    (void)from, (void)max;
    out->clear();
    return {};
  }
  virtual store::Status ReadPatient(const std::string& nhs_number, uint64_t after, size_t max,
                                    std::vector<store::EventPtr>* out) {
    (void)nhs_number, (void)after, (void)max;
    out->clear();
    return {};
  }
  // Push delivery at the tail: from now on, queue to `follower` every
  // committed event with position >= follower->start() that its filter
  // matches. False if the source cannot (the engine then keeps reading).
  virtual bool Follow(const std::shared_ptr<Follower>& follower) {
    (void)follower;
    return false;
  }
  virtual void Unfollow(const Follower* follower) { (void)follower; }
  // Every committed event at or below this position has been offered to the
  // followers (0 if the source does not push).
  virtual uint64_t RoutedThrough() const { return 0; }
  // The highest committed position (0: unknown).
  virtual uint64_t LastPosition() const { return 0; }
};

// A subscription's queue at the tail, shared between its engine and the hub.
class Follower {
 public:
  Follower(CompiledFilter filter, uint64_t start, size_t capacity, std::function<void()> wake)
      : filter_(std::move(filter)), start_(start), capacity_(capacity), wake_(std::move(wake)) {}

  const CompiledFilter& filter() const { return filter_; }
  uint64_t start() const { return start_; }

  // Hub side. Queues a matched event; false if the queue is full, in which
  // case the follower overflows: nothing from `event` on is queued, and the
  // hub must stop offering it events.
  bool Offer(const store::EventPtr& event);
  void Wake() const {
    if (wake_) wake_();
  }

  // Engine side. Takes the oldest queued event (null if none). Once the queue
  // is empty, *overflow_from is the first position that was not queued (0:
  // no overflow).
  store::EventPtr Take(uint64_t* overflow_from);

 private:
  const CompiledFilter filter_;
  const uint64_t start_;
  const size_t capacity_;
  const std::function<void()> wake_;
  std::mutex mu_;
  std::deque<store::EventPtr> queue_;
  uint64_t overflow_from_ = 0;
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
  ~SubscriptionEngine();

  SubscriptionEngine(const SubscriptionEngine&) = delete;
  SubscriptionEngine& operator=(const SubscriptionEngine&) = delete;

  // The next event to send, if any is ready now. nullopt: caught up, or the
  // in-flight window is full. A read error from the store is returned.
  // `member`: which member of a consumer group asks (see SetMembers).
  store::Status Next(int64_t now_micros, std::optional<Delivery>* out, uint64_t member = 0);

  // Durable only: competing consumers. The subscription's events are shared
  // among `members` (ids chosen by the owner; default: the one member 0):
  // each person belongs to one member, by a hash of the NHS number, so a
  // person's events go to one member at a time and stay in order. When the
  // members change, people move to their new owners, and what was sent to a
  // member that left and is unacknowledged is sent again to the new owner.
  void SetMembers(std::vector<uint64_t> members);

  // Team routing (see CompiledFilter::SetTeam). Call before the first Next.
  void SetTeam(const icr::v1::Team& team, CompiledFilter::RelationshipFn related) {
    filter_.SetTeam(team, std::move(related));
  }

  // The caller's access scope (see CompiledFilter::SetScope). Call before
  // the first Next.
  void SetScope(CompiledFilter::ScopeFn scope) { filter_.SetScope(std::move(scope)); }

  // Lets the engine follow the tail once caught up (EventSource::Follow):
  // `wake` is called, from the hub's thread, when events were queued to it;
  // the owner then calls Next again. Without a waker the engine reads the
  // log and the owner must call Next on every commit. Call before the first
  // Next.
  void SetWaker(std::function<void()> wake) { waker_ = std::move(wake); }

  // Strict position order (SubscribeRequest.position_order): no priority
  // lanes; an ephemeral subscription then receives the log exactly in order.
  // Call before the first Next.
  void DisableLanes() { lanes_enabled_ = false; }
  bool following() const { return follower_ != nullptr; }

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
  // cursor may then pass the event and the person's next waiting event
  // becomes ready; a replayed parked event goes back to parked. On a store
  // error the event stays in flight and the call may be repeated.
  store::Status ParkNow(uint64_t position, int64_t now_micros, uint32_t attempts = 0);

  // Durable only: queue parked events for delivery again (all when
  // `positions` is empty, else those listed). Their parked records are
  // removed when they are acknowledged. Sets *count to the number queued.
  store::Status ReplayParked(const std::vector<uint64_t>& positions, uint32_t* count);

  // Durable only: writes the state if the cursor or the set of events
  // acknowledged ahead of it changed (always when `sync`).
  store::Status Persist(bool sync);

  bool durable() const { return durable_; }
  uint64_t cursor() const { return state_.cursor(); }
  size_t in_flight() const { return in_flight_.size() + replays_.size(); }
  const std::string& name() const { return state_.name(); }

  // Events the urgent lane sent ahead of the log reader so far.
  uint64_t sent_ahead() const { return sent_ahead_; }

 private:
  struct Flight {
    store::EventPtr event;
    uint32_t attempts = 0;
    int64_t deadline = 0;
    bool sent = false;
    uint64_t member = 0;  // the group member it was last sent to
  };
  // One person's matched events not yet in flight, oldest first.
  struct Person {
    std::deque<store::EventPtr> waiting;
    uint32_t urgent = 0;   // how many of `waiting` are URGENT
    uint32_t routine = 0;  // ... ROUTINE or unspecified
    bool busy = false;     // durable: one of this person's events is in flight
    int lane = -1;         // the lane it is filed in (-1: none)
    uint64_t owner = 0;    // the member whose queues it is filed in
  };
  // One member's queues: people to serve per lane, by the position of their
  // oldest waiting event (a person with an event in flight is in none), and
  // redeliveries and replays.
  struct Queues {
    std::map<uint64_t, std::string> people[3];
    std::deque<uint64_t> resend[3];
  };
  static constexpr int kLanes = 3;

  size_t Window() const;
  uint64_t MainPosition() const {
    return fetched_.empty() ? next_read_ : fetched_.front()->position;
  }
  store::Status NextFromLog(store::EventPtr* out);
  bool SkipPassed(uint64_t position);
  store::EventPtr NextFromFollower();
  store::Status Fill();
  store::Status SendAhead();
  int Lane(const icr::v1::CareEvent& e) const;
  int LaneOfPerson(const Person& p) const;
  void Schedule(const std::string& nhs, Person* p);
  void Enqueue(store::EventPtr event);
  bool Pick(int64_t now_micros, uint64_t member, std::optional<Delivery>* out);
  uint64_t OwnerOf(const std::string& nhs_number) const;
  void Release(const std::string& nhs_number);
  void Requeue(uint64_t position, const store::EventPtr& event);
  uint64_t ComputeCursor() const;
  void RecomputeCursor();
  store::Status Park(uint64_t position, Flight flight, int64_t now_micros);
  void RecordAckedAhead(icr::v1::internal::SubscriptionState* state, uint64_t parking) const;
  void StopFollowing();

  EventSource* source_;
  store::EventStore* store_ = nullptr;
  const bool durable_;
  icr::v1::internal::SubscriptionState state_;
  CompiledFilter filter_;
  uint64_t persisted_cursor_ = 0;
  bool ahead_dirty_ = false;

  uint64_t next_read_;                      // first position not yet fetched
  std::deque<store::EventPtr> fetched_;     // fetched, not yet matched
  std::function<void()> waker_;
  std::shared_ptr<Follower> follower_;      // set while following the tail

  std::unordered_map<std::string, Person> people_;
  size_t waiting_ = 0;                      // events in people_
  std::set<uint64_t> waiting_positions_;
  std::map<uint64_t, Queues> queues_;      // per member
  std::vector<uint64_t> members_{0};       // sorted
  bool lanes_enabled_ = true;

  std::map<uint64_t, Flight> in_flight_;    // position -> flight (durable)
  std::map<uint64_t, Flight> replays_;      // replayed parked events
  // Positions the log reader must skip: sent ahead by the urgent lane (kept
  // until the cursor passes them, for a durable subscription) ...
  std::set<uint64_t> ahead_;
  // ... or parked above the cursor before a reconnect.
  std::set<uint64_t> parked_ahead_;
  uint64_t urgent_read_ = 0;                // next position of the urgent index
  uint64_t sent_ahead_ = 0;
};

}  // namespace icr::broker
