// Hub: between the store and the subscriber streams.
//
//  - Keeps a ring of recently committed events, so subscribers at the tail
//    read from memory; older positions are read from the store (catch-up).
//  - Routes committed events on its own thread (so the store's writer thread
//    never waits for a subscriber): subscriptions at the tail follow the log
//    (EventSource::Follow), and each event is matched through a RoutingIndex
//    and queued to the followers it matches, which are then woken. Sessions
//    that do not follow are woken on every commit. Ticks every session for
//    redelivery timers and heartbeats.
//  - Registers durable subscriptions by name: one connected stream per name.
//
// Thread-safety: all methods are thread-safe. OnCommit is called on the
// store's writer thread; session callbacks run on the hub's thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "broker/delivery.h"
#include "broker/routing.h"
#include "store/store.h"

namespace icr::broker {

// A connected subscriber stream, as the hub sees it.
class Session {
 public:
  virtual ~Session() = default;
  virtual void Wake() = 0;                   // new events were committed
  virtual void Tick(int64_t now_micros) = 0; // timers
  virtual void Shutdown() = 0;               // the broker is stopping
  // Durable sessions only.
  virtual AckOutcome Ack(const std::vector<uint64_t>& positions) = 0;
  virtual store::Status Replay(const std::vector<uint64_t>& positions, uint32_t* count) = 0;
  virtual uint32_t InFlight() = 0;
  // True if the session's engine follows the tail (it is woken through its
  // Follower, not on every commit). Constant for a session's lifetime.
  virtual bool follows() const { return false; }
};

// Holds a durable name while a stream is being set up or an administrative
// call (delete, replay while disconnected) works on it, so nothing else can
// connect or change it meanwhile. Delivers nothing.
class ClaimPlaceholder final : public Session {
 public:
  void Wake() override {}
  void Tick(int64_t) override {}
  void Shutdown() override {}
  AckOutcome Ack(const std::vector<uint64_t>& positions) override {
    return AckOutcome{0, positions};
  }
  store::Status Replay(const std::vector<uint64_t>&, uint32_t*) override {
    return store::Status::FailedPrecondition(
        "the subscription is being connected or changed; try again");
  }
  uint32_t InFlight() override { return 0; }
};

class Hub : public EventSource {
 public:
  // Default ring: 65,536 events. Tick period: 50 ms.
  Hub(store::EventStore* store, size_t ring_capacity = 65536);
  ~Hub() override;
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  void Start();
  // Shuts every session down and stops the thread. Idempotent.
  void Stop();

  // The store's commit listener.
  void OnCommit(const std::vector<store::EventPtr>& committed);

  // EventSource.
  store::Status Read(uint64_t from, size_t max, std::vector<store::EventPtr>* out) override;
  store::Status ReadUrgent(uint64_t from, size_t max,
                           std::vector<std::pair<uint64_t, std::string>>* out) override;
  store::Status ReadPatient(const std::string& nhs_number, uint64_t after, size_t max,
                            std::vector<store::EventPtr>* out) override;
  bool Follow(const std::shared_ptr<Follower>& follower) override;
  void Unfollow(const Follower* follower) override;
  uint64_t RoutedThrough() const override { return routed_through_.load(std::memory_order_acquire); }
  uint64_t LastPosition() const override { return store_->LastPosition(); }

  // Retention replaced the stored event at `position` with a metadata stub
  // (store::EventStore::ReplaceWithStub): the ring's copy, if it holds one,
  // is replaced by the store's, so readers never see the purged payload.
  void Refresh(uint64_t position);

  // Routing counters, for GetStatus and benchmarks.
  size_t followers() const;
  uint64_t routing_candidates() const;

  // False once Stop has begun: the caller must end the stream itself.
  bool Add(const std::shared_ptr<Session>& session);
  void Remove(const Session* session);
  // Claims `name` for `session`; false if another stream holds it.
  bool ClaimDurable(const std::string& name, const std::shared_ptr<Session>& session);
  void ReleaseDurable(const std::string& name, const Session* session);
  // Passes a claim from `from` to `to` without letting go of the name.
  void HandOverDurable(const std::string& name, const Session* from,
                       const std::shared_ptr<Session>& to);
  std::shared_ptr<Session> FindDurable(const std::string& name);

  size_t connected() const;

 private:
  void Loop();
  void Route(const std::vector<store::EventPtr>& events);
  // Every session, or only those that do not follow the tail.
  std::vector<std::shared_ptr<Session>> Snapshot(bool all) const;

  store::EventStore* store_;
  const size_t ring_capacity_;

  std::mutex ring_mu_;
  std::deque<store::EventPtr> ring_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool woken_ = false;
  bool stopping_ = false;
  std::map<const Session*, std::shared_ptr<Session>> sessions_;
  std::map<const Session*, std::shared_ptr<Session>> pollers_;  // sessions that do not follow
  std::map<std::string, std::weak_ptr<Session>> durable_;
  std::vector<store::EventPtr> graveyard_;  // evicted from the ring, freed by the hub thread
  std::vector<store::EventPtr> to_route_;   // committed, not yet routed
  std::thread thread_;

  // The followers' index; routing_mu_ is taken after mu_ is released.
  mutable std::mutex routing_mu_;
  RoutingIndex index_;
  bool routing_stopped_ = false;
  std::atomic<uint64_t> routed_through_{0};
};

int64_t NowMicros();

}  // namespace icr::broker
