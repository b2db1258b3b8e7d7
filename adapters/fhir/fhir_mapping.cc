// FHIR R4 JSON -> CareEvents; see fhir_mapping.h and docs/adapters/fhir.md.
//
// Layout: JSON accessors that report wrong types as issues; FHIR date/time
// parsing; code tables; reference resolution inside a Bundle; one mapper per
// resource type; the request driver (single resource or Bundle); and the
// mapping of broker validation messages back to FHIR expressions.
#include "adapters/fhir/fhir_mapping.h"

#include "broker/civil_time.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <optional>
#include <utility>

#include "adapters/fhir/fhir_json.h"

namespace icr::adapters::fhir {
namespace {

using nlohmann::json;

constexpr const char* kSupportedTypes[] = {"Patient", "Encounter", "ServiceRequest", "Task"};

bool IsSupportedType(std::string_view type) {
  return std::find(std::begin(kSupportedTypes), std::end(kSupportedTypes), type) !=
         std::end(kSupportedTypes);
}

// Quotes a sender's value for a message, shortened.
std::string Quote(std::string_view s) {
  if (s.size() > 64) return "'" + std::string(s.substr(0, 64)) + "...'";
  return "'" + std::string(s) + "'";
}

std::string WhereSystem(const std::string& path, const char* system) {
  return path + ".where(system='" + system + "')";
}

std::string ExtensionPath(const std::string& path, const char* url) {
  return path + ".extension('" + url + "')";
}

// ---------------------------------------------------------------------------
// Issues and typed access to JSON members
// ---------------------------------------------------------------------------

class Sink {
 public:
  explicit Sink(std::vector<OutcomeIssue>* out) : out_(out) {}
  // Several readers may visit the same element; each problem is reported once.
  void Add(IssueType code, std::string expression, std::string diagnostics) {
    for (const auto& i : *out_) {
      if (i.code == code && i.expression == expression && i.diagnostics == diagnostics) return;
    }
    OutcomeIssue issue;
    issue.severity = IssueSeverity::kError;
    issue.code = code;
    issue.expression = std::move(expression);
    issue.diagnostics = std::move(diagnostics);
    out_->push_back(std::move(issue));
  }
  void Required(const std::string& expression, const std::string& why) {
    Add(IssueType::kRequired, expression,
        expression + ": is required" + (why.empty() ? "" : "; " + why));
  }
  void Value(const std::string& expression, const std::string& why) {
    Add(IssueType::kValue, expression, expression + ": " + why);
  }
  size_t size() const { return out_->size(); }

 private:
  std::vector<OutcomeIssue>* out_;
};

const char* JsonTypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::null:
      return "null";
    default:
      return "a number";
  }
}

void WrongType(Sink& s, const std::string& path, const char* expected, const json& v) {
  s.Add(IssueType::kStructure, path,
        path + ": must be " + expected + " (FHIR JSON), not " + JsonTypeName(v));
}

// obj[name], or nullptr when absent. JSON null is not a FHIR value: reported
// and read as absent.
const json* Member(const json& obj, const char* name, const std::string& path, Sink& s) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(name);
  if (it == obj.end()) return nullptr;
  if (it->is_null()) {
    s.Add(IssueType::kStructure, path + "." + name,
          path + "." + name + ": null is not a FHIR value (leave the element out)");
    return nullptr;
  }
  return &*it;
}

const json* ObjectMember(const json& obj, const char* name, const std::string& path, Sink& s) {
  const json* v = Member(obj, name, path, s);
  if (v != nullptr && !v->is_object()) {
    WrongType(s, path + "." + name, "an object", *v);
    return nullptr;
  }
  return v;
}

const json* ArrayMember(const json& obj, const char* name, const std::string& path, Sink& s) {
  const json* v = Member(obj, name, path, s);
  if (v != nullptr && !v->is_array()) {
    WrongType(s, path + "." + name, "an array", *v);
    return nullptr;
  }
  return v;
}

// Whether obj[name] is absent or "" (what StringMember reads as absent
// without reporting anything).
bool IsAbsentOrEmptyString(const json& obj, const char* name) {
  auto it = obj.find(name);
  return it == obj.end() || (it->is_string() && it->get_ref<const std::string&>().empty());
}

// A string member; "" (FHIR forbids empty strings) reads as absent.
std::optional<std::string> StringMember(const json& obj, const char* name, const std::string& path,
                                        Sink& s) {
  const json* v = Member(obj, name, path, s);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) {
    WrongType(s, path + "." + name, "a string", *v);
    return std::nullopt;
  }
  const std::string& str = v->get_ref<const std::string&>();
  if (str.empty()) return std::nullopt;
  return str;
}

std::optional<bool> BoolMember(const json& obj, const char* name, const std::string& path,
                               Sink& s) {
  const json* v = Member(obj, name, path, s);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) {
    WrongType(s, path + "." + name, "a boolean", *v);
    return std::nullopt;
  }
  return v->get<bool>();
}

std::optional<int64_t> IntegerMember(const json& obj, const char* name, const std::string& path,
                                     Sink& s) {
  const json* v = Member(obj, name, path, s);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT32_MAX)) {
      s.Value(path + "." + name, "is out of range");
      return std::nullopt;
    }
    int64_t n = v->get<int64_t>();
    if (n < INT32_MIN || n > INT32_MAX) {
      s.Value(path + "." + name, "is out of range");
      return std::nullopt;
    }
    return n;
  }
  WrongType(s, path + "." + name, "an integer", *v);
  return std::nullopt;
}

std::optional<double> NumberMember(const json& obj, const char* name, const std::string& path,
                                   Sink& s) {
  const json* v = Member(obj, name, path, s);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) {
    WrongType(s, path + "." + name, "a number", *v);
    return std::nullopt;
  }
  return v->get<double>();
}

// The objects of an array member, with their paths ("name[i]"); entries that
// are not objects are reported and skipped.
std::vector<std::pair<const json*, std::string>> ObjectItems(const json& obj, const char* name,
                                                             const std::string& path, Sink& s) {
  std::vector<std::pair<const json*, std::string>> out;
  const json* arr = ArrayMember(obj, name, path, s);
  if (arr == nullptr) return out;
  for (size_t i = 0; i < arr->size(); ++i) {
    std::string p = path + "." + name + "[" + std::to_string(i) + "]";
    const json& item = (*arr)[i];
    if (!item.is_object()) {
      WrongType(s, p, "an object", item);
      continue;
    }
    out.emplace_back(&item, std::move(p));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Dates and times
// ---------------------------------------------------------------------------

// A FHIR date or dateTime: YYYY, YYYY-MM, YYYY-MM-DD or
// YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm|-hh:mm).
struct FhirDateTime {
  int year = 0, month = 0, day = 0;
  bool has_day = false;
  bool has_time = false;
  int64_t epoch_seconds = 0;  // of the instant (midnight UTC for a date)
  int32_t nanos = 0;
};

using civil::DaysFromCivil;
using civil::DaysInMonth;

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// False when `s` is not a FHIR date/dateTime. When it has the right shape
// but names a month or day that does not exist ("1950-02-30", "1950-13"),
// *nonexistent (if given) says which part.
bool ParseDateTime(std::string_view s, FhirDateTime* out, std::string* nonexistent = nullptr) {
  FhirDateTime t;
  if (!Digits(s, 0, 4, &t.year) || t.year < 1) return false;
  size_t pos = 4;
  if (pos < s.size()) {
    if (s[pos] != '-' || !Digits(s, pos + 1, 2, &t.month)) return false;
    if (t.month < 1 || t.month > 12) {
      if (nonexistent != nullptr) {
        *nonexistent = "month " + std::to_string(t.month) + " is outside 1..12";
      }
      return false;
    }
    pos += 3;
  }
  if (t.month != 0 && pos < s.size()) {
    if (s[pos] != '-' || !Digits(s, pos + 1, 2, &t.day)) return false;
    if (t.day < 1 || t.day > DaysInMonth(t.year, t.month)) {
      if (nonexistent != nullptr) {
        *nonexistent = "day " + std::to_string(t.day) + " is not a day of month " +
                       std::to_string(t.month) + " in " + std::to_string(t.year) + ": 1.." +
                       std::to_string(DaysInMonth(t.year, t.month));
      }
      return false;
    }
    t.has_day = true;
    pos += 3;
  }
  int hour = 0, minute = 0, second = 0, offset = 0;
  if (t.has_day && pos < s.size()) {
    if (s[pos] != 'T' || !Digits(s, pos + 1, 2, &hour) || hour > 23 || s.size() <= pos + 3 ||
        s[pos + 3] != ':' || !Digits(s, pos + 4, 2, &minute) || minute > 59 ||
        s.size() <= pos + 6 || s[pos + 6] != ':' || !Digits(s, pos + 7, 2, &second) ||
        second > 59) {
      return false;
    }
    pos += 9;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      size_t digits = 0;
      int64_t frac = 0;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        if (digits < 9) frac = frac * 10 + (s[pos] - '0');
        ++digits;
        ++pos;
      }
      if (digits == 0) return false;
      for (size_t i = digits; i < 9; ++i) frac *= 10;
      t.nanos = static_cast<int32_t>(frac);
    }
    // A time needs a zone (FHIR dateTime rule).
    if (pos >= s.size()) return false;
    if (s[pos] == 'Z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int oh = 0, om = 0;
      if (!Digits(s, pos + 1, 2, &oh) || oh > 14 || s.size() <= pos + 3 || s[pos + 3] != ':' ||
          !Digits(s, pos + 4, 2, &om) || om > 59) {
        return false;
      }
      offset = (oh * 3600 + om * 60) * (s[pos] == '-' ? -1 : 1);
      pos += 6;
    } else {
      return false;
    }
    t.has_time = true;
  }
  if (pos != s.size()) return false;
  if (t.has_day) {
    t.epoch_seconds =
        DaysFromCivil(t.year, t.month, t.day) * 86400 + hour * 3600 + minute * 60 + second - offset;
  }
  *out = t;
  return true;
}

constexpr char kDateTimeForm[] =
    "must be a FHIR dateTime with at least a full date (YYYY-MM-DD, or "
    "YYYY-MM-DDThh:mm:ss with Z or an offset)";

// Reads obj[name] as a time (a full date means midnight UTC).
bool TimeMember(const json& obj, const char* name, const std::string& path, Sink& s,
                google::protobuf::Timestamp* out) {
  auto v = StringMember(obj, name, path, s);
  if (!v) return false;
  FhirDateTime t;
  std::string nonexistent;
  if (!ParseDateTime(*v, &t, &nonexistent) || !t.has_day) {
    s.Value(path + "." + name,
            nonexistent.empty()
                ? Quote(*v) + " " + kDateTimeForm
                : Quote(*v) + " is a date that does not exist (" + nonexistent + ")");
    return false;
  }
  out->set_seconds(t.epoch_seconds);
  out->set_nanos(t.nanos);
  return true;
}

