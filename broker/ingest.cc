#include "broker/ingest.h"

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
  (void)caller;  // the policy check is wired in by the governance change
  std::string problem = Validate(&events, batch);
  if (!problem.empty()) {
    done(store::Status::InvalidArgument(problem), {});
    return;
  }
  store_->AppendOrdered(std::move(events), origin, std::move(done));
}

}  // namespace icr::broker
