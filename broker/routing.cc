#include "broker/routing.h"

#include <algorithm>

namespace icr::broker {

void RoutingIndex::Add(const std::shared_ptr<Follower>& follower) {
  auto entry = std::make_unique<Entry>();
  entry->follower = follower;
  entry->keys = follower->filter().RoutingKeys();
  Entry* e = entry.get();
  if (e->keys.empty()) {
    every_.push_back(e);
  } else {
    for (const auto& k : e->keys) postings_[k].push_back(e);
  }
  entries_[follower.get()] = std::move(entry);
}

void RoutingIndex::Remove(const Follower* follower) {
  auto it = entries_.find(follower);
  if (it == entries_.end()) return;
  Entry* e = it->second.get();
  auto drop = [e](std::vector<Entry*>* list) {
    list->erase(std::remove(list->begin(), list->end(), e), list->end());
  };
  if (e->keys.empty()) {
    drop(&every_);
  } else {
    for (const auto& k : e->keys) {
      auto p = postings_.find(k);
      if (p == postings_.end()) continue;
      drop(&p->second);
      if (p->second.empty()) postings_.erase(p);
    }
  }
  entries_.erase(it);
}

void RoutingIndex::Match(const store::EventPtr& event,
                         const std::function<void(const std::shared_ptr<Follower>&)>& visit) {
  const uint64_t seq = ++sequence_;
  auto examine = [&](Entry* e) {
    if (e->seen == seq) return;  // filed under two of this event's keys
    e->seen = seq;
    ++candidates_;
    if (event->position >= e->follower->start() && e->follower->filter().Match(event->event)) {
      visit(e->follower);
    }
  };
  for (Entry* e : every_) examine(e);
  CompiledFilter::EventRoutingKeys(event->event, &event_keys_);
  for (const auto& k : event_keys_) {
    auto p = postings_.find(k);
    if (p == postings_.end()) continue;
    for (Entry* e : p->second) examine(e);
  }
}

}  // namespace icr::broker