// Reads obj[name] (a date or dateTime) as a calendar date: the date as
// written, in the sender's local time.
bool DateMember(const json& obj, const char* name, const std::string& path, Sink& s,
                icr::v1::Date* out) {
  auto v = StringMember(obj, name, path, s);
  if (!v) return false;
  FhirDateTime t;
  std::string nonexistent;
  if (!ParseDateTime(*v, &t, &nonexistent) || !t.has_day) {
    s.Value(path + "." + name,
            nonexistent.empty()
                ? Quote(*v) + " must be a full date YYYY-MM-DD"
                : Quote(*v) + " is a date that does not exist (" + nonexistent + ")");
    return false;
  }
  out->set_year(t.year);
  out->set_month(t.month);
  out->set_day(t.day);
  return true;
}

// ---------------------------------------------------------------------------
// Code tables
// ---------------------------------------------------------------------------

template <typename E>
struct CodeEntry {
  const char* code;
  E value;
};

template <typename E, size_t N>
std::optional<E> Lookup(const CodeEntry<E> (&table)[N], std::string_view code) {
  for (const auto& e : table) {
    if (code == e.code) return e.value;
  }
  return std::nullopt;
}

template <typename E, size_t N>
std::string Codes(const CodeEntry<E> (&table)[N]) {
  std::string out;
  for (const auto& e : table) {
    if (!out.empty()) out += ", ";
    out += e.code;
  }
  return out;
}

const CodeEntry<icr::v1::DischargePathway> kPathways[] = {
    {"pathway-0", icr::v1::PATHWAY_0},
    {"pathway-1", icr::v1::PATHWAY_1},
    {"pathway-2", icr::v1::PATHWAY_2},
    {"pathway-3", icr::v1::PATHWAY_3},
};

const CodeEntry<icr::v1::Place> kPlaces[] = {
    {"coventry", icr::v1::COVENTRY},
    {"rugby", icr::v1::RUGBY},
    {"warwickshire-north", icr::v1::WARWICKSHIRE_NORTH},
    {"south-warwickshire", icr::v1::SOUTH_WARWICKSHIRE},
};

const CodeEntry<icr::v1::ServiceType> kServiceTypes[] = {
    {"home-support", icr::v1::HOME_SUPPORT},
    {"residential", icr::v1::RESIDENTIAL},
    {"nursing", icr::v1::NURSING},
    {"dementia-residential", icr::v1::DEMENTIA_RESIDENTIAL},
    {"step-down-bed", icr::v1::STEP_DOWN_BED},
    {"housing-with-care", icr::v1::HOUSING_WITH_CARE},
};

const CodeEntry<icr::v1::ReferralStatus> kReferralStatuses[] = {
    {"created", icr::v1::CREATED},
    {"accepted", icr::v1::ACCEPTED},
    {"forwarded-to-brokerage", icr::v1::FORWARDED_TO_BROKERAGE},
    {"placement-requested", icr::v1::PLACEMENT_REQUESTED},
    {"offer-made", icr::v1::OFFER_MADE},
    {"offer-accepted", icr::v1::OFFER_ACCEPTED},
    {"service-confirmed", icr::v1::SERVICE_CONFIRMED},
    {"discharged", icr::v1::DISCHARGED},
    {"withdrawn", icr::v1::WITHDRAWN},
};

// Task.status when no businessStatus says more.
const CodeEntry<icr::v1::ReferralStatus> kTaskStatuses[] = {
    {"requested", icr::v1::CREATED},   {"received", icr::v1::CREATED},
    {"accepted", icr::v1::ACCEPTED},   {"rejected", icr::v1::WITHDRAWN},
    {"cancelled", icr::v1::WITHDRAWN}, {"completed", icr::v1::DISCHARGED},
};

const CodeEntry<icr::v1::DischargeDestination> kIcrDestinations[] = {
    {"usual-residence", icr::v1::USUAL_RESIDENCE},
    {"usual-residence-with-support", icr::v1::USUAL_RESIDENCE_WITH_SUPPORT},
    {"care-home-residential", icr::v1::CARE_HOME_RESIDENTIAL},
    {"care-home-nursing", icr::v1::CARE_HOME_NURSING},
    {"step-down-bed", icr::v1::STEP_DOWN_BED_DESTINATION},
    {"other-hospital", icr::v1::OTHER_HOSPITAL},
    {"hospice", icr::v1::HOSPICE},
    {"died", icr::v1::DIED},
    {"self-discharge", icr::v1::SELF_DISCHARGE},
    {"other", icr::v1::OTHER_DESTINATION},
};

// NHS Data Dictionary "Discharge destination code" as in UK Core.
// 98 (not discharged) is refused: a finished Encounter was discharged.
const CodeEntry<icr::v1::DischargeDestination> kUkCoreDestinations[] = {
    {"19", icr::v1::USUAL_RESIDENCE},
    {"29", icr::v1::OTHER_DESTINATION},
    {"30", icr::v1::OTHER_HOSPITAL},
    {"37", icr::v1::OTHER_DESTINATION},
    {"38", icr::v1::OTHER_DESTINATION},
    {"48", icr::v1::OTHER_HOSPITAL},
    {"49", icr::v1::OTHER_HOSPITAL},
    {"50", icr::v1::OTHER_HOSPITAL},
    {"51", icr::v1::OTHER_HOSPITAL},
    {"52", icr::v1::OTHER_HOSPITAL},
    {"53", icr::v1::OTHER_HOSPITAL},
    {"54", icr::v1::CARE_HOME_NURSING},
    {"65", icr::v1::CARE_HOME_RESIDENTIAL},
    {"66", icr::v1::OTHER_DESTINATION},
    {"79", icr::v1::DIED},
    {"84", icr::v1::OTHER_HOSPITAL},
    {"85", icr::v1::CARE_HOME_RESIDENTIAL},
    {"87", icr::v1::OTHER_HOSPITAL},
    {"88", icr::v1::HOSPICE},
    {"99", icr::v1::OTHER_DESTINATION},
};

// FHIR's base discharge-disposition codes.
const CodeEntry<icr::v1::DischargeDestination> kHl7Destinations[] = {
    {"home", icr::v1::USUAL_RESIDENCE},
    {"alt-home", icr::v1::OTHER_DESTINATION},
    {"other-hcf", icr::v1::OTHER_HOSPITAL},
    {"hosp", icr::v1::HOSPICE},
    {"long", icr::v1::CARE_HOME_RESIDENTIAL},
    {"aadvice", icr::v1::SELF_DISCHARGE},
    {"exp", icr::v1::DIED},
    {"psy", icr::v1::OTHER_HOSPITAL},
    {"rehab", icr::v1::STEP_DOWN_BED_DESTINATION},
    {"snf", icr::v1::CARE_HOME_NURSING},
    {"oth", icr::v1::OTHER_DESTINATION},
};

// The coding of `codeable` (a CodeableConcept) in `system`: its code, and the
// path of that coding. A coding in the system without a code is reported.
std::optional<std::string> CodeIn(const json& codeable, const std::string& path, const char* system,
                                  Sink& s, std::string* coding_path = nullptr) {
  for (const auto& [coding, cpath] : ObjectItems(codeable, "coding", path, s)) {
    auto sys = StringMember(*coding, "system", cpath, s);
    if (!sys || *sys != system) continue;
    auto code = StringMember(*coding, "code", cpath, s);
    if (!code) {
      s.Required(cpath + ".code", "");
      return std::nullopt;
    }
    if (coding_path != nullptr) *coding_path = cpath + ".code";
    return code;
  }
  return std::nullopt;
}

// Looks `system`'s code up in `table`; an unknown code is a value issue.
template <typename E, size_t N>
std::optional<E> CodedValue(const json& codeable, const std::string& path, const char* system,
                            const CodeEntry<E> (&table)[N], Sink& s, std::string* where = nullptr) {
  std::string cpath;
  auto code = CodeIn(codeable, path, system, s, &cpath);
  if (!code) return std::nullopt;
  auto v = Lookup(table, *code);
  if (!v) {
    s.Value(cpath, Quote(*code) + " is not a code of " + system + " (one of " + Codes(table) + ")");
    return std::nullopt;
  }
  if (where != nullptr) *where = cpath;
  return v;
}

// The extensions of `element` with this url, with their paths.
std::vector<std::pair<const json*, std::string>> Extensions(const json& element,
                                                            const std::string& path,
                                                            const char* url, Sink& s) {
  std::vector<std::pair<const json*, std::string>> out;
  for (const auto& [ext, epath] : ObjectItems(element, "extension", path, s)) {
    auto u = StringMember(*ext, "url", epath, s);
    if (!u) {
      s.Required(epath + ".url", "every extension names its url");
      continue;
    }
    if (*u == url) out.emplace_back(ext, ExtensionPath(path, url));
  }
  return out;
}

const json* Extension(const json& element, const std::string& path, const char* url, Sink& s,
                      std::string* ext_path) {
  auto all = Extensions(element, path, url, s);
  if (all.empty()) return nullptr;
  *ext_path = all.front().second;
  return all.front().first;
}

// ---------------------------------------------------------------------------
// Identity, envelope and references
// ---------------------------------------------------------------------------

// Who sent the request, and where each part came from.
struct Identity {
  std::string source_system;
  FieldOrigin source_system_origin;
  std::string source_organisation;
  FieldOrigin source_organisation_origin;
  icr::v1::CareSetting care_setting = icr::v1::ACUTE;
};

// A resource in reach of references: a Bundle entry or a contained resource.
struct Target {
  int index = -1;  // Bundle.entry index; -1 for a contained resource
  const json* resource = nullptr;
  std::string type;
  std::string id;
  std::string full_url;
  std::string expression;
};

class Resolver {
 public:
  void Add(Target t) { targets_.push_back(std::move(t)); }

  // The target of `reference` ("#id" contained in `owner`, an entry fullUrl,
  // "Type/id" or an absolute URL ending in "/Type/id"), or nullptr.
  const Target* Find(const std::string& reference, const json& owner, const std::string& owner_expr,
                     Target* contained_out) const {
    if (!reference.empty() && reference[0] == '#') {
      if (!owner.is_object()) return nullptr;
      auto list = owner.find("contained");
      if (list == owner.end() || !list->is_array()) return nullptr;
      for (size_t i = 0; i < list->size(); ++i) {
        const json& r = (*list)[i];
        if (!r.is_object()) continue;
        auto id = r.find("id");
        auto type = r.find("resourceType");
        if (id == r.end() || !id->is_string() || *id != reference.substr(1) || type == r.end() ||
            !type->is_string()) {
          continue;
        }
        contained_out->index = -1;
        contained_out->resource = &r;
        contained_out->type = type->get<std::string>();
        contained_out->id = id->get<std::string>();
        contained_out->full_url.clear();
        contained_out->expression = owner_expr + ".contained[" + std::to_string(i) + "]";
        return contained_out;
      }
      return nullptr;
    }
    for (const auto& t : targets_) {
      if (!t.full_url.empty() && t.full_url == reference) return &t;
    }
    for (const auto& t : targets_) {
      if (t.id.empty()) continue;
      const std::string relative = t.type + "/" + t.id;
      if (reference == relative) return &t;
      if (reference.size() > relative.size() &&
          reference.compare(reference.size() - relative.size(), relative.size(), relative) == 0 &&
          reference[reference.size() - relative.size() - 1] == '/') {
        return &t;
      }
    }
    return nullptr;
  }

