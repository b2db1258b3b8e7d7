#include "broker/ingest.h"

#include "broker/access.h"
#include "broker/hub.h"

namespace icr::broker {

std::string Ingest::Validate(std::vector<icr::v1::CareEvent>* events, bool batch) const {
  if (events->empty()) {
    return batch ? "events: at least one event is required" : "event: is required";
  }
  if (events->size() > static_cast<size_t>(kMaxEventsPerRequest)) {
    return "events: " + std::to_string(events->size()) + " events exceeds the limit of " +
           std::to_string(kMaxEventsPerRequest) + " per request";
  }
  const int64_t now = NowMicros();
  for (size_t i = 0; i < events->size(); ++i) {
    std::string path = batch ? "events[" + std::to_string(i) + "]" : "event";
    std::string problem = ValidateAndNormaliseEvent(&(*events)[i], now, options_, path);
    if (!problem.empty()) return problem;
  }
  return {};
}

void Ingest::Publish(std::vector<icr::v1::CareEvent> events, bool batch,
                     store::AppendCallback done, uint64_t origin,
                     const PeerIdentity* caller) {
  // Who is asking comes first: an unknown caller learns nothing, not even
  // whether its events were valid.
  Caller who;
  if (caller != nullptr && access_ != nullptr) {
    if (store::Status s = access_->Identify(*caller, &who); !s.ok()) {
      done(s, {});
      return;
    }
  }
  std::string problem = Validate(&events, batch);
  if (!problem.empty()) {
    done(store::Status::InvalidArgument(problem), {});
    return;
  }
  if (who.principal != nullptr) {
    if (store::Status s = access_->CheckPublish(who, events, batch); !s.ok()) {
      done(s, {});
      return;
    }
  }
  store_->AppendOrdered(std::move(events), origin, std::move(done));
}

}  // namespace icr::broker
