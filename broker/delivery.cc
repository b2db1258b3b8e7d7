#include "broker/delivery.h"

#include <algorithm>

#include "broker/timestamp.h"

namespace icr::broker {
namespace {

constexpr size_t kReadBatch = 256;
constexpr size_t kMaxParksPerTick = 64;

}  // namespace

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
      ready_.push_back(position);
    }
  }
}

store::Status SubscriptionEngine::NextMatching(store::EventPtr* out) {
  for (;;) {
    if (fetched_.empty()) {
      std::vector<store::EventPtr> batch;
      store::Status s = source_->Read(next_read_, kReadBatch, &batch);
      if (!s.ok()) return s;
      if (batch.empty()) {
        out->reset();
        return {};
      }
      next_read_ = batch.back()->position + 1;
      fetched_.insert(fetched_.end(), batch.begin(), batch.end());
    }
    store::EventPtr e = std::move(fetched_.front());
    fetched_.pop_front();
    if (!parked_ahead_.empty() && parked_ahead_.erase(e->position) > 0) continue;
    if (filter_.Match(e->event)) {
      *out = std::move(e);
      return {};
    }
  }
}

store::Status SubscriptionEngine::Next(int64_t now_micros, std::optional<Delivery>* out) {
  out->reset();
  if (!durable_) {
    store::EventPtr e;
    store::Status s = NextMatching(&e);
    if (s.ok() && e) {
      state_.set_cursor(e->position);
      *out = Delivery{std::move(e), 1};
    }
    return s;
  }
  for (;;) {
    while (!ready_.empty()) {
      uint64_t position = ready_.front();
      ready_.pop_front();
      auto it = in_flight_.find(position);
      if (it == in_flight_.end()) {
        it = replays_.find(position);
        if (it == replays_.end()) continue;  // acknowledged or parked meanwhile
      }
      Flight& f = it->second;
      if (f.sent) continue;
      f.sent = true;
      f.attempts++;
      f.deadline = now_micros + static_cast<int64_t>(state_.ack_timeout_ms()) * 1000;
      *out = Delivery{f.event, f.attempts};
      return {};
    }
    if (in_flight_.size() + held_positions_.size() >= state_.max_in_flight()) return {};
    store::EventPtr e;
    store::Status s = NextMatching(&e);
    if (!s.ok() || !e) return s;
    const std::string& nhs = e->event.nhs_number();
    if (busy_patients_.count(nhs)) {
      held_positions_.insert(e->position);
      held_[nhs].push_back(std::move(e));
      continue;
    }
    busy_patients_.insert(nhs);
    uint64_t position = e->position;
    in_flight_.emplace(position, Flight{std::move(e), 0, 0, false});
    ready_.push_back(position);
  }
}

void SubscriptionEngine::Release(const std::string& nhs_number) {
  busy_patients_.erase(nhs_number);
  auto it = held_.find(nhs_number);
  if (it == held_.end()) return;
  store::EventPtr next = std::move(it->second.front());
  it->second.pop_front();
  if (it->second.empty()) held_.erase(it);
  held_positions_.erase(next->position);
  busy_patients_.insert(nhs_number);
  uint64_t position = next->position;
  in_flight_.emplace(position, Flight{std::move(next), 0, 0, false});
  ready_.push_back(position);
}

uint64_t SubscriptionEngine::ComputeCursor() const {
  uint64_t lowest = fetched_.empty() ? next_read_ : fetched_.front()->position;
  if (!in_flight_.empty()) lowest = std::min(lowest, in_flight_.begin()->first);
  if (!held_positions_.empty()) lowest = std::min(lowest, *held_positions_.begin());
  // The cursor only moves forward (replayed parked events sit below it).
  return std::max<uint64_t>(lowest - 1, state_.cursor());
}

void SubscriptionEngine::RecomputeCursor() { state_.set_cursor(ComputeCursor()); }

AckOutcome SubscriptionEngine::Ack(const std::vector<uint64_t>& positions) {
  AckOutcome outcome;
  for (uint64_t p : positions) {
    auto it = in_flight_.find(p);
    if (it != in_flight_.end() && it->second.attempts > 0) {
      std::string nhs = it->second.event->event.nhs_number();
      in_flight_.erase(it);
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
  std::string state_bytes;
  next.SerializeToString(&state_bytes);
  std::string record_bytes;
  record.SerializeToString(&record_bytes);
  store::Status s = store_->PutParked(state_.name(), position, record_bytes, state_bytes);
  if (s.ok()) {
    state_.set_cursor(next.cursor());
    persisted_cursor_ = next.cursor();
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
      ready_.push_back(position);
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
      ready_.push_back(position);
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
    ready_.push_back(position);
    ++*count;
  }
  return {};
}

store::Status SubscriptionEngine::Persist(bool sync) {
  if (!durable_ || (state_.cursor() == persisted_cursor_ && !sync)) return {};
  std::string bytes;
  state_.SerializeToString(&bytes);
  store::Status s = store_->PutSubscription(state_.name(), bytes, sync);
  if (s.ok()) persisted_cursor_ = state_.cursor();
  return s;
}

}  // namespace icr::broker