 private:
  std::vector<Target> targets_;
};

// Everything a resource mapper needs.
struct Scope {
  const json& resource;
  std::string type;
  std::string expr;  // "Patient" or "Bundle.entry[i].resource"
  const Identity& identity;
  std::string message_id;  // base of the source message ids
  std::string message_id_expr;
  const Resolver& resolver;
  const RequestContext& context;
  Sink& sink;
  MappedEntry* entry;
};

// A new event with the envelope filled in; the mapper adds the payload.
// `suffix` distinguishes the events one resource version can produce.
MappedEvent* NewEvent(Scope& sc, const std::string& nhs, const FieldOrigin& nhs_origin,
                      const google::protobuf::Timestamp& occurred, const std::string& occurred_expr,
                      icr::v1::Priority priority, const std::string& suffix) {
  MappedEvent& m = sc.entry->events.emplace_back();
  m.resource_expression = sc.expr;
  icr::v1::CareEvent& e = m.event;
  e.set_source_system_id(sc.identity.source_system);
  e.set_source_organisation(sc.identity.source_organisation);
  e.set_care_setting(sc.identity.care_setting);
  e.set_source_message_id(sc.message_id + "#" + suffix);
  e.set_nhs_number(nhs);
  *e.mutable_occurred_at() = occurred;
  e.set_priority(priority);
  m.origins.push_back(sc.identity.source_system_origin);
  m.origins.push_back(sc.identity.source_organisation_origin);
  m.origins.push_back({"source_message_id", sc.message_id_expr, ""});
  m.origins.push_back({"care_setting", "", "X-ICR-Care-Setting"});
  FieldOrigin n = nhs_origin;
  n.field = "nhs_number";
  m.origins.push_back(std::move(n));
  m.origins.push_back({"occurred_at", occurred_expr, ""});
  return &m;
}

void AddOrigin(MappedEvent* m, std::string field, std::string expression) {
  m->origins.push_back({std::move(field), std::move(expression), ""});
}

