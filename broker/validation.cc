#include "broker/validation.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>
#include <google/protobuf/timestamp.pb.h>

#include <cctype>
#include <unordered_set>
#include <vector>

#include "broker/civil_time.h"
#include "broker/nhs_number.h"
#include "broker/utf8.h"
#include "icr/v1/options.pb.h"

namespace icr::broker {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr int64_t kMinSeconds = -2208988800;    // 1900-01-01T00:00:00Z
constexpr int64_t kMaxSeconds = 7258118400;     // 2200-01-01T00:00:00Z

std::string DateProblem(const icr::v1::Date& d) {
  if (d.year() < 1900 || d.year() > 2200) {
    return "year " + std::to_string(d.year()) + " is outside 1900..2200";
  }
  if (d.month() < 1 || d.month() > 12) {
    return "month " + std::to_string(d.month()) + " is outside 1..12";
  }
  const int max_day = civil::DaysInMonth(d.year(), d.month());
  if (d.day() < 1 || d.day() > max_day) {
    return "day " + std::to_string(d.day()) + " is not a day of month " +
           std::to_string(d.month()) + " (1.." + std::to_string(max_day) + ")";
  }
  return {};
}

std::string TimestampProblem(const google::protobuf::Timestamp& t) {
  if (t.nanos() < 0 || t.nanos() > 999999999) return "nanos must be in 0..999999999";
  if (t.seconds() < kMinSeconds || t.seconds() >= kMaxSeconds) {
    return "must be between 1900-01-01 and 2200-01-01";
  }
  return {};
}

// Where the walker is, as a chain of frames on the stack; the text of a path
// is built only when there is a problem to report (this runs for every field
// of every event, so it allocates nothing on success).
struct Frame {
  const Frame* parent = nullptr;
  const std::string* root = nullptr;        // set on the outermost frame only
  const FieldDescriptor* field = nullptr;
  int index = -1;                           // repeated element, or -1
};

std::string PathOf(const Frame& f) {
  if (f.root != nullptr) return *f.root;
  std::string p = PathOf(*f.parent) + "." + f.field->name();
  if (f.index >= 0) p += "[" + std::to_string(f.index) + "]";
  return p;
}

// Whether a field carries [(icr.v1.required) = true], read once per field.
bool IsRequired(const FieldDescriptor* f) {
  static const auto* const kRequired = [] {
    auto* set = new std::unordered_set<const FieldDescriptor*>();
    std::vector<const Descriptor*> todo = {icr::v1::CareEvent::descriptor()};
    std::unordered_set<const Descriptor*> seen;
    while (!todo.empty()) {
      const Descriptor* d = todo.back();
      todo.pop_back();
      if (!seen.insert(d).second) continue;
      for (int i = 0; i < d->field_count(); ++i) {
        const FieldDescriptor* field = d->field(i);
        if (field->options().GetExtension(icr::v1::required)) set->insert(field);
        if (field->message_type() != nullptr) todo.push_back(field->message_type());
      }
    }
    return set;
  }();
  return kRequired->count(f) > 0;
}

// Walks a message by reflection: required fields, enum values, string
// lengths, Dates and Timestamps, at any depth. Stops at the first problem.
class Walker {
 public:
  explicit Walker(const ValidationOptions& options) : options_(options) {}

