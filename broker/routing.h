// RoutingIndex: which followers (subscriptions at the tail) an event may
// match, without looking at every subscription.
//
// Each follower is filed under the keys of its filter's most selective
// condition (CompiledFilter::RoutingKeys: NHS numbers, addressee
// organisations, source organisations, event types, care settings,
// priorities, or a team's organisation and Place), or in a short list of
// followers that must see every event. An event looks up its own keys
// (CompiledFilter::EventRoutingKeys) and runs the full filter only on the
// followers found there: the cost per event is a handful of hash lookups plus
// the candidates, whatever the number of subscriptions.
//
// Thread-safety: none; the hub serialises calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/delivery.h"

namespace icr::broker {

class RoutingIndex {
 public:
  void Add(const std::shared_ptr<Follower>& follower);
  void Remove(const Follower* follower);
  size_t size() const { return entries_.size(); }

  // Calls `visit` once for every follower whose filter matches `event` and
  // whose start is at or before it. `visit` must not change the index.
  void Match(const store::EventPtr& event,
             const std::function<void(const std::shared_ptr<Follower>&)>& visit);

  // Candidates examined by Match so far (the filters actually run).
  uint64_t candidates() const { return candidates_; }

 private:
  struct Entry {
    std::shared_ptr<Follower> follower;
    std::vector<std::string> keys;  // empty: in every_
    uint64_t seen = 0;              // the last event that examined it
  };
  std::unordered_map<const Follower*, std::unique_ptr<Entry>> entries_;
  std::unordered_map<std::string, std::vector<Entry*>> postings_;
  std::vector<Entry*> every_;
  std::vector<std::string> event_keys_;
  uint64_t sequence_ = 0;
  uint64_t candidates_ = 0;
};

}  // namespace icr::broker
