#include "broker/hub.h"

#include <algorithm>
#include <chrono>

namespace icr::broker {

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Hub::Hub(store::EventStore* store, size_t ring_capacity)
    : store_(store), ring_capacity_(ring_capacity) {}

Hub::~Hub() { Stop(); }

void Hub::Start() {
  routed_through_.store(store_->LastPosition(), std::memory_order_release);
  thread_ = std::thread([this] { Loop(); });
}

void Hub::Stop() {
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    for (auto& [k, s] : sessions_) sessions.push_back(s);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(routing_mu_);
    routing_stopped_ = true;
  }
  for (auto& s : sessions) s->Shutdown();
}

void Hub::OnCommit(const std::vector<store::EventPtr>& committed) {
  // Runs on the store's writer thread: evicted events are not destroyed
  // here (freeing them is measurable per commit) but handed to the hub's
  // thread.
  std::vector<store::EventPtr> evicted;
  {
    std::lock_guard<std::mutex> lock(ring_mu_);
    for (const auto& e : committed) ring_.push_back(e);
    while (ring_.size() > ring_capacity_) {
      evicted.push_back(std::move(ring_.front()));
      ring_.pop_front();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
    to_route_.insert(to_route_.end(), committed.begin(), committed.end());
    if (!evicted.empty()) {
      graveyard_.insert(graveyard_.end(), std::make_move_iterator(evicted.begin()),
                        std::make_move_iterator(evicted.end()));
    }
  }
  cv_.notify_one();
}

void Hub::Refresh(uint64_t position) {
  store::EventPtr fresh;
  if (!store_->Get(position, &fresh).ok()) return;
  std::lock_guard<std::mutex> lock(ring_mu_);
  if (ring_.empty() || position < ring_.front()->position) return;
  const size_t index = position - ring_.front()->position;  // positions are dense
  if (index < ring_.size()) ring_[index] = std::move(fresh);
}

store::Status Hub::Read(uint64_t from, size_t max, std::vector<store::EventPtr>* out) {
  out->clear();
  {
    std::lock_guard<std::mutex> lock(ring_mu_);
    if (!ring_.empty() && from >= ring_.front()->position) {
      size_t index = from - ring_.front()->position;  // positions are dense
      for (size_t i = index; i < ring_.size() && out->size() < max; ++i) out->push_back(ring_[i]);
      return {};
    }
  }
  return store_->ReadFrom(from, max, out);
}

store::Status Hub::ReadUrgent(uint64_t from, size_t max,
                              std::vector<std::pair<uint64_t, std::string>>* out) {
  return store_->ReadUrgent(from, max, out);
}

store::Status Hub::ReadPatient(const std::string& nhs_number, uint64_t after, size_t max,
                               std::vector<store::EventPtr>* out) {
  return store_->ReadPatient(nhs_number, after, max, out);
}

bool Hub::Follow(const std::shared_ptr<Follower>& follower) {
  std::lock_guard<std::mutex> lock(routing_mu_);
  if (routing_stopped_) return false;
  // Events committed after the engine's last read may have been routed
  // already, before this follower was in the index: offer them now (from
  // the ring, where they normally still are). If they do not fit, the
  // engine goes on reading the log.
  const uint64_t routed = routed_through_.load(std::memory_order_acquire);
  if (routed >= follower->start()) {
    std::vector<store::EventPtr> missed;
    if (!Read(follower->start(), routed - follower->start() + 1, &missed).ok()) return false;
    for (const auto& e : missed) {
      if (follower->filter().Match(e->event) && !follower->Offer(e)) return false;
    }
  }
  index_.Add(follower);
  return true;
}

void Hub::Unfollow(const Follower* follower) {
  std::lock_guard<std::mutex> lock(routing_mu_);
  index_.Remove(follower);
}

size_t Hub::followers() const {
  std::lock_guard<std::mutex> lock(routing_mu_);
  return index_.size();
}

uint64_t Hub::routing_candidates() const {
  std::lock_guard<std::mutex> lock(routing_mu_);
  return index_.candidates();
}

// Queues each event to the followers it matches; a follower whose queue is
// full leaves the index (its engine reads the log again from there).
void Hub::Route(const std::vector<store::EventPtr>& events) {
  std::vector<std::shared_ptr<Follower>> woken;
  std::vector<std::shared_ptr<Follower>> overflowed;
  {
    std::lock_guard<std::mutex> lock(routing_mu_);
    for (const auto& e : events) {
      index_.Match(e, [&](const std::shared_ptr<Follower>& f) {
        if (f->Offer(e)) {
          if (woken.empty() || woken.back() != f) woken.push_back(f);
        } else if (std::find(overflowed.begin(), overflowed.end(), f) == overflowed.end()) {
          overflowed.push_back(f);
        }
      });
      // Followers that overflowed see nothing more: drop them now.
      for (const auto& f : overflowed) index_.Remove(f.get());
    }
    if (!events.empty()) routed_through_.store(events.back()->position, std::memory_order_release);
  }
  std::sort(woken.begin(), woken.end());
  woken.erase(std::unique(woken.begin(), woken.end()), woken.end());
  for (const auto& f : woken) f->Wake();
  for (const auto& f : overflowed) f->Wake();
}

bool Hub::Add(const std::shared_ptr<Session>& session) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return false;
  sessions_[session.get()] = session;
  if (!session->follows()) pollers_[session.get()] = session;
  return true;
}