  std::string Walk(const Message& m, const Frame& at) {
    const Descriptor* d = m.GetDescriptor();
    const Reflection* r = m.GetReflection();
    if (d == icr::v1::Date::descriptor()) {
      auto p = DateProblem(static_cast<const icr::v1::Date&>(m));
      return p.empty() ? p : PathOf(at) + ": " + p;
    }
    if (d == google::protobuf::Timestamp::descriptor()) {
      auto p = TimestampProblem(static_cast<const google::protobuf::Timestamp&>(m));
      return p.empty() ? p : PathOf(at) + ": " + p;
    }
    std::string scratch;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->is_repeated()) {
        int n = r->FieldSize(m, f);
        for (int j = 0; j < n; ++j) {
          Frame element{&at, nullptr, f, j};
          std::string p;
          if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
            p = Walk(r->GetRepeatedMessage(m, f, j), element);
          } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
            p = StringProblem(r->GetRepeatedStringReference(m, f, j, &scratch), element);
          } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
            p = EnumProblem(f, r->GetRepeatedEnumValue(m, f, j), element);
          }
          if (!p.empty()) return p;
        }
        continue;
      }
      if (f->containing_oneof() != nullptr && !r->HasField(m, f)) continue;
      const Frame here{&at, nullptr, f, -1};
      std::string p;
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_MESSAGE:
          if (r->HasField(m, f)) {
            p = Walk(r->GetMessage(m, f), here);
          } else if (IsRequired(f)) {
            p = PathOf(here) + ": is required";
          }
          break;
        case FieldDescriptor::CPPTYPE_STRING: {
          const std::string& s = r->GetStringReference(m, f, &scratch);
          if (s.empty() && IsRequired(f)) {
            p = PathOf(here) + ": is required";
          } else {
            p = StringProblem(s, here);
          }
          break;
        }
        case FieldDescriptor::CPPTYPE_ENUM: {
          int v = r->GetEnumValue(m, f);
          if (v == 0 && IsRequired(f)) {
            p = PathOf(here) + ": is required (one of " + EnumNames(f) + ")";
          } else {
            p = EnumProblem(f, v, here);
          }
          break;
        }
        case FieldDescriptor::CPPTYPE_INT32:
          if (IsRequired(f) && r->GetInt32(m, f) == 0) p = PathOf(here) + ": is required";
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE: {
          double v = r->GetDouble(m, f);
          if (!(v == v) || v > 1e12 || v < -1e12) p = PathOf(here) + ": must be a finite number";
          break;
        }
        default:
          break;
      }
      if (!p.empty()) return p;
    }
    return {};
  }

 private:
  std::string StringProblem(const std::string& s, const Frame& at) {
    if (s.size() > options_.max_string_bytes) {
      return PathOf(at) + ": " + std::to_string(s.size()) + " bytes exceeds the limit of " +
             std::to_string(options_.max_string_bytes) + " bytes";
    }
    for (unsigned char c : s) {
      if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
        return PathOf(at) + ": contains a control character (0x" + Hex(c) + ")";
      }
    }
    // gRPC refuses such text on the way in; an adapter could pass it on
    // (e.g. Latin-1 bytes in an HL7 field), and a subscriber could then
    // not parse the stored event.
    if (std::string utf8 = Utf8Problem(s); !utf8.empty()) return PathOf(at) + ": " + utf8;
    return {};
  }

  static std::string Hex(unsigned char c) {
    static const char* k = "0123456789abcdef";
    return {k[c >> 4], k[c & 15]};
  }

  static std::string EnumNames(const FieldDescriptor* f) {
    std::string out;
    const auto* e = f->enum_type();
    for (int i = 1; i < e->value_count(); ++i) {
      if (!out.empty()) out += ", ";
      out += e->value(i)->name();
    }
    return out;
  }

  static std::string EnumProblem(const FieldDescriptor* f, int v, const Frame& at) {
    if (f->enum_type()->FindValueByNumber(v) != nullptr) return {};
    return PathOf(at) + ": " + std::to_string(v) + " is not a known " + f->enum_type()->name() +
           " (one of " + EnumNames(f) + ")";
  }

  const ValidationOptions& options_;
};

bool AllOf(const std::string& s, bool (*ok)(unsigned char)) {
  for (unsigned char c : s) {
    if (!ok(c)) return false;
  }
  return true;
}

bool IdentChar(unsigned char c) {
  return std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
}
bool OdsChar(unsigned char c) { return std::isupper(c) || std::isdigit(c); }
bool PrintableChar(unsigned char c) { return c >= 0x20 && c < 0x7f; }

void UpperCase(std::string* s) {
  for (char& c : *s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
}

}  // namespace

std::string OdsCodeProblem(std::string* code, const std::string& path) {
  UpperCase(code);
  if (code->size() < 3 || code->size() > 10 || !AllOf(*code, OdsChar)) {
    return path + ": '" + code->substr(0, 32) +
           "' is not an ODS code (3 to 10 letters and digits, e.g. RKB)";
  }
  return {};
}