// "DISCHARGE_REFERRAL" -> "discharge-referral".
std::string Slug(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string EventSuffix(icr::v1::EventType type) { return Slug(icr::v1::EventType_Name(type)); }

// The NHS number among `identifiers` (an Identifier array member), with the
// expression of its value. Reports a present NHS identifier without value.
std::optional<std::string> NhsFromIdentifiers(const json& owner, const std::string& owner_expr,
                                              Sink& s, std::string* value_expr) {
  const std::string where = WhereSystem(owner_expr + ".identifier", kNhsNumberSystem);
  for (const auto& [ident, ipath] : ObjectItems(owner, "identifier", owner_expr, s)) {
    auto sys = StringMember(*ident, "system", ipath, s);
    if (!sys || *sys != kNhsNumberSystem) continue;
    auto value = StringMember(*ident, "value", ipath, s);
    if (!value) {
      // A value that is there but not a string (or null) was reported as
      // such; only an absent or empty one is missing.
      if (IsAbsentOrEmptyString(*ident, "value")) {
        s.Required(where + ".value", "the NHS number identifier has no value");
      }
      return std::nullopt;
    }
    *value_expr = where + ".value";
    return value;
  }
  return std::nullopt;
}

// The NHS number of the person a Reference (obj[name]) points at: its logical
// identifier, else the Patient it references in the Bundle or contained.
std::optional<std::string> NhsFromReference(Scope& sc, const char* name, FieldOrigin* origin) {
  const std::string path = sc.expr + "." + name;
  const std::string required_expr = WhereSystem(path + ".identifier", kNhsNumberSystem);
  const json* ref = ObjectMember(sc.resource, name, sc.expr, sc.sink);
  if (ref == nullptr) {
    if (sc.resource.contains(name)) return std::nullopt;  // reported as the wrong type
    sc.sink.Required(required_expr, "the person's NHS number as a logical reference (" + path +
                                        ".identifier with system " + kNhsNumberSystem + ")");
    return std::nullopt;
  }
  if (const json* ident = ObjectMember(*ref, "identifier", path, sc.sink)) {
    auto sys = StringMember(*ident, "system", path + ".identifier", sc.sink);
    if (sys && *sys == kNhsNumberSystem) {
      auto value = StringMember(*ident, "value", path + ".identifier", sc.sink);
      if (!value) {
        if (IsAbsentOrEmptyString(*ident, "value")) {  // else reported as the wrong type
          sc.sink.Required(path + ".identifier.value", "the NHS number identifier has no value");
        }
        return std::nullopt;
      }
      origin->expression = path + ".identifier.value";
      return value;
    }
  }
  auto reference = StringMember(*ref, "reference", path, sc.sink);
  if (!reference) {
    sc.sink.Required(required_expr, "the person's NHS number as a logical reference (" + path +
                                        ".identifier with system " + kNhsNumberSystem +
                                        "), or a reference to a Patient in the same Bundle");
    return std::nullopt;
  }
  Target contained;
  const Target* t = sc.resolver.Find(*reference, sc.resource, sc.expr, &contained);
  if (t == nullptr || t->type != "Patient") {
    sc.sink.Required(required_expr,
                     "reference " + Quote(*reference) +
                         (t == nullptr ? " does not resolve to a resource in this request"
                                       : " is a " + t->type + ", not a Patient") +
                         "; give the NHS number as " + path + ".identifier (system " +
                         kNhsNumberSystem + ") or reference a Patient entry by its fullUrl");
    return std::nullopt;
  }
  std::string value_expr;
  const size_t issues_before = sc.sink.size();
  auto nhs = NhsFromIdentifiers(*t->resource, t->expression, sc.sink, &value_expr);
  if (!nhs && sc.sink.size() == issues_before) {  // else the identifier's problem is reported
    sc.sink.Required(WhereSystem(t->expression + ".identifier", kNhsNumberSystem),
                     "the Patient referenced by " + path + " has no NHS number identifier");
    return std::nullopt;
  }
  origin->expression = value_expr;
  return nhs;
}

// The first identifier value of the resource, else its id: the business id
// of an encounter, referral or request.
std::optional<std::string> BusinessId(Scope& sc, std::string* expr) {
  for (const auto& [ident, ipath] : ObjectItems(sc.resource, "identifier", sc.expr, sc.sink)) {
    if (auto v = StringMember(*ident, "value", ipath, sc.sink)) {
      *expr = ipath + ".value";
      return v;
    }
  }
  if (auto id = StringMember(sc.resource, "id", sc.expr, sc.sink)) {
    *expr = sc.expr + ".id";
    return id;
  }
  return std::nullopt;
}

// occurred_at: the first of `names` present (a dateTime/instant member of the
// resource, or "meta.lastUpdated"), else the time of receipt.
google::protobuf::Timestamp OccurredAt(Scope& sc, std::initializer_list<const char*> names,
                                       std::string* expr) {
  google::protobuf::Timestamp t;
  for (const char* name : names) {
    std::string_view n(name);
    const json* owner = &sc.resource;
    std::string owner_expr = sc.expr;
    std::string leaf(n);
    if (auto dot = n.find('.'); dot != std::string_view::npos) {
      std::string head(n.substr(0, dot));
      owner = ObjectMember(sc.resource, head.c_str(), sc.expr, sc.sink);
      owner_expr = sc.expr + "." + head;
      leaf = std::string(n.substr(dot + 1));
      if (owner == nullptr) continue;
    }
    if (!owner->contains(leaf)) continue;
    if (TimeMember(*owner, leaf.c_str(), owner_expr, sc.sink, &t)) {
      *expr = owner_expr + "." + leaf;
    }
    return t;
  }
  t.set_seconds(sc.context.now_micros / 1000000);
  t.set_nanos(static_cast<int32_t>((sc.context.now_micros % 1000000) * 1000));
  *expr = sc.expr;
  return t;
}

// Request priority codes (ServiceRequest.priority, Task.priority).
icr::v1::Priority PriorityOf(Scope& sc, icr::v1::Priority default_priority) {
  auto p = StringMember(sc.resource, "priority", sc.expr, sc.sink);
  if (!p) return default_priority;
  if (*p == "routine") return icr::v1::ROUTINE;
  if (*p == "urgent" || *p == "asap" || *p == "stat") return icr::v1::URGENT;
  sc.sink.Value(sc.expr + ".priority",
                Quote(*p) + " is not a request priority (routine, urgent, asap, stat)");
  return default_priority;
}

// A team reference: Reference.identifier in the team-code system, whose
// assigner is the organisation (ODS). An ODS organisation identifier alone
// gives the organisation with no team.
bool TeamFromReference(const json& ref, const std::string& path, Sink& s, icr::v1::TeamRef* out,
                       std::string* expr) {
  const json* ident = ObjectMember(ref, "identifier", path, s);
  if (ident == nullptr) return false;
  const std::string ipath = path + ".identifier";
  auto sys = StringMember(*ident, "system", ipath, s);
  auto value = StringMember(*ident, "value", ipath, s);
  if (!sys) return false;
  if (*sys == kOdsOrganisationSystem) {
    if (!value) {
      s.Required(ipath + ".value", "");
      return false;
    }
    out->set_organisation(*value);
    *expr = ipath;
    return true;
  }
  if (*sys != kTeamCodeSystem) return false;
  if (!value) {
    s.Required(ipath + ".value", "the team code");
    return false;
  }
  out->set_team_code(*value);
  *expr = ipath;
  if (const json* assigner = ObjectMember(*ident, "assigner", ipath, s)) {
    if (const json* aident = ObjectMember(*assigner, "identifier", ipath + ".assigner", s)) {
      auto asys = StringMember(*aident, "system", ipath + ".assigner.identifier", s);
      auto avalue = StringMember(*aident, "value", ipath + ".assigner.identifier", s);
      if (asys && *asys == kOdsOrganisationSystem && avalue) out->set_organisation(*avalue);
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// Patient
// ---------------------------------------------------------------------------

void MapPatient(Scope& sc) {
  std::string nhs_expr;
  const size_t before = sc.sink.size();
  auto nhs = NhsFromIdentifiers(sc.resource, sc.expr, sc.sink, &nhs_expr);
  if (!nhs && sc.sink.size() == before) {  // else already reported
    sc.sink.Required(
        WhereSystem(sc.expr + ".identifier", kNhsNumberSystem),
        "the Patient's NHS number (identifier with system " + std::string(kNhsNumberSystem) + ")");
  }
  icr::v1::DemographicsUpdate d;
  std::vector<FieldOrigin> origins;

  // Name: the official one, else the first.
  auto names = ObjectItems(sc.resource, "name", sc.expr, sc.sink);
  const std::pair<const json*, std::string>* name = names.empty() ? nullptr : &names.front();
  for (const auto& n : names) {
    auto use = StringMember(*n.first, "use", n.second, sc.sink);
    if (use && *use == "official") {
      name = &n;
      break;
    }
  }
  if (name != nullptr) {
    if (auto family = StringMember(*name->first, "family", name->second, sc.sink)) {
      d.set_family_name(*family);
      origins.push_back({"demographics_update.family_name", name->second + ".family", ""});
    }
    if (const json* given = ArrayMember(*name->first, "given", name->second, sc.sink)) {
      for (size_t i = 0; i < given->size(); ++i) {
        const json& g = (*given)[i];
        if (!g.is_string()) {
          WrongType(sc.sink, name->second + ".given[" + std::to_string(i) + "]", "a string", g);
          continue;
        }
        d.add_given_names(g.get<std::string>());
      }
      origins.push_back({"demographics_update.given_names", name->second + ".given", ""});
    }
  }
  if (DateMember(sc.resource, "birthDate", sc.expr, sc.sink, d.mutable_birth_date())) {
    origins.push_back({"demographics_update.birth_date", sc.expr + ".birthDate", ""});
  } else {
    d.clear_birth_date();
  }
  if (auto gender = StringMember(sc.resource, "gender", sc.expr, sc.sink)) {
    if (*gender == "male" || *gender == "female" || *gender == "other" || *gender == "unknown") {
      d.set_gender(*gender);
    } else {
      sc.sink.Value(
          sc.expr + ".gender",
          Quote(*gender) + " is not an administrative gender (male, female, other, unknown)");
    }
  }
  // Postcode: the home address, else the first.
  auto addresses = ObjectItems(sc.resource, "address", sc.expr, sc.sink);
  const std::pair<const json*, std::string>* address =
      addresses.empty() ? nullptr : &addresses.front();
  for (const auto& a : addresses) {
    auto use = StringMember(*a.first, "use", a.second, sc.sink);
    if (use && *use == "home") {
      address = &a;
      break;
    }
  }
  if (address != nullptr) {
    if (auto postcode = StringMember(*address->first, "postalCode", address->second, sc.sink)) {
      d.set_postcode(*postcode);
      origins.push_back({"demographics_update.postcode", address->second + ".postalCode", ""});
    }
  }
  // Registered GP practice: the first generalPractitioner with an ODS code.
  std::string practice, practice_expr;
  for (const auto& [gp, gpath] :
       ObjectItems(sc.resource, "generalPractitioner", sc.expr, sc.sink)) {
    const json* ident = ObjectMember(*gp, "identifier", gpath, sc.sink);
    if (ident == nullptr) continue;
    auto sys = StringMember(*ident, "system", gpath + ".identifier", sc.sink);
    if (!sys || *sys != kOdsOrganisationSystem) continue;
    if (auto value = StringMember(*ident, "value", gpath + ".identifier", sc.sink)) {
      practice = *value;
      practice_expr = gpath + ".identifier.value";
      break;
    }
    sc.sink.Required(gpath + ".identifier.value", "the practice's ODS code");
  }
  if (!nhs || sc.sink.size() != before) return;

  std::string occurred_expr;
  auto occurred = OccurredAt(sc, {"meta.lastUpdated"}, &occurred_expr);
  if (sc.sink.size() != before) return;
  MappedEvent* m = NewEvent(sc, *nhs, {"", nhs_expr, ""}, occurred, occurred_expr, icr::v1::ROUTINE,
                            EventSuffix(icr::v1::DEMOGRAPHICS_UPDATE));
  *m->event.mutable_demographics_update() = std::move(d);
  for (auto& o : origins) m->origins.push_back(std::move(o));
  AddOrigin(m, "demographics_update", sc.expr);

  if (!practice.empty()) {
    MappedEvent* g = NewEvent(sc, *nhs, {"", nhs_expr, ""}, occurred, occurred_expr,
                              icr::v1::ROUTINE, EventSuffix(icr::v1::GP_REGISTRATION));
    g->event.mutable_gp_registration()->set_practice(practice);
    AddOrigin(g, "gp_registration.practice", practice_expr);
    AddOrigin(g, "gp_registration", sc.expr + ".generalPractitioner");
  }
}

// ---------------------------------------------------------------------------
// Encounter
// ---------------------------------------------------------------------------

// Location: the first Encounter.location; site from an ODS site identifier,
// ward from its display.
bool EncounterLocation(Scope& sc, icr::v1::Location* out, std::string* expr) {
  auto locations = ObjectItems(sc.resource, "location", sc.expr, sc.sink);
  if (locations.empty()) return false;
  const auto& [loc, lpath] = locations.front();
  const json* ref = ObjectMember(*loc, "location", lpath, sc.sink);
  if (ref == nullptr) return false;
  const std::string rpath = lpath + ".location";
  if (const json* ident = ObjectMember(*ref, "identifier", rpath, sc.sink)) {
    auto sys = StringMember(*ident, "system", rpath + ".identifier", sc.sink);
    auto value = StringMember(*ident, "value", rpath + ".identifier", sc.sink);
    if (sys && *sys == kOdsSiteSystem && value) out->set_site(*value);
  }
  if (auto display = StringMember(*ref, "display", rpath, sc.sink)) out->set_ward(*display);
  *expr = rpath;
  return !out->site().empty() || !out->ward().empty();
}

// Attending clinician: the participant typed ATND.
bool Attending(Scope& sc, icr::v1::Clinician* out, std::string* expr) {
  for (const auto& [p, ppath] : ObjectItems(sc.resource, "participant", sc.expr, sc.sink)) {
    bool attending = false;
    for (const auto& [type, tpath] : ObjectItems(*p, "type", ppath, sc.sink)) {
      auto code = CodeIn(*type, tpath, kHl7ParticipationTypeSystem, sc.sink);
      if (code && *code == "ATND") attending = true;
    }
    if (!attending) continue;
    const json* ind = ObjectMember(*p, "individual", ppath, sc.sink);
    if (ind == nullptr) continue;
    const std::string ipath = ppath + ".individual";
    if (const json* ident = ObjectMember(*ind, "identifier", ipath, sc.sink)) {
      if (auto v = StringMember(*ident, "value", ipath + ".identifier", sc.sink)) {
        out->set_professional_id(*v);
      }
    }
    if (auto display = StringMember(*ind, "display", ipath, sc.sink)) out->set_name(*display);
    *expr = ipath;
    return !out->professional_id().empty() || !out->name().empty();
  }
  return false;
}

// Admission method from UK Core's extension on Encounter.hospitalization:
// NHS Data Dictionary codes 11-13 elective, 2x emergency, 3x maternity,
// 8x other.
std::string AdmissionMethod(Scope& sc, std::string* expr) {
  const json* hosp = ObjectMember(sc.resource, "hospitalization", sc.expr, sc.sink);
  if (hosp == nullptr) return {};
  std::string epath;
  const json* ext = Extension(*hosp, sc.expr + ".hospitalization", kUkCoreAdmissionMethodExtension,
                              sc.sink, &epath);
  if (ext == nullptr) return {};
  const json* codeable = ObjectMember(*ext, "valueCodeableConcept", epath, sc.sink);
  if (codeable == nullptr) return {};
  for (const auto& [coding, cpath] :
       ObjectItems(*codeable, "coding", epath + ".valueCodeableConcept", sc.sink)) {
    auto code = StringMember(*coding, "code", cpath, sc.sink);
    if (!code) continue;
    *expr = cpath + ".code";
    switch ((*code)[0]) {
      case '1':
        return "elective";
      case '2':
        return "emergency";
      case '3':
        return "maternity";
      default:
        return "other";
    }
  }
  return {};
}

std::optional<icr::v1::DischargePathway> PathwayExtension(Scope& sc, std::string* expr) {
  std::string epath;
  const json* ext = Extension(sc.resource, sc.expr, kDischargePathwayExtension, sc.sink, &epath);
  if (ext == nullptr) return std::nullopt;
  const json* coding = ObjectMember(*ext, "valueCoding", epath, sc.sink);
  if (coding == nullptr) {
    sc.sink.Required(epath + ".valueCoding",
                     "a Coding from " + std::string(kDischargePathwaySystem));
    return std::nullopt;
  }
  auto code = StringMember(*coding, "code", epath + ".valueCoding", sc.sink);
  auto v = code ? Lookup(kPathways, *code) : std::nullopt;
  if (!v) {
    sc.sink.Value(epath + ".valueCoding.code", (code ? Quote(*code) : std::string("no code")) +
                                                   " is not a discharge pathway (one of " +
                                                   Codes(kPathways) + ")");
    return std::nullopt;
  }
  *expr = epath + ".valueCoding.code";
  return v;
}

void MapEncounter(Scope& sc) {
  const size_t before = sc.sink.size();
  auto status = StringMember(sc.resource, "status", sc.expr, sc.sink);
  FieldOrigin nhs_origin;
  auto nhs = NhsFromReference(sc, "subject", &nhs_origin);
  std::string id_expr;
  auto encounter_id = BusinessId(sc, &id_expr);
  if (!encounter_id) {
    sc.sink.Required(sc.expr + ".identifier",
                     "the provider's encounter (spell) id, as identifier[0].value or id");
  }
  if (!status) {
    sc.sink.Required(sc.expr + ".status",
                     "one of planned, in-progress, finished, entered-in-error");
    return;
  }
  const json* period = ObjectMember(sc.resource, "period", sc.expr, sc.sink);
  const bool has_end = period != nullptr && period->contains("end");

  if (*status == "planned") {
    icr::v1::PreAdmission p;
    std::vector<FieldOrigin> origins;
    if (period != nullptr && period->contains("start")) {
      if (DateMember(*period, "start", sc.expr + ".period", sc.sink,
                     p.mutable_expected_admission_date())) {
        origins.push_back({"pre_admission.expected_admission_date", sc.expr + ".period.start", ""});
      }
    }
    std::string expr;
    if (EncounterLocation(sc, p.mutable_location(), &expr)) {
      origins.push_back({"pre_admission.location", expr, ""});
    } else {
      p.clear_location();
    }
    p.set_admission_method(AdmissionMethod(sc, &expr));
    if (sc.sink.size() != before || !nhs || !encounter_id) return;
    p.set_encounter_id(*encounter_id);
    std::string occurred_expr;
    auto occurred = OccurredAt(sc, {"meta.lastUpdated"}, &occurred_expr);
    MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, icr::v1::ROUTINE,
                              EventSuffix(icr::v1::PRE_ADMISSION));
    *m->event.mutable_pre_admission() = std::move(p);
    AddOrigin(m, "pre_admission.encounter_id", id_expr);
    for (auto& o : origins) m->origins.push_back(std::move(o));
    AddOrigin(m, "pre_admission", sc.expr);
    return;
  }

  if (*status == "in-progress") {
    if (has_end) {
      sc.sink.Add(IssueType::kInvalid, sc.expr + ".period.end",
                  sc.expr +
                      ".period.end: an in-progress encounter has no end; send status "
                      "'finished' with the discharge disposition to record a discharge");
    }
    icr::v1::Admission a;
    std::vector<FieldOrigin> origins;
    std::string expr;
    if (EncounterLocation(sc, a.mutable_location(), &expr)) {
      origins.push_back({"admission.location", expr, ""});
    } else {
      a.clear_location();
    }
    if (Attending(sc, a.mutable_attending(), &expr)) {
      origins.push_back({"admission.attending", expr, ""});
    } else {
      a.clear_attending();
    }
    a.set_admission_method(AdmissionMethod(sc, &expr));
    if (sc.sink.size() != before || !nhs || !encounter_id) return;
    a.set_encounter_id(*encounter_id);
    std::string occurred_expr;
    auto occurred = OccurredAt(sc, {"period.start", "meta.lastUpdated"}, &occurred_expr);
    MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, icr::v1::ROUTINE,
                              EventSuffix(icr::v1::ADMISSION));
    *m->event.mutable_admission() = std::move(a);
    AddOrigin(m, "admission.encounter_id", id_expr);
    for (auto& o : origins) m->origins.push_back(std::move(o));
    AddOrigin(m, "admission", sc.expr);
    return;
  }

  if (*status == "finished") {
    icr::v1::Discharge d;
    std::vector<FieldOrigin> origins;
    const std::string hpath = sc.expr + ".hospitalization";
    const std::string disp_path = hpath + ".dischargeDisposition";
    const json* hosp = ObjectMember(sc.resource, "hospitalization", sc.expr, sc.sink);
    const json* disp =
        hosp != nullptr ? ObjectMember(*hosp, "dischargeDisposition", hpath, sc.sink) : nullptr;
    if (disp == nullptr) {
      sc.sink.Required(disp_path, "a finished encounter is a discharge and needs its destination");
    } else {
      std::string where;
      std::optional<icr::v1::DischargeDestination> dest;
      const size_t n = sc.sink.size();
      dest = CodedValue(*disp, disp_path, kDischargeDestinationSystem, kIcrDestinations, sc.sink,
                        &where);
      if (!dest && sc.sink.size() == n) {
        std::string cpath;
        auto code = CodeIn(*disp, disp_path, kUkCoreDischargeDestinationSystem, sc.sink, &cpath);
        if (code) {
          dest = Lookup(kUkCoreDestinations, *code);
          if (dest) {
            where = cpath;
          } else {
            sc.sink.Value(
                cpath, Quote(*code) + (*code == "98"
                                           ? " (not discharged) cannot describe a "
                                             "finished encounter"
                                           : " is not a code of " +
                                                 std::string(kUkCoreDischargeDestinationSystem)));
          }
        }
      }
      if (!dest && sc.sink.size() == n) {
        dest = CodedValue(*disp, disp_path, kHl7DischargeDispositionSystem, kHl7Destinations,
                          sc.sink, &where);
      }
      if (dest) {
        d.set_destination(*dest);
        origins.push_back({"discharge.destination", where, ""});
      } else if (sc.sink.size() == n) {
        sc.sink.Required(disp_path + ".coding", std::string("a coding from ") +
                                                    kDischargeDestinationSystem + ", " +
                                                    kUkCoreDischargeDestinationSystem + " or " +
                                                    kHl7DischargeDispositionSystem);
      }
      if (const json* dest_ref = ObjectMember(*hosp, "destination", hpath, sc.sink)) {
        if (const json* ident =
                ObjectMember(*dest_ref, "identifier", hpath + ".destination", sc.sink)) {
          const std::string ipath = hpath + ".destination.identifier";
          auto sys = StringMember(*ident, "system", ipath, sc.sink);
          auto value = StringMember(*ident, "value", ipath, sc.sink);
          if (sys && *sys == kOdsOrganisationSystem && value) {
            d.set_destination_organisation(*value);
            origins.push_back({"discharge.destination_organisation", ipath + ".value", ""});
          }
        }
      }
    }
    std::string expr;
    if (auto pathway = PathwayExtension(sc, &expr)) {
      d.set_pathway(*pathway);
      origins.push_back({"discharge.pathway", expr, ""});
    }
    if (sc.sink.size() != before || !nhs || !encounter_id) return;
    d.set_encounter_id(*encounter_id);
    std::string occurred_expr;
    auto occurred = OccurredAt(sc, {"period.end", "meta.lastUpdated"}, &occurred_expr);
    MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, icr::v1::ROUTINE,
                              EventSuffix(icr::v1::DISCHARGE));
    *m->event.mutable_discharge() = std::move(d);
    AddOrigin(m, "discharge.encounter_id", id_expr);
    for (auto& o : origins) m->origins.push_back(std::move(o));
    AddOrigin(m, "discharge", sc.expr);
    return;
  }

  if (*status == "entered-in-error") {
    if (sc.sink.size() != before || !nhs || !encounter_id) return;
    std::string occurred_expr;
    auto occurred = OccurredAt(sc, {"meta.lastUpdated"}, &occurred_expr);
    MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, icr::v1::ROUTINE,
                              EventSuffix(icr::v1::ENCOUNTER_CANCELLATION));
    auto* c = m->event.mutable_encounter_cancellation();
    c->set_encounter_id(*encounter_id);
    c->set_cancelled_event_type(icr::v1::ADMISSION);
    c->set_reason("Encounter entered in error");
    AddOrigin(m, "encounter_cancellation.encounter_id", id_expr);
    AddOrigin(m, "encounter_cancellation", sc.expr + ".status");
    return;
  }

  sc.sink.Add(IssueType::kNotSupported, sc.expr + ".status",
              sc.expr + ".status: " + Quote(*status) +
                  " is not mapped to a care event (accepted: planned -> PreAdmission, "
                  "in-progress -> Admission, finished -> Discharge, entered-in-error -> "
                  "EncounterCancellation)");
}