void Hub::Remove(const Session* session) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.erase(session);
  pollers_.erase(session);
}

bool Hub::ClaimDurable(const std::string& name, const std::shared_ptr<Session>& session) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = durable_.find(name);
  if (it != durable_.end() && !it->second.expired()) return false;
  durable_[name] = session;
  return true;
}

void Hub::ReleaseDurable(const std::string& name, const Session* session) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = durable_.find(name);
  if (it == durable_.end()) return;
  auto held = it->second.lock();
  if (!held || held.get() == session) durable_.erase(it);
}

void Hub::HandOverDurable(const std::string& name, const Session* from,
                          const std::shared_ptr<Session>& to) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = durable_.find(name);
  if (it != durable_.end() && it->second.lock().get() == from) it->second = to;
}

std::shared_ptr<Session> Hub::FindDurable(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = durable_.find(name);
  return it == durable_.end() ? nullptr : it->second.lock();
}

size_t Hub::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

std::vector<std::shared_ptr<Session>> Hub::Snapshot(bool all) const {
  std::vector<std::shared_ptr<Session>> out;
  const auto& from = all ? sessions_ : pollers_;
  out.reserve(from.size());
  for (const auto& [k, s] : from) out.push_back(s);
  return out;
}

void Hub::Loop() {
  using Clock = std::chrono::steady_clock;
  constexpr auto kTick = std::chrono::milliseconds(50);
  auto next_tick = Clock::now() + kTick;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_until(lock, next_tick, [this] { return woken_ || stopping_; });
    if (stopping_) break;
    bool wake = woken_;
    woken_ = false;
    bool tick = Clock::now() >= next_tick;
    // On a commit, only the sessions that do not follow the tail are woken;
    // followers are woken by Route when something was queued to them.
    auto sessions = tick || wake ? Snapshot(tick) : std::vector<std::shared_ptr<Session>>();
    std::vector<store::EventPtr> dead;
    dead.swap(graveyard_);
    std::vector<store::EventPtr> routed;
    routed.swap(to_route_);
    lock.unlock();
    dead.clear();  // events evicted from the ring, freed off the writer thread
    Route(routed);
    routed.clear();
    if (wake) {
      for (auto& s : sessions) {
        if (!s->follows()) s->Wake();
      }
    }
    if (tick) {
      int64_t now = NowMicros();
      for (auto& s : sessions) s->Tick(now);
      next_tick = Clock::now() + kTick;
    }
    sessions.clear();
    lock.lock();
  }
}

}  // namespace icr::broker
