#include "broker/hub.h"

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

void Hub::Start() { thread_ = std::thread([this] { Loop(); }); }

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
    if (!evicted.empty()) {
      graveyard_.insert(graveyard_.end(), std::make_move_iterator(evicted.begin()),
                        std::make_move_iterator(evicted.end()));
    }
  }
  cv_.notify_one();
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

bool Hub::Add(const std::shared_ptr<Session>& session) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return false;
  sessions_[session.get()] = session;
  return true;
}

void Hub::Remove(const Session* session) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.erase(session);
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

std::vector<std::shared_ptr<Session>> Hub::Snapshot() const {
  std::vector<std::shared_ptr<Session>> out;
  out.reserve(sessions_.size());
  for (const auto& [k, s] : sessions_) out.push_back(s);
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
    auto sessions = Snapshot();
    std::vector<store::EventPtr> dead;
    dead.swap(graveyard_);
    lock.unlock();
    dead.clear();  // events evicted from the ring, freed off the writer thread
    if (wake) {
      for (auto& s : sessions) s->Wake();
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