// ---------------------------------------------------------------------------
// Shared by ServiceRequest and Task
// ---------------------------------------------------------------------------

// The business id of the resource a Reference (obj[name], or `ref`) points
// at: its logical identifier value; else the Bundle/contained target's first
// identifier value or id; else the id of a "Type/id" reference.
std::optional<std::string> LogicalId(Scope& sc, const json& ref, const std::string& path,
                                     const char* type, std::string* expr) {
  if (const json* ident = ObjectMember(ref, "identifier", path, sc.sink)) {
    if (auto v = StringMember(*ident, "value", path + ".identifier", sc.sink)) {
      *expr = path + ".identifier.value";
      return v;
    }
  }
  auto reference = StringMember(ref, "reference", path, sc.sink);
  if (!reference) return std::nullopt;
  Target contained;
  if (const Target* t = sc.resolver.Find(*reference, sc.resource, sc.expr, &contained)) {
    for (const auto& [ident, ipath] :
         ObjectItems(*t->resource, "identifier", t->expression, sc.sink)) {
      if (auto v = StringMember(*ident, "value", ipath, sc.sink)) {
        *expr = ipath + ".value";
        return v;
      }
    }
    if (!t->id.empty()) {
      *expr = t->expression + ".id";
      return t->id;
    }
  }
  const std::string prefix = std::string(type) + "/";
  if (reference->rfind(prefix, 0) == 0 && reference->size() > prefix.size() &&
      reference->find('/', prefix.size()) == std::string::npos) {
    *expr = path + ".reference";
    return reference->substr(prefix.size());
  }
  return std::nullopt;
}

// addressee from a team reference (ServiceRequest.performer[0], Task.owner).
void SetAddressee(MappedEvent* m, const json* ref, const std::string& path, Sink& s) {
  if (ref == nullptr) return;
  icr::v1::TeamRef team;
  std::string expr;
  if (TeamFromReference(*ref, path, s, &team, &expr)) {
    *m->event.mutable_addressee() = std::move(team);
    AddOrigin(m, "addressee", expr);
  }
}

std::string NoteText(Scope& sc) {
  std::string out;
  for (const auto& [note, npath] : ObjectItems(sc.resource, "note", sc.expr, sc.sink)) {
    if (auto text = StringMember(*note, "text", npath, sc.sink)) {
      if (!out.empty()) out += "\n";
      out += *text;
    }
  }
  return out;
}

// Place from the place extension (valueCoding in the place system).
std::optional<icr::v1::Place> PlaceExtension(Scope& sc, std::string* expr) {
  std::string epath;
  *expr = ExtensionPath(sc.expr, kPlaceExtension);
  const json* ext = Extension(sc.resource, sc.expr, kPlaceExtension, sc.sink, &epath);
  if (ext == nullptr) return std::nullopt;
  const json* coding = ObjectMember(*ext, "valueCoding", epath, sc.sink);
  if (coding == nullptr) {
    sc.sink.Required(epath + ".valueCoding", std::string("a Coding from ") + kPlaceSystem);
    return std::nullopt;
  }
  auto code = StringMember(*coding, "code", epath + ".valueCoding", sc.sink);
  auto v = code ? Lookup(kPlaces, *code) : std::nullopt;
  if (!v) {
    sc.sink.Value(epath + ".valueCoding.code", (code ? Quote(*code) : std::string("no code")) +
                                                   " is not a Place (one of " + Codes(kPlaces) +
                                                   ")");
    return std::nullopt;
  }
  *expr = epath + ".valueCoding.code";
  return v;
}

// CareNeeds from the care-needs extension (a complex extension whose
// sub-extensions are named below); the summary defaults to the notes' text.
// An unknown sub-extension is an error: a misspelt need must not vanish.
bool CareNeedsFrom(Scope& sc, icr::v1::CareNeeds* out, std::string* expr) {
  using icr::v1::CareNeeds;
  struct Flag {
    const char* url;
    void (CareNeeds::*set)(bool);
  };
  static const Flag kFlags[] = {
      {"dementia", &CareNeeds::set_dementia},
      {"end-of-life", &CareNeeds::set_end_of_life},
      {"non-weight-bearing", &CareNeeds::set_non_weight_bearing},
      {"safety-between-calls", &CareNeeds::set_safety_between_calls},
      {"section-117", &CareNeeds::set_section_117},
      {"chc-eligible", &CareNeeds::set_chc_eligible},
      {"equipment-needed", &CareNeeds::set_equipment_needed},
      {"telecare", &CareNeeds::set_telecare},
      {"housing-need", &CareNeeds::set_housing_need},
      {"advocacy-needed", &CareNeeds::set_advocacy_needed},
  };
  bool any = false;
  std::string epath;
  if (const json* ext = Extension(sc.resource, sc.expr, kCareNeedsExtension, sc.sink, &epath)) {
    *expr = epath;
    for (const auto& [sub, spath] : ObjectItems(*ext, "extension", epath, sc.sink)) {
      auto url = StringMember(*sub, "url", spath, sc.sink);
      if (!url) {
        sc.sink.Required(spath + ".url", "");
        continue;
      }
      const std::string upath = epath + ".extension('" + *url + "')";
      bool known = false;
      for (const auto& f : kFlags) {
        if (*url != f.url) continue;
        known = true;
        auto v = BoolMember(*sub, "valueBoolean", upath, sc.sink);
        if (!v) {
          if (!sub->contains("valueBoolean")) sc.sink.Required(upath + ".valueBoolean", "");
        } else {
          (out->*f.set)(*v);
          any = true;
        }
      }
      if (*url == "carers-per-call") {
        known = true;
        auto v = IntegerMember(*sub, "valueInteger", upath, sc.sink);
        if (v) {
          out->set_carers_per_call(static_cast<int32_t>(*v));
          any = true;
        } else if (!sub->contains("valueInteger")) {
          sc.sink.Required(upath + ".valueInteger", "");
        }
      } else if (*url == "summary") {
        known = true;
        if (auto v = StringMember(*sub, "valueString", upath, sc.sink)) {
          out->set_summary(*v);
          any = true;
        }
      }
      if (!known) {
        std::string names;
        for (const auto& f : kFlags) names += std::string(f.url) + ", ";
        sc.sink.Value(spath + ".url", Quote(*url) + " is not a care need (one of " + names +
                                          "carers-per-call, summary)");
      }
    }
  }
  if (out->summary().empty()) {
    std::string notes = NoteText(sc);
    if (!notes.empty()) {
      out->set_summary(notes);
      if (!any) *expr = sc.expr + ".note";
      any = true;
    }
  }
  return any;
}

