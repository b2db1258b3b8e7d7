// Ingest: the one way events enter the broker, whichever protocol carried
// them (gRPC, HL7 v2 over MLLP, FHIR R4, CSV). It validates and normalises
// every event of a request, then hands the whole request to the store, which
// stores it atomically and durably before `done` runs.
//
//   ingest.Publish(std::move(events), [](const Status& s, std::vector<AppendResult> r) {
//     // OK: every event is durable (or a duplicate of one that is).
//     // INVALID_ARGUMENT: nothing stored; s.message() names the field and rule.
//   });
//
// Thread-safety: Publish may be called from any thread; `done` runs on the
// calling thread (validation failures) or on the store's writer thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "broker/identity.h"
#include "broker/validation.h"
#include "icr/v1/events.pb.h"
#include "store/store.h"

namespace icr::broker {

class AccessControl;

class Ingest {
 public:
  // Most events in one request. Default: 10,000.
  static constexpr int kMaxEventsPerRequest = 10000;

  Ingest(store::EventStore* store, ValidationOptions options)
      : store_(store), options_(std::move(options)) {}

  // Validates every event (naming them "event" when `batch` is false, else
  // "events[i]"), then appends them all or none. A validation failure calls
  // `done` at once with kInvalidArgument and stores nothing. `origin`: calls
  // that must stay in order with each other (one client stream) share a
  // non-zero origin (store::EventStore::AppendOrdered). `caller`: who sent
  // the events (an adapter's connection or a gRPC call); the policy decides
  // whether it may publish them (kUnauthenticated / kPermissionDenied, with
  // nothing stored). nullptr: the broker itself (escalations), trusted.
  void Publish(std::vector<icr::v1::CareEvent> events, bool batch, store::AppendCallback done,
               uint64_t origin = 0, const PeerIdentity* caller = nullptr);

  // Validation alone, for callers that need the problem before publishing
  // (e.g. to map it back to an HL7 field). "" when valid.
  std::string Validate(std::vector<icr::v1::CareEvent>* events, bool batch) const;

  // The policy check for callers (set once, before the first Publish).
  void SetAccessControl(AccessControl* access) { access_ = access; }
  // The broker's access control (nullptr: no policy), for adapters that
  // identify callers beyond Publish (FHIR rest-hook subscriptions).
  AccessControl* access() const { return access_; }

  const ValidationOptions& options() const { return options_; }
  store::EventStore* store() const { return store_; }

 private:
  store::EventStore* store_;
  ValidationOptions options_;
  AccessControl* access_ = nullptr;
};

}  // namespace icr::broker
