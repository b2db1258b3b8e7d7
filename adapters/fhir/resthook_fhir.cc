#include "adapters/fhir/resthook_fhir.h"

#include <google/protobuf/util/json_util.h>

#include <cctype>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>

#include "adapters/fhir/resthook.h"
#include "broker/nhs_number.h"
#include "broker/validation.h"

namespace icr::adapters::fhir {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kBackport[] = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

std::string RandomUuid() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  uint64_t hi = rng(), lo = rng();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx",
                static_cast<unsigned>(hi >> 32), static_cast<unsigned>((hi >> 16) & 0xffff),
                static_cast<unsigned>(hi & 0xffff), static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return buf;
}

int64_t ToMicros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

bool TokenChar(unsigned char c) {
  return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                                std::string_view::npos;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string ParseEndpoint(std::string_view url, Endpoint* out) {
  constexpr std::string_view kHttp = "http://";
  if (url.empty()) return "is required (http://host:port/path)";
  if (url.size() > 2048) return "longer than 2,048 characters";
  for (unsigned char c : url) {
    if (c <= 0x20 || c >= 0x7f) return "contains a space or a non-ASCII or control character";
  }
  if (Lower(url.substr(0, 8)) == "https://") {
    return "https is not supported; use http:// (terminate TLS in a local proxy)";
  }
  if (Lower(url.substr(0, kHttp.size())) != kHttp) {
    return "'" + std::string(url.substr(0, 64)) + "' is not an http:// URL";
  }
  std::string_view rest = url.substr(kHttp.size());
  if (rest.find('#') != std::string_view::npos) return "must not have a fragment (#...)";
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  std::string target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (target[0] == '?') target = "/" + target;
  if (authority.find('@') != std::string_view::npos) {
    return "must not carry user information (put credentials in a header)";
  }
  std::string host;
  std::string_view port_text;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return "unclosed '[' in the host";
    host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return "unexpected characters after the IPv6 host";
      port_text = after.substr(1);
      if (port_text.empty()) return "empty port";
    }
  } else {
    size_t colon = authority.rfind(':');
    host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return "empty port";
    }
    for (unsigned char c : host) {
      if (!std::isalnum(c) && c != '-' && c != '.' && c != '_') {
        return "host '" + host + "' has a character that is not allowed";
      }
    }
  }
  if (host.empty()) return "has no host";
  unsigned port = 80;
  if (!port_text.empty()) {
    if (port_text.size() > 5) return "port '" + std::string(port_text) + "' is not 1..65535";
    port = 0;
    for (char c : port_text) {
      if (!std::isdigit(static_cast<unsigned char>(c))) {
        return "port '" + std::string(port_text) + "' is not a number";
      }
      port = port * 10 + static_cast<unsigned>(c - '0');
    }
    if (port < 1 || port > 65535) return "port " + std::to_string(port) + " is not 1..65535";
  }
  out->host = host;
  out->port = static_cast<uint16_t>(port);
  out->target = target;
  std::string bracketed = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  out->host_header = port == 80 ? bracketed : bracketed + ":" + std::to_string(port);
  return {};
}

std::string HeaderProblem(const std::string& name, const std::string& value) {
  if (name.empty() || name.size() > 256) return "name must be 1..256 characters";
  for (unsigned char c : name) {
    if (!TokenChar(c)) return "name '" + name.substr(0, 64) + "' is not an HTTP header name";
  }
  const std::string lower = Lower(name);
  for (const char* ours : {"host", "content-type", "content-length", "transfer-encoding",
                           "connection", "te", "upgrade", "expect"}) {
    if (lower == ours) return "'" + name + "' is set by the broker";
  }
  if (value.size() > 8192) return "value longer than 8,192 characters";
  for (unsigned char c : value) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return "value contains a control character";
  }
  return {};
}

std::string FhirInstant(int64_t micros) {
  int64_t seconds = micros / 1000000;
  int64_t rem = micros % 1000000;
  if (rem < 0) {
    rem += 1000000;
    --seconds;
  }
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(rem / 1000));
  return buf;
}