// A date from occurrenceDateTime or occurrencePeriod.start.
bool OccurrenceDate(Scope& sc, icr::v1::Date* out, std::string* expr) {
  *expr = sc.expr + ".occurrence";
  if (sc.resource.contains("occurrenceDateTime")) {
    *expr = sc.expr + ".occurrenceDateTime";
    return DateMember(sc.resource, "occurrenceDateTime", sc.expr, sc.sink, out);
  }
  if (const json* period = ObjectMember(sc.resource, "occurrencePeriod", sc.expr, sc.sink)) {
    *expr = sc.expr + ".occurrencePeriod.start";
    return DateMember(*period, "start", sc.expr + ".occurrencePeriod", sc.sink, out);
  }
  return false;
}

// ---------------------------------------------------------------------------
// ServiceRequest
// ---------------------------------------------------------------------------

void MapServiceRequest(Scope& sc) {
  const size_t before = sc.sink.size();
  auto status = StringMember(sc.resource, "status", sc.expr, sc.sink);
  if (!status) sc.sink.Required(sc.expr + ".status", "active, revoked or entered-in-error");
  FieldOrigin nhs_origin;
  auto nhs = NhsFromReference(sc, "subject", &nhs_origin);
  std::string id_expr;
  auto business_id = BusinessId(sc, &id_expr);
  if (!business_id) {
    sc.sink.Required(sc.expr + ".identifier",
                     "the referral or request id, as identifier[0].value or id");
  }
  const std::string code_path = sc.expr + ".code";
  const std::string kind_expr = WhereSystem(code_path + ".coding", kRequestTypeSystem);
  std::optional<std::string> kind;
  if (const json* code = ObjectMember(sc.resource, "code", sc.expr, sc.sink)) {
    kind = CodeIn(*code, code_path, kRequestTypeSystem, sc.sink);
  }
  if (!kind) {
    sc.sink.Required(kind_expr,
                     "discharge-referral or placement-request, saying what is requested");
    return;
  }
  const bool referral = *kind == "discharge-referral";
  if (!referral && *kind != "placement-request") {
    sc.sink.Add(IssueType::kNotSupported, kind_expr + ".code",
                kind_expr + ".code: " + Quote(*kind) +
                    " is not supported (discharge-referral or placement-request)");
    return;
  }
  if (!status) return;
  const bool active = *status == "active";
  const bool withdrawn = *status == "revoked" || *status == "entered-in-error";
  if (!active && !withdrawn) {
    sc.sink.Add(IssueType::kNotSupported, sc.expr + ".status",
                sc.expr + ".status: " + Quote(*status) + " is not mapped (active: a new " + *kind +
                    "; revoked or entered-in-error: its withdrawal)");
    return;
  }
  const icr::v1::Priority priority = PriorityOf(sc, icr::v1::URGENT);
  std::string occurred_expr;
  auto occurred = OccurredAt(sc, {"authoredOn", "meta.lastUpdated"}, &occurred_expr);
  const json* performer = nullptr;
  std::string performer_path;
  auto performers = ObjectItems(sc.resource, "performer", sc.expr, sc.sink);
  if (!performers.empty()) std::tie(performer, performer_path) = performers.front();

  if (withdrawn) {
    std::string reason = NoteText(sc);
    if (reason.empty()) reason = "ServiceRequest " + *status;
    if (sc.sink.size() != before || !nhs || !business_id) return;
    if (referral) {
      MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, priority,
                                EventSuffix(icr::v1::REFERRAL_STATUS_CHANGE) + "-withdrawn");
      auto* c = m->event.mutable_referral_status_change();
      c->set_referral_id(*business_id);
      c->set_status(icr::v1::WITHDRAWN);
      c->set_reason(reason);
      AddOrigin(m, "referral_status_change.referral_id", id_expr);
      AddOrigin(m, "referral_status_change.reason", sc.expr + ".note");
      AddOrigin(m, "referral_status_change", sc.expr + ".status");
      SetAddressee(m, performer, performer_path, sc.sink);
    } else {
      MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, priority,
                                EventSuffix(icr::v1::PLACEMENT_CANCELLATION));
      auto* c = m->event.mutable_placement_cancellation();
      c->set_request_id(*business_id);
      c->set_reason(reason);
      AddOrigin(m, "placement_cancellation.request_id", id_expr);
      AddOrigin(m, "placement_cancellation.reason", sc.expr + ".note");
      AddOrigin(m, "placement_cancellation", sc.expr + ".status");
      SetAddressee(m, performer, performer_path, sc.sink);
    }
    return;
  }

  std::string needs_expr, place_expr, date_expr;
  icr::v1::CareNeeds needs;
  const bool has_needs = CareNeedsFrom(sc, &needs, &needs_expr);
  auto place = PlaceExtension(sc, &place_expr);

  if (referral) {
    icr::v1::DischargeReferral r;
    std::vector<FieldOrigin> origins;
    // Pathway: a category coding in the discharge-pathway system.
    const std::string pathway_expr =
        WhereSystem(sc.expr + ".category.coding", kDischargePathwaySystem);
    for (const auto& [cat, cpath] : ObjectItems(sc.resource, "category", sc.expr, sc.sink)) {
      std::string where;
      if (auto p = CodedValue(*cat, cpath, kDischargePathwaySystem, kPathways, sc.sink, &where)) {
        r.set_pathway(*p);
        break;
      }
    }
    origins.push_back({"discharge_referral.pathway", pathway_expr, ""});
    // Referrer: the requesting team; its organisation defaults to the sender.
    const std::string team_expr = WhereSystem(sc.expr + ".requester.identifier", kTeamCodeSystem);
    icr::v1::TeamRef referrer;
    std::string referrer_expr;
    if (const json* requester = ObjectMember(sc.resource, "requester", sc.expr, sc.sink)) {
      TeamFromReference(*requester, sc.expr + ".requester", sc.sink, &referrer, &referrer_expr);
    }
    if (referrer.team_code().empty()) {
      sc.sink.Required(team_expr, "the referring ward or team (identifier system " +
                                      std::string(kTeamCodeSystem) + ")");
    }
    if (referrer.organisation().empty()) {
      referrer.set_organisation(sc.identity.source_organisation);
      FieldOrigin o = sc.identity.source_organisation_origin;
      o.field = "discharge_referral.referrer.organisation";
      origins.push_back(std::move(o));
    } else {
      origins.push_back({"discharge_referral.referrer.organisation",
                         sc.expr + ".requester.identifier.assigner.identifier.value", ""});
    }
    origins.push_back({"discharge_referral.referrer", team_expr, ""});
    *r.mutable_referrer() = std::move(referrer);
    if (has_needs) {
      *r.mutable_needs() = std::move(needs);
      origins.push_back({"discharge_referral.needs", needs_expr, ""});
    }
    std::string edd_path;
    if (const json* edd =
            Extension(sc.resource, sc.expr, kExpectedDischargeDateExtension, sc.sink, &edd_path)) {
      if (DateMember(*edd, "valueDate", edd_path, sc.sink, r.mutable_expected_discharge_date())) {
        origins.push_back(
            {"discharge_referral.expected_discharge_date", edd_path + ".valueDate", ""});
      } else {
        r.clear_expected_discharge_date();
        if (!edd->contains("valueDate")) sc.sink.Required(edd_path + ".valueDate", "");
      }
    }
    if (OccurrenceDate(sc, r.mutable_discharge_ready_date(), &date_expr)) {
      origins.push_back({"discharge_referral.discharge_ready_date", date_expr, ""});
    } else {
      r.clear_discharge_ready_date();
    }
    if (const json* enc = ObjectMember(sc.resource, "encounter", sc.expr, sc.sink)) {
      std::string enc_expr;
      if (auto id = LogicalId(sc, *enc, sc.expr + ".encounter", "Encounter", &enc_expr)) {
        r.set_encounter_id(*id);
        origins.push_back({"discharge_referral.encounter_id", enc_expr, ""});
      }
    }
    if (place) r.set_place(*place);
    origins.push_back({"discharge_referral.place", place_expr, ""});
    if (sc.sink.size() != before || !nhs || !business_id) return;
    r.set_referral_id(*business_id);
    MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, priority,
                              EventSuffix(icr::v1::DISCHARGE_REFERRAL));
    *m->event.mutable_discharge_referral() = std::move(r);
    AddOrigin(m, "discharge_referral.referral_id", id_expr);
    for (auto& o : origins) m->origins.push_back(std::move(o));
    AddOrigin(m, "discharge_referral", sc.expr);
    SetAddressee(m, performer, performer_path, sc.sink);
    return;
  }

  icr::v1::PlacementRequest p;
  std::vector<FieldOrigin> origins;
  const std::string detail_expr = WhereSystem(sc.expr + ".orderDetail.coding", kServiceTypeSystem);
  for (const auto& [detail, dpath] : ObjectItems(sc.resource, "orderDetail", sc.expr, sc.sink)) {
    std::string where;
    if (auto t = CodedValue(*detail, dpath, kServiceTypeSystem, kServiceTypes, sc.sink, &where)) {
      p.set_service_type(*t);
      break;
    }
  }
  origins.push_back({"placement_request.service_type", detail_expr, ""});
  if (place) p.set_place(*place);
  origins.push_back({"placement_request.place", place_expr, ""});
  if (!OccurrenceDate(sc, p.mutable_start_date(), &date_expr)) p.clear_start_date();
  origins.push_back({"placement_request.start_date", date_expr, ""});
  const std::string qpath = sc.expr + ".quantityQuantity";
  if (const json* q = ObjectMember(sc.resource, "quantityQuantity", sc.expr, sc.sink)) {
    auto code = StringMember(*q, "code", qpath, sc.sink);
    if (code && *code != "h/wk") {
      sc.sink.Value(qpath + ".code", Quote(*code) + " is not hours per week (UCUM h/wk)");
    }
    if (auto v = NumberMember(*q, "value", qpath, sc.sink)) {
      p.set_hours_per_week(*v);
    } else if (!q->contains("value")) {
      sc.sink.Required(qpath + ".value", "hours per week");
    }
  }
  origins.push_back({"placement_request.hours_per_week", qpath + ".value", ""});
  std::string calls_path = ExtensionPath(sc.expr, kCallsPerDayExtension);
  if (const json* calls =
          Extension(sc.resource, sc.expr, kCallsPerDayExtension, sc.sink, &calls_path)) {
    if (auto v = IntegerMember(*calls, "valueInteger", calls_path, sc.sink)) {
      p.set_calls_per_day(static_cast<int32_t>(*v));
    } else if (!calls->contains("valueInteger")) {
      sc.sink.Required(calls_path + ".valueInteger", "calls per day");
    }
  }
  origins.push_back({"placement_request.calls_per_day", calls_path + ".valueInteger", ""});
  if (has_needs) {
    *p.mutable_needs() = std::move(needs);
    origins.push_back({"placement_request.needs", needs_expr, ""});
  }
  std::string contact_path;
  if (const json* contact =
          Extension(sc.resource, sc.expr, kWardContactExtension, sc.sink, &contact_path)) {
    if (auto v = StringMember(*contact, "valueString", contact_path, sc.sink)) {
      p.set_contact(*v);
      origins.push_back({"placement_request.contact", contact_path + ".valueString", ""});
    }
  }
  const json* based_on = nullptr;
  std::string based_on_path;
  auto based = ObjectItems(sc.resource, "basedOn", sc.expr, sc.sink);
  if (!based.empty()) std::tie(based_on, based_on_path) = based.front();
  if (based_on != nullptr) {
    std::string ref_expr;
    if (auto id = LogicalId(sc, *based_on, based_on_path, "ServiceRequest", &ref_expr)) {
      p.set_referral_id(*id);
      origins.push_back({"placement_request.referral_id", ref_expr, ""});
    }
  }
  if (sc.sink.size() != before || !nhs || !business_id) return;
  p.set_request_id(*business_id);
  MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, priority,
                            EventSuffix(icr::v1::PLACEMENT_REQUEST));
  *m->event.mutable_placement_request() = std::move(p);
  AddOrigin(m, "placement_request.request_id", id_expr);
  for (auto& o : origins) m->origins.push_back(std::move(o));
  AddOrigin(m, "placement_request", sc.expr);
  SetAddressee(m, performer, performer_path, sc.sink);
}