namespace {

std::string PayloadRules(icr::v1::CareEvent* e, const std::string& path) {
  using icr::v1::CareEvent;
  switch (e->payload_case()) {
    case CareEvent::kPlacementRequest: {
      const auto& p = e->placement_request();
      if (p.service_type() == icr::v1::HOME_SUPPORT) {
        if (!(p.hours_per_week() > 0 && p.hours_per_week() <= 168)) {
          return path + ".placement_request.hours_per_week: must be more than 0 and at most 168 "
                        "for HOME_SUPPORT";
        }
        if (p.calls_per_day() < 1 || p.calls_per_day() > 8) {
          return path + ".placement_request.calls_per_day: must be 1..8 for HOME_SUPPORT";
        }
      }
      if (p.needs().carers_per_call() < 0 || p.needs().carers_per_call() > 4) {
        return path + ".placement_request.needs.carers_per_call: must be 0..4";
      }
      break;
    }
    case CareEvent::kDischargeReferral: {
      const auto& r = e->discharge_referral();
      if (r.needs().carers_per_call() < 0 || r.needs().carers_per_call() > 4) {
        return path + ".discharge_referral.needs.carers_per_call: must be 0..4";
      }
      if (auto p = OdsCodeProblem(e->mutable_discharge_referral()->mutable_referrer()->mutable_organisation(),
                              path + ".discharge_referral.referrer.organisation");
          !p.empty()) {
        return p;
      }
      break;
    }
    case CareEvent::kNhsNumberMerge: {
      std::string* retired = e->mutable_nhs_number_merge()->mutable_retired_nhs_number();
      *retired = NormaliseNhsNumber(*retired);
      if (auto p = NhsNumberProblem(*retired); !p.empty()) {
        return path + ".nhs_number_merge.retired_nhs_number: " + p;
      }
      if (*retired == e->nhs_number()) {
        return path + ".nhs_number_merge.retired_nhs_number: must differ from nhs_number (the "
                      "surviving number)";
      }
      break;
    }
    case CareEvent::kEncounterCancellation: {
      auto t = e->encounter_cancellation().cancelled_event_type();
      if (t != icr::v1::ADMISSION && t != icr::v1::TRANSFER && t != icr::v1::DISCHARGE) {
        return path + ".encounter_cancellation.cancelled_event_type: must be ADMISSION, TRANSFER "
                      "or DISCHARGE";
      }
      break;
    }
    case CareEvent::kEscalation:
      if (e->source_system_id() != kBrokerSourceSystem) {
        return path + ".escalation: escalations are raised by the broker itself (source_system_id "
                      "\"" + std::string(kBrokerSourceSystem) + "\"); publish the referral's "
                      "state changes instead";
      }
      break;
    case CareEvent::kGpRegistration:
      return OdsCodeProblem(e->mutable_gp_registration()->mutable_practice(),
                        path + ".gp_registration.practice");
    case CareEvent::PAYLOAD_NOT_SET:
      return path + ".payload: exactly one payload is required (for example discharge_referral; "
                    "see EventType)";
    default:
      break;
  }
  return {};
}

}  // namespace

std::string ValidateAndNormaliseEvent(icr::v1::CareEvent* e, int64_t now_micros,
                                      const ValidationOptions& options, const std::string& path) {
  // Broker-assigned fields are ours, whatever the publisher sent.
  e->clear_event_id();
  e->clear_position();
  e->clear_recorded_at();
  e->clear_referral_version();
  e->clear_purged_at();  // only retention makes stubs
  e->set_event_type(static_cast<icr::v1::EventType>(e->payload_case()));

  size_t size = e->ByteSizeLong();
  if (size > options.max_event_bytes) {
    return path + ": " + std::to_string(size) + " bytes exceeds the limit of " +
           std::to_string(options.max_event_bytes) + " bytes per event";
  }
  e->set_nhs_number(NormaliseNhsNumber(e->nhs_number()));
  if (auto p = NhsNumberProblem(e->nhs_number()); !p.empty()) {
    return path + ".nhs_number: " + p;
  }
  if (options.reject_test_nhs_numbers && IsTestRangeNhsNumber(e->nhs_number())) {
    return path + ".nhs_number: the test range 999 000 0000 - 999 999 9999 is refused in the "
                  "production profile";
  }
  if (e->source_system_id().empty()) return path + ".source_system_id: is required";
  if (e->source_system_id().size() > 64 || !AllOf(e->source_system_id(), IdentChar)) {
    return path + ".source_system_id: must be 1..64 characters of A-Z a-z 0-9 . _ : -";
  }
  if (e->source_message_id().empty()) {
    return path + ".source_message_id: is required (the idempotency key of this message)";
  }
  if (e->source_message_id().size() > 128 || !AllOf(e->source_message_id(), PrintableChar)) {
    return path + ".source_message_id: must be 1..128 printable ASCII characters";
  }
  if (e->source_organisation().empty()) return path + ".source_organisation: is required";
  if (auto p = OdsCodeProblem(e->mutable_source_organisation(), path + ".source_organisation");
      !p.empty()) {
    return p;
  }
  if (!e->has_occurred_at()) return path + ".occurred_at: is required";
  const int64_t now_seconds = now_micros / 1000000;
  if (e->occurred_at().seconds() > now_seconds + options.max_future_skew_seconds) {
    return path + ".occurred_at: is " +
           std::to_string(e->occurred_at().seconds() - now_seconds) +
           " s in the future (at most " + std::to_string(options.max_future_skew_seconds) +
           " s allowed: check the sender's clock)";
  }
  if (e->has_addressee() && !e->addressee().organisation().empty()) {
    if (auto p = OdsCodeProblem(e->mutable_addressee()->mutable_organisation(),
                            path + ".addressee.organisation");
        !p.empty()) {
      return p;
    }
  }
  if (e->priority() == icr::v1::PRIORITY_UNSPECIFIED) e->set_priority(icr::v1::ROUTINE);

  Walker walker(options);
  if (auto p = walker.Walk(*e, Frame{nullptr, &path, nullptr, -1}); !p.empty()) return p;
  return PayloadRules(e, path);
}