std::string Base64Encode(std::string_view in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += k[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string BuildNotificationBundle(const NotificationInfo& info,
                                    const std::vector<store::EventPtr>& events) {
  const std::string now = FhirInstant(info.now_micros);
  Json params = Json::array();
  params.push_back(
      {{"name", "subscription"}, {"valueReference", {{"reference", info.subscription_reference}}}});
  params.push_back({{"name", "topic"}, {"valueCanonical", info.topic_url}});
  params.push_back({{"name", "status"}, {"valueCode", info.status}});
  params.push_back({{"name", "type"}, {"valueCode", info.type}});
  params.push_back({{"name", "events-since-subscription-start"},
                    {"valueString", std::to_string(info.events_since_subscription_start)}});
  Json entries = Json::array();
  for (const auto& e : events) {
    const std::string focus = "urn:uuid:" + e->event.event_id();
    Json part = Json::array();
    part.push_back({{"name", "event-number"}, {"valueString", std::to_string(e->position)}});
    part.push_back(
        {{"name", "timestamp"}, {"valueInstant", FhirInstant(ToMicros(e->event.recorded_at()))}});
    if (info.content != "empty") {
      part.push_back({{"name", "focus"},
                      {"valueReference", {{"reference", focus}, {"type", "Binary"}}}});
    }
    params.push_back({{"name", "notification-event"}, {"part", part}});
    if (info.content == "empty") continue;
    Json entry = {{"fullUrl", focus}};
    if (info.content == "full-resource") {
      std::string json;
      (void)google::protobuf::util::MessageToJsonString(e->event, &json);
      entry["resource"] = {{"resourceType", "Binary"},
                           {"id", e->event.event_id()},
                           {"contentType", "application/json"},
                           {"data", Base64Encode(json)}};
    }
    entry["request"] = {{"method", "POST"}, {"url", "Binary"}};
    entry["response"] = {{"status", "201"}};
    entries.push_back(std::move(entry));
  }
  const std::string status_id = RandomUuid();
  Json status_entry = {
      {"fullUrl", "urn:uuid:" + status_id},
      {"resource",
       {{"resourceType", "Parameters"},
        {"id", status_id},
        {"meta", {{"profile", Json::array({kBackportStatusProfile})}}},
        {"parameter", params}}},
      {"request", {{"method", "GET"}, {"url", info.subscription_reference + "/$status"}}},
      {"response", {{"status", "200"}}}};
  entries.insert(entries.begin(), std::move(status_entry));
  Json bundle = {{"resourceType", "Bundle"},
                 {"id", RandomUuid()},
                 {"meta", {{"lastUpdated", now}}},
                 {"type", "history"},
                 {"timestamp", now},
                 {"entry", entries}};
  return bundle.dump();
}

// ---------------------------------------------------------------------------
// Subscription resources and criteria
// ---------------------------------------------------------------------------

namespace {

std::string PercentDecode(std::string_view in, bool* ok) {
  std::string out;
  *ok = true;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size() || !std::isxdigit(static_cast<unsigned char>(in[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      *ok = false;
      return {};
    }
    out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

// An enum value by name (case-insensitive, '-' for '_'), not the 0 value.
bool EnumByName(const google::protobuf::EnumDescriptor* type, std::string_view text, int* out) {
  std::string name = Upper(text);
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  const auto* v = type->FindValueByName(name);
  if (v == nullptr || v->number() == 0) return false;
  *out = v->number();
  return true;
}

std::string EnumExamples(const google::protobuf::EnumDescriptor* type) {
  std::string out;
  for (int i = 1; i < type->value_count() && i <= 3; ++i) {
    out += (out.empty() ? "" : ", ") + type->value(i)->name();
  }
  return out + (type->value_count() > 4 ? ", ..." : "");
}

constexpr char kNhsNumberSystem[] = "https://fhir.nhs.uk/Id/nhs-number";

}  // namespace

std::string FilterFromCriteria(std::string_view criteria, icr::v1::EventFilter* out) {
  constexpr std::string_view kType = "CareEvent";
  size_t q = criteria.find('?');
  std::string_view type = criteria.substr(0, q);
  if (type != kType) {
    return "must be 'CareEvent?name=value&...' (the resource type is '" +
           std::string(type.substr(0, 40)) + "')";
  }
  if (q == std::string_view::npos || q + 1 == criteria.size()) return {};  // every event
  for (std::string_view pair : Split(criteria.substr(q + 1), '&')) {
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string name(pair.substr(0, eq));
    if (eq == std::string_view::npos || eq + 1 == pair.size()) {
      return "parameter '" + name + "' has no value";
    }
    for (std::string_view raw : Split(pair.substr(eq + 1), ',')) {
      bool ok = true;
      std::string value = PercentDecode(raw, &ok);
      if (!ok) return name + ": bad percent-encoding in '" + std::string(raw) + "'";
      if (value.empty()) return name + ": empty value in a list";
      int number = 0;
      if (name == "event-type") {
        if (!EnumByName(icr::v1::EventType_descriptor(), value, &number)) {
          return name + ": '" + value + "' is not an event type (" +
                 EnumExamples(icr::v1::EventType_descriptor()) + ")";
        }
        out->add_event_types(static_cast<icr::v1::EventType>(number));
      } else if (name == "care-setting") {
        if (!EnumByName(icr::v1::CareSetting_descriptor(), value, &number)) {
          return name + ": '" + value + "' is not a care setting (" +
                 EnumExamples(icr::v1::CareSetting_descriptor()) + ")";
        }
        out->add_care_settings(static_cast<icr::v1::CareSetting>(number));
      } else if (name == "priority") {
        if (!EnumByName(icr::v1::Priority_descriptor(), value, &number)) {
          return name + ": '" + value + "' is not a priority (URGENT, ROUTINE, BULK)";
        }
        out->add_priorities(static_cast<icr::v1::Priority>(number));
      } else if (name == "source-organisation") {
        out->add_source_organisations(Upper(value));
      } else if (name == "addressee") {
        size_t bar = value.find('|');
        auto* a = out->add_addressees();
        a->set_organisation(Upper(value.substr(0, bar)));
        if (bar != std::string::npos) a->set_team_code(value.substr(bar + 1));
      } else if (name == "nhs-number") {
        size_t bar = value.find('|');
        if (bar != std::string::npos) {
          if (value.substr(0, bar) != kNhsNumberSystem) {
            return name + ": the identifier system must be " + std::string(kNhsNumberSystem);
          }
          value = value.substr(bar + 1);
        }
        out->add_nhs_numbers(broker::NormaliseNhsNumber(value));
      } else {
        return "unknown parameter '" + name +
               "' (event-type, care-setting, priority, source-organisation, addressee, "
               "nhs-number)";
      }
    }
  }
  return broker::ValidateFilter(*out);
}

namespace {

// Reads the Subscription; throws Problem for the first bad element.
struct Problem {
  std::string expression;
  std::string message;
};

[[noreturn]] void Fail(std::string expression, std::string message) {
  throw Problem{std::move(expression), std::move(message)};
}

const Json* Member(const Json& object, const char* name) {
  auto it = object.find(name);
  return it == object.end() ? nullptr : &*it;
}

const std::string& String(const Json& v, const std::string& expression) {
  if (!v.is_string()) Fail(expression, "must be a string");
  return v.get_ref<const std::string&>();
}

uint64_t Unsigned(const Json& v, const std::string& expression) {
  if (!v.is_number_unsigned()) Fail(expression, "must be a non-negative integer");
  return v.get<uint64_t>();
}

// Calls fn(index, url, extension) for each element of `holder`.extension.
template <typename Fn>
void Extensions(const Json& holder, const std::string& path, Fn fn) {
  const Json* list = Member(holder, "extension");
  if (list == nullptr) return;
  if (!list->is_array()) Fail(path + ".extension", "must be an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string at = path + ".extension[" + std::to_string(i) + "]";
    const Json& ext = (*list)[i];
    if (!ext.is_object()) Fail(at, "must be an object");
    const Json* url = Member(ext, "url");
    if (url == nullptr) Fail(at + ".url", "is required");
    fn(at, String(*url, at + ".url"), ext);
  }
}

std::string Backport(const char* name) { return std::string(kBackport) + name; }

void ReadSubscription(const Json& r, RestHookSubscription* out) {
  if (!r.is_object()) Fail("Subscription", "must be a JSON object");
  const Json* type = Member(r, "resourceType");
  if (type == nullptr || !type->is_string() || *type != "Subscription") {
    Fail("Subscription.resourceType", "must be \"Subscription\"");
  }
  if (Member(r, "modifierExtension")) {
    Fail("Subscription.modifierExtension", "is not supported");
  }
  if (const Json* id = Member(r, "id")) {
    out->name = String(*id, "Subscription.id");
    if (auto p = broker::ValidateSubscriptionName(out->name); !p.empty()) {
      Fail("Subscription.id", "'" + out->name.substr(0, 64) +
                                  "' must be 1..128 characters of A-Z a-z 0-9 . _ : - (it names "
                                  "the durable subscription)");
    }
  }
  if (const Json* status = Member(r, "status")) {
    const std::string& s = String(*status, "Subscription.status");
    if (s != "requested" && s != "active") {
      Fail("Subscription.status", "'" + s + "' cannot be created (requested or active)");
    }
  }
  if (Member(r, "end")) {
    Fail("Subscription.end", "is not supported: delete the subscription when it should stop");
  }
  const Json* criteria = Member(r, "criteria");
  if (criteria == nullptr) {
    Fail("Subscription.criteria", "is required: the SubscriptionTopic canonical URL");
  }
  out->topic_url = String(*criteria, "Subscription.criteria");
  if (out->topic_url.rfind("CareEvent", 0) == 0) {
    Fail("Subscription.criteria",
         "must be the SubscriptionTopic canonical URL; put 'CareEvent?...' in the "
         "backport-filter-criteria extension of Subscription._criteria");
  }
  if (out->topic_url.find("://") == std::string::npos && out->topic_url.rfind("urn:", 0) != 0) {
    Fail("Subscription.criteria", "'" + out->topic_url.substr(0, 64) +
                                      "' is not a canonical URL of a SubscriptionTopic");
  }
  if (const Json* ext = Member(r, "_criteria")) {
    if (!ext->is_object()) Fail("Subscription._criteria", "must be an object");
    Extensions(*ext, "Subscription._criteria",
               [&](const std::string& at, const std::string& url, const Json& e) {
                 if (url != Backport("backport-filter-criteria")) return;
                 const Json* v = Member(e, "valueString");
                 if (v == nullptr) Fail(at + ".valueString", "is required");
                 const std::string& text = String(*v, at + ".valueString");
                 if (auto p = FilterFromCriteria(text, &out->filter); !p.empty()) {
                   Fail(at + ".valueString", p);
                 }
               });
  }
  const Json* channel = Member(r, "channel");
  if (channel == nullptr || !channel->is_object()) {
    Fail("Subscription.channel", "is required (an object)");
  }
  const Json* ctype = Member(*channel, "type");
  if (ctype == nullptr) Fail("Subscription.channel.type", "is required (rest-hook)");
  if (String(*ctype, "Subscription.channel.type") != "rest-hook") {
    Fail("Subscription.channel.type",
         "'" + ctype->get<std::string>() + "' is not supported (only rest-hook)");
  }
  const Json* endpoint = Member(*channel, "endpoint");
  if (endpoint == nullptr) Fail("Subscription.channel.endpoint", "is required");
  out->endpoint = String(*endpoint, "Subscription.channel.endpoint");
  Endpoint parsed;
  if (auto p = ParseEndpoint(out->endpoint, &parsed); !p.empty()) {
    Fail("Subscription.channel.endpoint", p);
  }
  const Json* payload = Member(*channel, "payload");
  out->content = "empty";  // R4: no payload element, no payload
  if (payload != nullptr) {
    const std::string& p = String(*payload, "Subscription.channel.payload");
    if (p != "application/fhir+json" && p != "application/json") {
      Fail("Subscription.channel.payload",
           "'" + p + "' is not supported (application/fhir+json; no XML)");
    }
    out->content = "full-resource";
  }
  if (const Json* ext = Member(*channel, "_payload")) {
    if (!ext->is_object()) Fail("Subscription.channel._payload", "must be an object");
    Extensions(*ext, "Subscription.channel._payload",
               [&](const std::string& at, const std::string& url, const Json& e) {
                 if (url != Backport("backport-payload-content")) return;
                 const Json* v = Member(e, "valueCode");
                 if (v == nullptr) Fail(at + ".valueCode", "is required");
                 const std::string& c = String(*v, at + ".valueCode");
                 if (c != "full-resource" && c != "id-only" && c != "empty") {
                   Fail(at + ".valueCode", "'" + c + "' is not empty, id-only or full-resource");
                 }
                 out->content = c;
               });
  }
  out->headers.clear();
  if (const Json* headers = Member(*channel, "header")) {
    if (!headers->is_array()) Fail("Subscription.channel.header", "must be an array");
    for (size_t i = 0; i < headers->size(); ++i) {
      const std::string at = "Subscription.channel.header[" + std::to_string(i) + "]";
      const std::string& h = String((*headers)[i], at);
      size_t colon = h.find(':');
      if (colon == std::string::npos) Fail(at, "must be 'Name: value'");
      std::string name = h.substr(0, colon);
      std::string value = h.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
      if (auto p = HeaderProblem(name, value); !p.empty()) Fail(at, p);
      out->headers.emplace_back(std::move(name), std::move(value));
    }
  }
  Extensions(*channel, "Subscription.channel",
             [&](const std::string& at, const std::string& url, const Json& e) {
               if (url == Backport("backport-heartbeat-period")) {
                 const Json* v = Member(e, "valueUnsignedInt");
                 if (v == nullptr) Fail(at + ".valueUnsignedInt", "is required");
                 uint64_t s = Unsigned(*v, at + ".valueUnsignedInt");
                 if (s > 86400) Fail(at + ".valueUnsignedInt", "must be 0..86400 seconds");
                 out->heartbeat_seconds = static_cast<uint32_t>(s);
               } else if (url == Backport("backport-timeout")) {
                 const Json* v = Member(e, "valueUnsignedInt");
                 if (v == nullptr) Fail(at + ".valueUnsignedInt", "is required");
                 uint64_t s = Unsigned(*v, at + ".valueUnsignedInt");
                 if (s < 1 || s > 60) Fail(at + ".valueUnsignedInt", "must be 1..60 seconds");
                 out->timeout_ms = static_cast<uint32_t>(s * 1000);
               } else if (url == Backport("backport-max-count")) {
                 const Json* v = Member(e, "valuePositiveInt");
                 if (v == nullptr) Fail(at + ".valuePositiveInt", "is required");
                 uint64_t n = Unsigned(*v, at + ".valuePositiveInt");
                 if (n < 1 || n > 1000) Fail(at + ".valuePositiveInt", "must be 1..1000");
                 out->max_events_per_notification = static_cast<uint32_t>(n);
               }
             });
}

}  // namespace

store::Status SubscriptionFromFhirJson(std::string_view json, RestHookSubscription* out,
                                       std::string* error_expression) {
  error_expression->clear();
  constexpr size_t kMaxBytes = 64 * 1024;
  if (json.size() > kMaxBytes) {
    *error_expression = "Subscription";
    return store::Status::InvalidArgument("Subscription: larger than 64 KiB");
  }
  // Nesting deeper than a Subscription ever needs is refused before parsing,
  // so hostile input cannot exhaust the parser's stack.
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : json) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  if (max_depth > 16) {
    *error_expression = "Subscription";
    return store::Status::InvalidArgument("Subscription: nested deeper than 16 levels");
  }
  Json r = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (r.is_discarded()) {
    *error_expression = "Subscription";
    return store::Status::InvalidArgument("Subscription: not valid JSON");
  }
  RestHookSubscription result;
  try {
    ReadSubscription(r, &result);
  } catch (const Problem& p) {
    *error_expression = p.expression;
    return store::Status::InvalidArgument(p.expression + ": " + p.message);
  } catch (const std::exception& e) {
    *error_expression = "Subscription";
    return store::Status::InvalidArgument(std::string("Subscription: ") + e.what());
  }
  *out = std::move(result);
  return {};
}

}  // namespace icr::adapters::fhir
