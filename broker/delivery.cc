#include "broker/delivery.h"

#include <algorithm>

#include "broker/timestamp.h"

namespace icr::broker {
namespace {

constexpr size_t kReadBatch = 256;
constexpr size_t kMaxParksPerTick = 64;
constexpr size_t kEphemeralWindow = 256;    // matched events read ahead (ephemeral)
constexpr size_t kMaxAhead = 1024;          // sent ahead of the log reader, unacknowledged
constexpr size_t kUrgentScan = 64;          // urgent index entries per look
constexpr size_t kMaxPromote = 64;          // earlier events of a person sent with an urgent one
constexpr size_t kFollowerCapacity = 1024;  // queued at the tail before falling back to reading

int LaneOf(const icr::v1::CareEvent& e) {
  switch (e.priority()) {
    case icr::v1::URGENT:
      return 0;
    case icr::v1::BULK:
      return 2;
    default:
      return 1;
  }
}

}  // namespace

bool Follower::Offer(const store::EventPtr& event) {
  std::lock_guard<std::mutex> lock(mu_);
  if (overflow_from_ != 0) return false;
  if (queue_.size() >= capacity_) {
    overflow_from_ = event->position;
    return false;
  }
  queue_.push_back(event);
  return true;
}

store::EventPtr Follower::Take(uint64_t* overflow_from) {
  std::lock_guard<std::mutex> lock(mu_);
  *overflow_from = 0;
  if (!queue_.empty()) {
    store::EventPtr e = std::move(queue_.front());
    queue_.pop_front();
    return e;
  }
  *overflow_from = overflow_from_;
  return nullptr;
}

SubscriptionEngine::SubscriptionEngine(EventSource* source, CompiledFilter filter, uint64_t start)
    : source_(source), durable_(false), filter_(std::move(filter)), next_read_(start) {
  state_.set_cursor(start == 0 ? 0 : start - 1);
}

SubscriptionEngine::SubscriptionEngine(EventSource* source, store::EventStore* store,
                                       icr::v1::internal::SubscriptionState state)
    : source_(source),
      store_(store),
      durable_(true),
      state_(std::move(state)),
      filter_(state_.filter()),
      persisted_cursor_(state_.cursor()),
      next_read_(state_.cursor() + 1) {
  for (uint64_t p : state_.acked_ahead()) {
    if (p > state_.cursor()) ahead_.insert(p);
  }
  // Parked events an operator asked to replay while we were disconnected.
  std::vector<std::pair<uint64_t, std::string>> parked;
  if (store_->ListParked(state_.name(), 100000, &parked).ok()) {
    for (const auto& [position, value] : parked) {
      // Parked above the cursor (an older event was still in flight when it
      // was parked): reading the log must skip it, not deliver it again.
      if (position > state_.cursor()) parked_ahead_.insert(position);
      icr::v1::internal::ParkedRecord record;
      if (!record.ParseFromString(value) || !record.replay_requested()) continue;
      store::EventPtr event;
      if (!store_->Get(position, &event).ok()) continue;
      replays_[position] = Flight{event, 0, 0, false};
      Requeue(position, event);
    }
  }
}

SubscriptionEngine::~SubscriptionEngine() { StopFollowing(); }

// The log reader reached `position`: true if it was already sent ahead or
// parked. A durable subscription keeps sent-ahead positions until the
// cursor passes them (Persist records the acknowledged ones); an ephemeral
// one forgets them here.
bool SubscriptionEngine::SkipPassed(uint64_t position) {
  if (!parked_ahead_.empty() && parked_ahead_.erase(position) > 0) return true;
  if (ahead_.empty()) return false;
  return durable_ ? ahead_.count(position) > 0 : ahead_.erase(position) > 0;
}

void SubscriptionEngine::StopFollowing() {
  if (follower_) {
    source_->Unfollow(follower_.get());
    follower_.reset();
  }
}

size_t SubscriptionEngine::Window() const {
  return durable_ ? state_.max_in_flight() : kEphemeralWindow;
}

// The next matching event of the log, read in position order (null: none
// now).
store::Status SubscriptionEngine::NextFromLog(store::EventPtr* out) {
  out->reset();
  for (;;) {
    if (fetched_.empty()) {
      if (follower_) {
        *out = NextFromFollower();
        if (*out || follower_) return {};
        continue;  // overflowed: read the log again from where it stopped
      }
      std::vector<store::EventPtr> batch;
      store::Status s = source_->Read(next_read_, kReadBatch, &batch);
      if (!s.ok()) return s;
      if (batch.empty()) {
        // Caught up: follow the tail from here, if the source can push.
        if (waker_) {
          auto follower =
              std::make_shared<Follower>(filter_, next_read_, kFollowerCapacity, waker_);
          if (source_->Follow(follower)) {
            follower_ = std::move(follower);
            continue;
          }
        }
        return {};
      }
      next_read_ = batch.back()->position + 1;
      fetched_.insert(fetched_.end(), batch.begin(), batch.end());
    }
    store::EventPtr e = std::move(fetched_.front());
    fetched_.pop_front();
    if (SkipPassed(e->position)) continue;
    if (filter_.Match(e->event)) {
      *out = std::move(e);
      return {};
    }
  }
}

// The next event queued to us at the tail (already matched by the hub).
store::EventPtr SubscriptionEngine::NextFromFollower() {
  // Read the routed mark before the queue: every event at or below it that
  // matches is queued by then, so an empty queue means all of them were seen.
  const uint64_t routed = source_->RoutedThrough();
  for (;;) {
    uint64_t overflow_from = 0;
    store::EventPtr e = follower_->Take(&overflow_from);
    if (e) {
      if (e->position < next_read_) continue;
      next_read_ = e->position + 1;
      if (SkipPassed(e->position)) continue;
      return e;
    }
    if (overflow_from != 0) {
      // Fell behind at the tail: read the log from the first event that was
      // not queued.
      next_read_ = std::max(next_read_, overflow_from);
      StopFollowing();
      return nullptr;
    }
    next_read_ = std::max(next_read_, routed + 1);
    return nullptr;
  }
}

int SubscriptionEngine::Lane(const icr::v1::CareEvent& e) const {
  return lanes_enabled_ ? LaneOf(e) : 1;
}

int SubscriptionEngine::LaneOfPerson(const Person& p) const {
  return p.urgent ? 0 : p.routine ? 1 : 2;
}

// Files a person with something to send (and nothing in flight) in its lane,
// under the position of its oldest waiting event.
void SubscriptionEngine::Schedule(const std::string& nhs, Person* p) {
  if (p->lane >= 0) queues_[p->owner].people[p->lane].erase(p->waiting.front()->position);
  p->lane = -1;
  if (p->busy || p->waiting.empty()) return;
  p->owner = OwnerOf(nhs);
  p->lane = LaneOfPerson(*p);
  queues_[p->owner].people[p->lane].emplace(p->waiting.front()->position, nhs);
}

uint64_t SubscriptionEngine::OwnerOf(const std::string& nhs_number) const {
  if (members_.size() == 1) return members_[0];
  return members_[std::hash<std::string>{}(nhs_number) % members_.size()];
}

void SubscriptionEngine::SetMembers(std::vector<uint64_t> members) {
  if (members.empty()) return;
  std::sort(members.begin(), members.end());
  members_ = std::move(members);
  // File every person and redelivery again under its new owner.
  std::vector<uint64_t> resend;
  for (auto& [id, q] : queues_) {
    for (auto& lane : q.resend) resend.insert(resend.end(), lane.begin(), lane.end());
  }
  queues_.clear();
  for (auto& [nhs, p] : people_) {
    p.lane = -1;
    Schedule(nhs, &p);
  }
  auto requeue = [&](std::map<uint64_t, Flight>& flights, uint64_t position) {
    auto it = flights.find(position);
    if (it != flights.end() && !it->second.sent) Requeue(position, it->second.event);
  };
  for (uint64_t position : resend) {
    requeue(in_flight_, position);
    requeue(replays_, position);
  }
  // What was sent to a member that left goes to the person's new owner.
  for (auto* flights : {&in_flight_, &replays_}) {
    for (auto& [position, f] : *flights) {
      if (f.sent && !std::binary_search(members_.begin(), members_.end(), f.member)) {
        f.sent = false;
        Requeue(position, f.event);
      }
    }
  }
}

void SubscriptionEngine::Enqueue(store::EventPtr event) {
  const std::string& nhs = event->event.nhs_number();
  Person& p = people_[nhs];
  const int lane = Lane(event->event);
  if (lane == 0) ++p.urgent;
  if (lane == 1) ++p.routine;
  waiting_positions_.insert(event->position);
  const bool was_empty = p.waiting.empty();
  p.waiting.push_back(std::move(event));
  ++waiting_;
  if (was_empty || (p.lane >= 0 && LaneOfPerson(p) != p.lane)) {
    if (was_empty) p.lane = -1;
    Schedule(nhs, &p);
  }
}

// Reads the log into the people's queues while the window has room, then
// lets the urgent lane look past the backlog.
store::Status SubscriptionEngine::Fill() {
  while (in_flight_.size() + waiting_ < Window()) {
    store::EventPtr e;
    store::Status s = NextFromLog(&e);
    if (!s.ok()) return s;
    if (!e) return {};
    Enqueue(std::move(e));
  }
  return SendAhead();
}

// The window is full of older events: send urgent events from further on
// ahead of them (with their person's earlier events, to keep that person's
// order).
store::Status SubscriptionEngine::SendAhead() {
  if (!lanes_enabled_ || follower_ || ahead_.size() >= kMaxAhead) return {};
  const uint64_t main = MainPosition();
  if (urgent_read_ < main) urgent_read_ = main;
  // Nothing committed since the index was last read to its end.
  const uint64_t last = source_->LastPosition();
  if (last != 0 && urgent_read_ > last) return {};
  std::vector<std::pair<uint64_t, std::string>> urgent;
  store::Status s = source_->ReadUrgent(urgent_read_, kUrgentScan, &urgent);
  if (!s.ok()) return s;
  if (urgent.size() < kUrgentScan && last != 0) {
    // The index was read to its end: nothing urgent up to `last` is left.
    const uint64_t end = last + 1;
    if (urgent.empty()) urgent_read_ = std::max(urgent_read_, end);
  }
  for (const auto& [position, nhs] : urgent) {
    if (ahead_.size() >= kMaxAhead) break;
    urgent_read_ = position + 1;
    if (ahead_.count(position) || parked_ahead_.count(position)) continue;
    // Only urgent events this subscription wants are worth the person read.
    std::vector<store::EventPtr> one;
    s = source_->Read(position, 1, &one);
    if (!s.ok()) return s;
    if (one.empty() || !filter_.Match(one[0]->event)) continue;
    // The person's events from the log reader's position up to this one.
    std::vector<store::EventPtr> history;
    s = source_->ReadPatient(nhs, main - 1, kMaxPromote + 1, &history);
    if (!s.ok()) return s;
    std::vector<store::EventPtr> send;
    bool found = false;
    for (auto& e : history) {
      if (e->position > position) break;
      if (ahead_.count(e->position) || !filter_.Match(e->event)) continue;
      found = found || e->position == position;
      send.push_back(std::move(e));
    }
    // Not matched, or too long a queue before it: it waits for the reader.
    if (!found || send.size() > kMaxPromote) continue;
    for (auto& e : send) {
      ahead_.insert(e->position);
      ++sent_ahead_;
      Enqueue(std::move(e));
    }
  }
  return {};
}

// The next delivery in lane order: redeliveries, then people, per lane.
bool SubscriptionEngine::Pick(int64_t now_micros, uint64_t member,
                              std::optional<Delivery>* out) {
  Queues& queues = queues_[member];
  for (int lane = 0; lane < kLanes; ++lane) {
    auto& resend = queues.resend[lane];
    while (!resend.empty()) {
      uint64_t position = resend.front();
      resend.pop_front();
      auto it = in_flight_.find(position);
      if (it == in_flight_.end()) {
        it = replays_.find(position);
        if (it == replays_.end()) continue;  // acknowledged or parked meanwhile
      }
      Flight& f = it->second;
      if (f.sent) continue;
      f.sent = true;
      f.member = member;
      f.attempts++;
      f.deadline = now_micros + static_cast<int64_t>(state_.ack_timeout_ms()) * 1000;
      *out = Delivery{f.event, f.attempts};
      return true;
    }
    auto& people = queues.people[lane];
    if (!people.empty()) {
      // The oldest waiting event of the lane.
      auto entry = people.begin();
      const std::string nhs = entry->second;
      people.erase(entry);
      auto it = people_.find(nhs);
      Person& p = it->second;
      p.lane = -1;
      store::EventPtr e = std::move(p.waiting.front());
      p.waiting.pop_front();
      --waiting_;
      waiting_positions_.erase(e->position);
      const int l = Lane(e->event);
      if (l == 0) --p.urgent;
      if (l == 1) --p.routine;
      if (durable_) {
        p.busy = true;
        uint64_t position = e->position;
        int64_t deadline = now_micros + static_cast<int64_t>(state_.ack_timeout_ms()) * 1000;
        in_flight_.emplace(position, Flight{e, 1, deadline, true, member});
      } else if (p.waiting.empty()) {
        people_.erase(it);
      } else {
        Schedule(nhs, &p);
      }
      if (!durable_) state_.set_cursor(std::max(state_.cursor(), e->position));
      *out = Delivery{std::move(e), 1};
      return true;
    }
  }
  return false;
}

store::Status SubscriptionEngine::Next(int64_t now_micros, std::optional<Delivery>* out,
                                       uint64_t member) {
  out->reset();
  store::Status s = Fill();
  if (!s.ok()) return s;
  Pick(now_micros, member, out);
  return {};
}

void SubscriptionEngine::Release(const std::string& nhs_number) {
  auto it = people_.find(nhs_number);
  if (it == people_.end()) return;
  Person& p = it->second;
  p.busy = false;
  if (p.waiting.empty()) {
    people_.erase(it);
    return;
  }
  Schedule(nhs_number, &p);
}

void SubscriptionEngine::Requeue(uint64_t position, const store::EventPtr& event) {
  queues_[OwnerOf(event->event.nhs_number())].resend[Lane(event->event)].push_back(position);
}

uint64_t SubscriptionEngine::ComputeCursor() const {
  uint64_t lowest = MainPosition();
  if (!in_flight_.empty()) lowest = std::min(lowest, in_flight_.begin()->first);
  if (!waiting_positions_.empty()) lowest = std::min(lowest, *waiting_positions_.begin());
  // The cursor only moves forward (replayed parked events sit below it).
  return std::max<uint64_t>(lowest - 1, state_.cursor());
}

void SubscriptionEngine::RecomputeCursor() {
  state_.set_cursor(ComputeCursor());
  // Sent-ahead positions at or below the cursor need no remembering.
  ahead_.erase(ahead_.begin(), ahead_.upper_bound(state_.cursor()));
}

AckOutcome SubscriptionEngine::Ack(const std::vector<uint64_t>& positions) {
  AckOutcome outcome;
  for (uint64_t p : positions) {
    auto it = in_flight_.find(p);
    if (it != in_flight_.end() && it->second.attempts > 0) {
      std::string nhs = it->second.event->event.nhs_number();
      in_flight_.erase(it);
      if (ahead_.count(p)) ahead_dirty_ = true;
      Release(nhs);
      continue;
    }
    auto rit = replays_.find(p);
    if (rit != replays_.end() && rit->second.attempts > 0) {
      replays_.erase(rit);
      store_->DeleteParked(state_.name(), p);
      continue;
    }
    outcome.unknown_positions.push_back(p);
  }
  RecomputeCursor();
  Persist(false);
  outcome.cursor = state_.cursor();
  return outcome;
}

store::Status SubscriptionEngine::Park(uint64_t position, Flight flight, int64_t now_micros) {
  icr::v1::internal::ParkedRecord record;
  record.set_attempts(flight.attempts);
  SetTimestamp(record.mutable_parked_at(), now_micros);
  // The cursor may pass the parked event only once the parked record is
  // durable: both go in one write.
  icr::v1::internal::SubscriptionState next = state_;
  next.set_cursor(ComputeCursor());
  RecordAckedAhead(&next, /*parking=*/position);
  std::string state_bytes;
  next.SerializeToString(&state_bytes);
  std::string record_bytes;
  record.SerializeToString(&record_bytes);
  store::Status s = store_->PutParked(state_.name(), position, record_bytes, state_bytes);
  if (s.ok()) {
    state_ = std::move(next);
    persisted_cursor_ = state_.cursor();
    ahead_dirty_ = false;
    ahead_.erase(ahead_.begin(), ahead_.upper_bound(state_.cursor()));
  }
  return s;
}

store::Status SubscriptionEngine::Tick(int64_t now_micros) {
  if (!durable_) return {};
  store::Status result;
  std::vector<uint64_t> expired;
  for (auto& [position, f] : in_flight_) {
    if (f.sent && f.deadline <= now_micros) expired.push_back(position);
  }
  size_t parked = 0;
  for (uint64_t position : expired) {
    auto it = in_flight_.find(position);
    Flight& f = it->second;
    if (f.attempts >= state_.max_attempts()) {
      // Each park is a synced write on the hub's thread: bound them per tick
      // so a mass timeout cannot stall every other stream's timers. The rest
      // stay expired and are parked at the next ticks.
      if (parked == kMaxParksPerTick) continue;
      ++parked;
      Flight flight = std::move(f);
      in_flight_.erase(it);
      store::Status s = Park(position, flight, now_micros);
      if (!s.ok()) {
        // Not parked: keep it in flight (the cursor cannot pass it) and try
        // again at the next tick; the person's later events stay held.
        result = s;
        in_flight_.emplace(position, std::move(flight));
        continue;
      }
      Release(flight.event->event.nhs_number());
    } else {
      f.sent = false;
      Requeue(position, f.event);
    }
  }
  std::vector<uint64_t> expired_replays;
  for (auto& [position, f] : replays_) {
    if (f.sent && f.deadline <= now_micros) expired_replays.push_back(position);
  }
  for (uint64_t position : expired_replays) {
    Flight& f = replays_[position];
    if (f.attempts >= state_.max_attempts()) {
      // Back to parked, no longer asked for.
      icr::v1::internal::ParkedRecord record;
      record.set_attempts(f.attempts);
      SetTimestamp(record.mutable_parked_at(), now_micros);
      std::string record_bytes, state_bytes;
      record.SerializeToString(&record_bytes);
      state_.SerializeToString(&state_bytes);
      store::Status s = store_->PutParked(state_.name(), position, record_bytes, state_bytes);
      if (!s.ok()) {
        result = s;
        continue;
      }
      replays_.erase(position);
    } else {
      f.sent = false;
      Requeue(position, f.event);
    }
  }
  RecomputeCursor();
  store::Status s = Persist(false);
  return result.ok() ? s : result;
}

store::Status SubscriptionEngine::ParkNow(uint64_t position, int64_t now_micros,
                                          uint32_t attempts) {
  if (!durable_) return store::Status::FailedPrecondition("ParkNow: subscription is not durable");
  auto it = in_flight_.find(position);
  if (it != in_flight_.end() && it->second.attempts > 0) {
    Flight flight = std::move(it->second);
    in_flight_.erase(it);
    Flight recorded = flight;
    if (attempts > 0) recorded.attempts = attempts;
    store::Status s = Park(position, recorded, now_micros);
    if (!s.ok()) {
      in_flight_.emplace(position, std::move(flight));
      return s;
    }
    Release(flight.event->event.nhs_number());
    return {};
  }
  auto rit = replays_.find(position);
  if (rit != replays_.end() && rit->second.attempts > 0) {
    // Back to parked, no longer asked for (as in Tick).
    icr::v1::internal::ParkedRecord record;
    record.set_attempts(attempts > 0 ? attempts : rit->second.attempts);
    SetTimestamp(record.mutable_parked_at(), now_micros);
    std::string record_bytes, state_bytes;
    record.SerializeToString(&record_bytes);
    state_.SerializeToString(&state_bytes);
    store::Status s = store_->PutParked(state_.name(), position, record_bytes, state_bytes);
    if (!s.ok()) return s;
    replays_.erase(rit);
    return {};
  }
  return store::Status::NotFound("position " + std::to_string(position) +
                                 " is not in flight on subscription '" + state_.name() + "'");
}

store::Status SubscriptionEngine::ReplayParked(const std::vector<uint64_t>& positions,
                                               uint32_t* count) {
  *count = 0;
  std::vector<std::pair<uint64_t, std::string>> parked;
  store::Status s = store_->ListParked(state_.name(), 100000, &parked);
  if (!s.ok()) return s;
  std::set<uint64_t> wanted(positions.begin(), positions.end());
  for (const auto& [position, value] : parked) {
    if (!wanted.empty() && !wanted.count(position)) continue;
    if (replays_.count(position)) continue;
    store::EventPtr event;
    s = store_->Get(position, &event);
    if (!s.ok()) return s;
    replays_[position] = Flight{event, 0, 0, false};
    Requeue(position, event);
    ++*count;
  }
  return {};
}

// Sets state->acked_ahead to the positions above state's cursor that were
// sent ahead and are no longer in flight or waiting: acknowledged or parked
// (`parking`: the event being parked, recorded by its parked record).
void SubscriptionEngine::RecordAckedAhead(icr::v1::internal::SubscriptionState* state,
                                          uint64_t parking) const {
  state->clear_acked_ahead();
  for (auto it = ahead_.upper_bound(state->cursor()); it != ahead_.end(); ++it) {
    const uint64_t p = *it;
    if (p != parking && !in_flight_.count(p) && !waiting_positions_.count(p)) {
      state->add_acked_ahead(p);
    }
  }
}

store::Status SubscriptionEngine::Persist(bool sync) {
  if (!durable_) return {};
  size_t before = static_cast<size_t>(state_.acked_ahead_size());
  RecordAckedAhead(&state_, /*parking=*/0);
  const bool ahead_changed =
      ahead_dirty_ || static_cast<size_t>(state_.acked_ahead_size()) != before;
  if (state_.cursor() == persisted_cursor_ && !ahead_changed && !sync) return {};
  std::string bytes;
  state_.SerializeToString(&bytes);
  store::Status s = store_->PutSubscription(state_.name(), bytes, sync);
  if (s.ok()) {
    persisted_cursor_ = state_.cursor();
    ahead_dirty_ = false;
  }
  return s;
}

}  // namespace icr::broker