// ---------------------------------------------------------------------------
// Task
// ---------------------------------------------------------------------------

void MapTask(Scope& sc) {
  const size_t before = sc.sink.size();
  auto status = StringMember(sc.resource, "status", sc.expr, sc.sink);
  if (!status) sc.sink.Required(sc.expr + ".status", "");
  FieldOrigin nhs_origin;
  auto nhs = NhsFromReference(sc, "for", &nhs_origin);
  std::string referral_expr;
  std::optional<std::string> referral_id;
  const json* focus = ObjectMember(sc.resource, "focus", sc.expr, sc.sink);
  if (focus != nullptr) {
    referral_id = LogicalId(sc, *focus, sc.expr + ".focus", "ServiceRequest", &referral_expr);
  }
  if (!referral_id) {
    sc.sink.Required(sc.expr + ".focus",
                     "the discharge referral (ServiceRequest) whose status "
                     "changed, as focus.identifier.value or a reference");
  }
  // Status: businessStatus in the referral-status system, else Task.status.
  std::optional<icr::v1::ReferralStatus> referral_status;
  std::string status_expr;
  const size_t n = sc.sink.size();
  if (const json* business = ObjectMember(sc.resource, "businessStatus", sc.expr, sc.sink)) {
    referral_status = CodedValue(*business, sc.expr + ".businessStatus", kReferralStatusSystem,
                                 kReferralStatuses, sc.sink, &status_expr);
  }
  if (!referral_status && sc.sink.size() == n && status) {
    referral_status = Lookup(kTaskStatuses, *status);
    status_expr = sc.expr + ".status";
    if (!referral_status) {
      sc.sink.Add(IssueType::kNotSupported, sc.expr + ".status",
                  sc.expr + ".status: " + Quote(*status) +
                      " has no referral status (mapped: " + Codes(kTaskStatuses) +
                      "); send Task.businessStatus with a code from " + kReferralStatusSystem);
    }
  }
  std::string pathway_expr;
  auto pathway = PathwayExtension(sc, &pathway_expr);
  std::string reason;
  if (const json* sr = ObjectMember(sc.resource, "statusReason", sc.expr, sc.sink)) {
    if (auto text = StringMember(*sr, "text", sc.expr + ".statusReason", sc.sink)) {
      reason = *text;
    } else {
      for (const auto& [coding, cpath] :
           ObjectItems(*sr, "coding", sc.expr + ".statusReason", sc.sink)) {
        if (auto d = StringMember(*coding, "display", cpath, sc.sink)) {
          reason = *d;
          break;
        }
      }
    }
  }
  const icr::v1::Priority priority = PriorityOf(sc, icr::v1::URGENT);
  std::string occurred_expr;
  auto occurred =
      OccurredAt(sc, {"lastModified", "authoredOn", "meta.lastUpdated"}, &occurred_expr);
  if (sc.sink.size() != before || !nhs || !referral_id || !referral_status) return;
  MappedEvent* m = NewEvent(sc, *nhs, nhs_origin, occurred, occurred_expr, priority,
                            EventSuffix(icr::v1::REFERRAL_STATUS_CHANGE) + "-" +
                                Slug(icr::v1::ReferralStatus_Name(*referral_status)));
  auto* c = m->event.mutable_referral_status_change();
  c->set_referral_id(*referral_id);
  c->set_status(*referral_status);
  if (pathway) c->set_pathway(*pathway);
  c->set_reason(reason);
  AddOrigin(m, "referral_status_change.referral_id", referral_expr);
  AddOrigin(m, "referral_status_change.status", status_expr);
  AddOrigin(m, "referral_status_change.pathway", pathway_expr);
  AddOrigin(m, "referral_status_change.reason", sc.expr + ".statusReason");
  AddOrigin(m, "referral_status_change", sc.expr);
  SetAddressee(m, ObjectMember(sc.resource, "owner", sc.expr, sc.sink), sc.expr + ".owner",
               sc.sink);
}

// ---------------------------------------------------------------------------
// The request: one resource, or a Bundle
// ---------------------------------------------------------------------------

void MapResource(const json& resource, const std::string& type, const std::string& expr,
                 const Identity& identity, const std::string& message_id,
                 const std::string& message_id_expr, const Resolver& resolver,
                 const RequestContext& context, MappedEntry* entry) {
  Sink sink(&entry->issues);
  Scope sc{resource,        type,     expr,    identity, message_id,
           message_id_expr, resolver, context, sink,     entry};
  if (type == "Patient") {
    MapPatient(sc);
  } else if (type == "Encounter") {
    MapEncounter(sc);
  } else if (type == "ServiceRequest") {
    MapServiceRequest(sc);
  } else if (type == "Task") {
    MapTask(sc);
  }
  if (!entry->issues.empty()) entry->events.clear();
}

// Identity from the headers (single resources, transactions, batches).
Identity HeaderIdentity(const RequestContext& context, Sink& s) {
  Identity id;
  id.care_setting = context.care_setting;
  id.source_system = context.source_system;
  id.source_system_origin = {"source_system_id", "", "X-ICR-Source-System"};
  id.source_organisation = context.source_organisation;
  id.source_organisation_origin = {"source_organisation", "", "X-ICR-Source-Organisation"};
  if (id.source_system.empty()) {
    s.Add(IssueType::kRequired, "",
          "X-ICR-Source-System header: is required (the sending system's id, 1..64 characters of "
          "A-Z a-z 0-9 . _ : -, e.g. uhcw-epr)");
  }
  if (id.source_organisation.empty()) {
    s.Add(IssueType::kRequired, "",
          "X-ICR-Source-Organisation header: is required (the sending organisation's ODS code, "
          "e.g. RKB)");
  }
  return id;
}

// "<id>[/<meta.versionId or meta.lastUpdated>]" of a single resource.
std::optional<std::string> ResourceMessageId(const json& resource, const std::string& type,
                                             Sink& s) {
  auto id = StringMember(resource, "id", type, s);
  if (!id) {
    s.Required(type + ".id",
               "the broker uses id (with meta.versionId) as the idempotency key of the message, "
               "so that a resend stores nothing new");
    return std::nullopt;
  }
  std::string key = *id;
  if (const json* meta = ObjectMember(resource, "meta", type, s)) {
    auto version = StringMember(*meta, "versionId", type + ".meta", s);
    if (!version) version = StringMember(*meta, "lastUpdated", type + ".meta", s);
    if (version) key += "/" + *version;
  }
  return key;
}