std::string ValidateFilter(const icr::v1::EventFilter& filter) {
  for (int i = 0; i < filter.nhs_numbers_size(); ++i) {
    if (auto p = NhsNumberProblem(NormaliseNhsNumber(filter.nhs_numbers(i))); !p.empty()) {
      return "filter.nhs_numbers[" + std::to_string(i) + "]: " + p;
    }
  }
  for (int i = 0; i < filter.source_organisations_size(); ++i) {
    std::string code = filter.source_organisations(i);
    if (auto p = OdsCodeProblem(&code, "filter.source_organisations[" + std::to_string(i) + "]");
        !p.empty()) {
      return p;
    }
  }
  for (int i = 0; i < filter.addressees_size(); ++i) {
    std::string code = filter.addressees(i).organisation();
    if (auto p = OdsCodeProblem(&code, "filter.addressees[" + std::to_string(i) + "].organisation");
        !p.empty()) {
      return p;
    }
  }
  auto enum_problem = [](const char* field, int index, int value,
                         const google::protobuf::EnumDescriptor* type) -> std::string {
    if (value != 0 && type->FindValueByNumber(value) != nullptr) return {};
    return std::string("filter.") + field + "[" + std::to_string(index) + "]: " +
           std::to_string(value) + " is not a known " + type->name();
  };
  for (int i = 0; i < filter.event_types_size(); ++i) {
    if (auto p = enum_problem("event_types", i, filter.event_types(i),
                              icr::v1::EventType_descriptor());
        !p.empty()) {
      return p;
    }
  }
  for (int i = 0; i < filter.care_settings_size(); ++i) {
    if (auto p = enum_problem("care_settings", i, filter.care_settings(i),
                              icr::v1::CareSetting_descriptor());
        !p.empty()) {
      return p;
    }
  }
  for (int i = 0; i < filter.priorities_size(); ++i) {
    if (auto p = enum_problem("priorities", i, filter.priorities(i),
                              icr::v1::Priority_descriptor());
        !p.empty()) {
      return p;
    }
  }
  if (filter.has_team()) {
    std::string code = filter.team().organisation();
    if (auto p = OdsCodeProblem(&code, "filter.team.organisation"); !p.empty()) return p;
    if (filter.team().team_code().empty()) {
      return "filter.team.team_code: is required (the registered team's code)";
    }
  } else if (filter.care_relationship()) {
    return "filter.care_relationship: needs filter.team (whose care relationships to follow)";
  }
  return {};
}

std::string ValidateSubscriptionName(const std::string& name) {
  if (name.empty() || name.size() > 128 || !AllOf(name, IdentChar)) {
    return "subscription: '" + name.substr(0, 140) +
           "' must be 1..128 characters of A-Z a-z 0-9 . _ : -";
  }
  return {};
}

}  // namespace icr::broker
