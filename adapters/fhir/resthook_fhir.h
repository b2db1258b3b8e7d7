// The FHIR side of rest-hook subscriptions: endpoint URLs, request headers,
// and the backport "subscription-status-r4" notification Bundles. Internal to
// icr_adapter_fhir_resthook (resthook.h is the public header); declared here
// so the tests can check the Bundles byte for byte.
//
// Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"

namespace icr::adapters::fhir {

// An http:// endpoint, split for the HTTP client.
struct Endpoint {
  std::string host;         // name, IPv4, or IPv6 without brackets
  uint16_t port = 80;
  std::string target = "/";  // path and query
  std::string host_header;   // "host" or "host:port" ([v6]:port)
};

// "" when `url` is http://host[:port][/path][?query] (no user info, no
// fragment, no spaces or control characters), else the problem.
std::string ParseEndpoint(std::string_view url, Endpoint* out);

// "" when the header may be sent: a token name that is not one we set
// ourselves, and a value without control characters.
std::string HeaderProblem(const std::string& name, const std::string& value);

struct NotificationInfo {
  std::string subscription_reference;  // "Subscription/<name>" or absolute
  std::string topic_url;
  std::string status = "active";       // "active" | "error"
  std::string type = "event-notification";  // | "heartbeat"
  std::string content = "full-resource";    // | "id-only" | "empty"
  // Including this notification's events.
  uint64_t events_since_subscription_start = 0;
  int64_t now_micros = 0;
};

// The Bundle (type "history") as compact JSON: a Parameters resource with the
// backport-subscription-status-r4 profile, then, for "full-resource", one
// Binary (contentType application/json, data = base64 of the event's proto3
// JSON) per event; for "id-only" one entry without a resource per event.
std::string BuildNotificationBundle(const NotificationInfo& info,
                                    const std::vector<store::EventPtr>& events);

// RFC 3339 UTC with milliseconds, as a FHIR instant: 2026-11-23T09:30:00.000Z.
std::string FhirInstant(int64_t micros);

std::string Base64Encode(std::string_view bytes);

}  // namespace icr::adapters::fhir