void MapBundle(const json& bundle, const RequestContext& context, MappedRequest* out) {
  Sink s(&out->issues);
  auto type = StringMember(bundle, "type", "Bundle", s);
  if (!type) {
    s.Required("Bundle.type", "message, transaction or batch");
    return;
  }
  if (*type == "message") {
    out->kind = RequestKind::kMessage;
  } else if (*type == "transaction") {
    out->kind = RequestKind::kTransaction;
  } else if (*type == "batch") {
    out->kind = RequestKind::kBatch;
  } else {
    s.Add(IssueType::kNotSupported, "Bundle.type",
          "Bundle.type: " + Quote(*type) + " is not accepted (message, transaction or batch)");
    return;
  }
  const json* entries = ArrayMember(bundle, "entry", "Bundle", s);
  if (entries == nullptr || entries->empty()) {
    if (!bundle.contains("entry") || (entries != nullptr && entries->empty())) {
      s.Required("Bundle.entry", "at least one entry");
    }
    return;
  }

  // Every entry's resource, for references (entries are checked below).
  Resolver resolver;
  std::vector<const json*> resources(entries->size(), nullptr);
  for (size_t i = 0; i < entries->size(); ++i) {
    const json& e = (*entries)[i];
    if (!e.is_object()) continue;
    auto r = e.find("resource");
    if (r == e.end() || !r->is_object()) continue;
    auto rt = r->find("resourceType");
    if (rt == r->end() || !rt->is_string()) continue;
    resources[i] = &*r;
    Target t;
    t.index = static_cast<int>(i);
    t.resource = &*r;
    t.type = rt->get<std::string>();
    if (auto id = r->find("id"); id != r->end() && id->is_string()) t.id = id->get<std::string>();
    if (auto fu = e.find("fullUrl"); fu != e.end() && fu->is_string()) {
      t.full_url = fu->get<std::string>();
    }
    t.expression = "Bundle.entry[" + std::to_string(i) + "].resource";
    resolver.Add(std::move(t));
  }

  // Identity and the message id base.
  Identity identity;
  std::vector<bool> focus(entries->size(), false);
  bool has_focus = false;
  std::string key, key_expr;
  if (auto ident = ObjectMember(bundle, "identifier", "Bundle", s)) {
    if (auto v = StringMember(*ident, "value", "Bundle.identifier", s)) {
      key = *v;
      key_expr = "Bundle.identifier.value";
    }
  }
  if (out->kind == RequestKind::kMessage) {
    const std::string hexpr = "Bundle.entry[0].resource";
    const json* header = resources[0];
    if (header == nullptr ||
        header->find("resourceType")->get_ref<const std::string&>() != "MessageHeader") {
      s.Add(IssueType::kStructure, hexpr,
            hexpr + ": the first entry of a message Bundle must be its MessageHeader");
      return;
    }
    identity.care_setting = context.care_setting;
    if (!context.source_system.empty()) {
      identity.source_system = context.source_system;
      identity.source_system_origin = {"source_system_id", "", "X-ICR-Source-System"};
    } else if (const json* source = ObjectMember(*header, "source", hexpr, s)) {
      if (auto endpoint = StringMember(*source, "endpoint", hexpr + ".source", s)) {
        identity.source_system = *endpoint;
        identity.source_system_origin = {"source_system_id", hexpr + ".source.endpoint", ""};
      }
    }
    if (identity.source_system.empty()) {
      s.Required(hexpr + ".source.endpoint",
                 "the sending system's id (1..64 characters of A-Z a-z 0-9 . _ : -, e.g. "
                 "urn:icr:uhcw-epr), or send the X-ICR-Source-System header");
    }
    if (!context.source_organisation.empty()) {
      identity.source_organisation = context.source_organisation;
      identity.source_organisation_origin = {"source_organisation", "",
                                             "X-ICR-Source-Organisation"};
    } else if (const json* sender = ObjectMember(*header, "sender", hexpr, s)) {
      if (const json* sid = ObjectMember(*sender, "identifier", hexpr + ".sender", s)) {
        auto sys = StringMember(*sid, "system", hexpr + ".sender.identifier", s);
        auto value = StringMember(*sid, "value", hexpr + ".sender.identifier", s);
        if (sys && *sys == kOdsOrganisationSystem && value) {
          identity.source_organisation = *value;
          identity.source_organisation_origin = {"source_organisation",
                                                 hexpr + ".sender.identifier.value", ""};
        }
      }
    }
    if (identity.source_organisation.empty()) {
      s.Required(WhereSystem(hexpr + ".sender.identifier", kOdsOrganisationSystem),
                 "the sending organisation's ODS code, or send the X-ICR-Source-Organisation "
                 "header");
    }
    if (key.empty()) {
      if (auto id = StringMember(*header, "id", hexpr, s)) {
        key = *id;
        key_expr = hexpr + ".id";
      }
    }
    // The focus resources are the message's content; without focus, every
    // supported resource after the header is.
    for (const auto& [ref, rpath] : ObjectItems(*header, "focus", hexpr, s)) {
      auto reference = StringMember(*ref, "reference", rpath, s);
      Target unused;
      const Target* t = reference ? resolver.Find(*reference, *header, hexpr, &unused) : nullptr;
      if (t == nullptr || t->index < 0) {
        s.Add(IssueType::kInvalid, rpath,
              rpath + ": " + (reference ? Quote(*reference) : std::string("a focus")) +
                  " does not reference an entry of this Bundle (by fullUrl or Type/id)");
        continue;
      }
      focus[t->index] = true;
      has_focus = true;
    }
  } else {
    identity = HeaderIdentity(context, s);
  }
  if (key.empty()) {
    if (auto id = StringMember(bundle, "id", "Bundle", s)) {
      key = *id;
      key_expr = "Bundle.id";
    }
  }
  if (key.empty()) {
    s.Required("Bundle.identifier",
               "Bundle.identifier.value (or MessageHeader.id / Bundle.id) is the idempotency key "
               "of the message, so that a resend stores nothing new");
  }
  if (!out->issues.empty()) return;

  for (size_t i = 0; i < entries->size(); ++i) {
    MappedEntry& me = out->entries.emplace_back();
    me.index = static_cast<int>(i);
    Sink es(&me.issues);
    const std::string epath = "Bundle.entry[" + std::to_string(i) + "]";
    const json& e = (*entries)[i];
    if (!e.is_object()) {
      WrongType(es, epath, "an object", e);
      continue;
    }
    if (auto fu = StringMember(e, "fullUrl", epath, es)) me.full_url = *fu;
    const json* resource = ObjectMember(e, "resource", epath, es);
    if (resource == nullptr) {
      if (!e.contains("resource")) es.Required(epath + ".resource", "");
      continue;
    }
    const std::string rpath = epath + ".resource";
    auto rtype = StringMember(*resource, "resourceType", rpath, es);
    if (!rtype) {
      es.Required(rpath + ".resourceType", "");
      continue;
    }
    me.resource_type = *rtype;
    if (out->kind == RequestKind::kMessage) {
      if (i == 0) continue;                                            // the MessageHeader
      if (has_focus ? !focus[i] : !IsSupportedType(*rtype)) continue;  // supporting resource
    } else if (const json* request = ObjectMember(e, "request", epath, es)) {
      auto method = StringMember(*request, "method", epath + ".request", es);
      if (method && *method != "POST" && *method != "PUT") {
        es.Add(IssueType::kNotSupported, epath + ".request.method",
               epath + ".request.method: " + Quote(*method) +
                   " is not supported (POST or PUT: the broker only records)");
        continue;
      }
    }
    if (!IsSupportedType(*rtype)) {
      es.Add(IssueType::kNotSupported, rpath + ".resourceType",
             rpath + ".resourceType: " + Quote(*rtype) +
                 " is not supported (Patient, Encounter, ServiceRequest, Task)");
      continue;
    }
    MapResource(*resource, *rtype, rpath, identity, key + "#" + std::to_string(i), key_expr,
                resolver, context, &me);
  }
  if (out->kind != RequestKind::kBatch) {
    bool any_events = false, any_issues = false;
    for (const auto& me : out->entries) {
      any_events |= !me.events.empty();
      any_issues |= !me.issues.empty();
    }
    if (!any_events && !any_issues) {
      s.Add(IssueType::kProcessing, "Bundle.entry",
            "Bundle.entry: the Bundle has no Patient, Encounter, ServiceRequest or Task to "
            "record");
    }
  }
}

}  // namespace

std::vector<OutcomeIssue> MappedRequest::AllIssues() const {
  std::vector<OutcomeIssue> all = issues;
  for (const auto& e : entries) all.insert(all.end(), e.issues.begin(), e.issues.end());
  return all;
}

MappedRequest MapRequest(std::string_view body, std::string_view endpoint_type,
                         const RequestContext& context) {
  MappedRequest out;
  Sink s(&out.issues);
  json root;
  JsonProblem problem;
  if (!ParseStrictJson(body, std::max(1, context.max_json_depth), &root, &problem)) {
    s.Add(problem.code == "too-long" ? IssueType::kTooLong : IssueType::kStructure, "",
          problem.message);
    return out;
  }
  if (!root.is_object()) {
    s.Add(
        IssueType::kStructure, "",
        std::string("the body must be a JSON object (a FHIR resource), not ") + JsonTypeName(root));
    return out;
  }
  auto type = StringMember(root, "resourceType", "Resource", s);
  if (!type) {
    if (out.issues.empty())
      s.Required("Resource.resourceType", "every FHIR resource names its type");
    return out;
  }
  out.resource_type = *type;
  if (!endpoint_type.empty()) {
    if (*type != endpoint_type) {
      s.Add(IssueType::kInvalid, "Resource.resourceType",
            "Resource.resourceType: " + Quote(*type) + " cannot be posted to /fhir/r4/" +
                std::string(endpoint_type) + " (expected " + std::string(endpoint_type) + ")");
      return out;
    }
    Identity identity = HeaderIdentity(context, s);
    auto key = ResourceMessageId(root, *type, s);
    if (!out.issues.empty()) return out;
    MappedEntry& entry = out.entries.emplace_back();
    entry.resource_type = *type;
    Resolver no_bundle;
    MapResource(root, *type, *type, identity, *key, *type + ".id", no_bundle, context, &entry);
    return out;
  }
  if (*type != "Bundle") {
    const bool supported = IsSupportedType(*type);
    s.Add(
        supported ? IssueType::kInvalid : IssueType::kNotSupported, "Resource.resourceType",
        "Resource.resourceType: " + Quote(*type) +
            (supported ? " must be posted to /fhir/r4/" + *type + " (POST /fhir/r4 takes a Bundle)"
                       : " is not supported (Patient, Encounter, ServiceRequest, Task, or a "
                         "Bundle of them)"));
    return out;
  }
  MapBundle(root, context, &out);
  return out;
}

OutcomeIssue IssueFromBrokerError(const std::string& message,
                                  const std::vector<const MappedEvent*>& call_events) {
  OutcomeIssue issue;
  issue.severity = IssueSeverity::kError;
  issue.diagnostics = message;
  issue.code = IssueType::kValue;
  if (message.find(": is required") != std::string::npos) {
    issue.code = IssueType::kRequired;
  } else if (message.find("exceeds the limit") != std::string::npos) {
    issue.code = IssueType::kTooLong;
  }
  const std::string path = message.substr(0, message.find(": "));
  size_t index = 0;
  std::string field;
  if (path.rfind("events[", 0) == 0) {
    const size_t close = path.find(']');
    if (close == std::string::npos) return issue;
    const std::string digits = path.substr(7, close - 7);
    if (digits.empty() || digits.size() > 6 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return issue;
    }
    index = std::stoul(digits);
    field = path.substr(close + 1);
  } else if (path == "event" || path.rfind("event.", 0) == 0) {
    field = path.substr(5);
  } else {
    return issue;
  }
  if (!field.empty() && field[0] == '.') field.erase(0, 1);
  if (index >= call_events.size() || call_events[index] == nullptr) return issue;
  const MappedEvent& m = *call_events[index];
  issue.expression = m.resource_expression;
  const FieldOrigin* best = nullptr;
  for (const auto& o : m.origins) {
    const bool match =
        field == o.field ||
        (field.size() > o.field.size() && field.compare(0, o.field.size(), o.field) == 0 &&
         (field[o.field.size()] == '.' || field[o.field.size()] == '['));
    if (match && (best == nullptr || o.field.size() > best->field.size())) best = &o;
  }
  if (best != nullptr) {
    if (!best->header.empty()) {
      issue.expression.clear();
      issue.diagnostics = best->header + " header: " + message;
    } else if (!best->expression.empty()) {
      issue.expression = best->expression;
    }
  }
  return issue;
}

}  // namespace icr::adapters::fhir
