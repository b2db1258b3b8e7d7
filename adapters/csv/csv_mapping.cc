// Mapping files and row mapping. See csv_mapping.h for the contract and
// docs/adapters/csv.md for the file format.
//
// Loading resolves every field path to a chain of FieldDescriptors once;
// mapping a row copies a prototype event (constants already set) and sets
// each mapped field through protobuf reflection. nlohmann::json is used only
// while loading; its exceptions are caught here and turned into Status.
#include "adapters/csv/csv_mapping.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "adapters/csv/csv_formats.h"
#include "adapters/csv/sha256.h"
#include "icr/v1/options.pb.h"

namespace icr::adapters::csv {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using Json = nlohmann::json;

namespace {

enum class Kind {
  kString,
  kInt32,
  kInt64,
  kUint32,
  kUint64,
  kDouble,
  kFloat,
  kBool,
  kEnum,
  kDate,
  kTimestamp
};

constexpr size_t kMaxMappingBytes = size_t{1} << 20;
constexpr size_t kMaxShownCell = 60;  // cell text quoted in an error message

// The canonical forms of constants and "values" outputs (and of cells with
// no "format"): ISO 8601 / RFC 3339.
const std::vector<std::string> kCanonicalDateFormats = {"%Y-%m-%d"};
const std::vector<std::string> kCanonicalTimeFormats = {
    "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%dT%H:%M:%S",   "%Y-%m-%dT%H:%M:%S.%f",   "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S",   "%Y-%m-%d %H:%M",         "%Y-%m-%d"};

std::string_view Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// A cell as quoted in a message: 'text', shortened, control bytes as '?'.
std::string Shown(std::string_view cell) {
  std::string out = "'";
  size_t n = 0;
  for (char c : cell) {
    if (n++ == kMaxShownCell) {
      out += "...";
      break;
    }
    out.push_back(static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c);
  }
  return out + "'";
}

bool IsPrintableAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

}  // namespace

struct FieldRule {
  std::string path;  // "care_package_start.start_date"
  std::string key;   // "fields.care_package_start.start_date", for messages
  std::vector<const FieldDescriptor*> chain;
  Kind kind = Kind::kString;
  bool repeated = false;
  bool required = false;
  std::string column;                // as named in the mapping file
  std::vector<std::string> formats;  // dates and times; empty: canonical
  TimeZone zone = TimeZone::kEuropeLondon;
  bool has_values = false;
  std::unordered_map<std::string, std::string> values;  // lower-cased key -> canonical
  std::vector<std::string> value_keys;                  // as written, for messages
  bool has_default = false;
  std::string default_text;
  std::string separator;  // repeated fields: splits a cell
};

struct MappingData {
  icr::v1::EventType event_type = icr::v1::EVENT_TYPE_UNSPECIFIED;
  const FieldDescriptor* payload = nullptr;
  char delimiter = ',';
  TimeZone zone = TimeZone::kEuropeLondon;
  std::vector<FieldRule> rules;  // sorted by path
  icr::v1::CareEvent prototype;  // constants and priority set, payload present
  bool has_id_column = false;
  std::string id_column;
  std::string id_prefix;
};

namespace {

std::string TypeOf(const FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_ENUM:
      return f->enum_type()->name();
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return f->message_type()->name();
    default:
      return f->type_name();
  }
}

std::string EnumNames(const EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) {
    if (e->value(i)->number() != 0) names.push_back(e->value(i)->name());
  }
  return Join(names, ", ");
}

std::string FieldNames(const Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return Join(names, ", ");
}

std::string PayloadTypeName(const FieldDescriptor* payload) {
  const EnumValueDescriptor* v =
      icr::v1::EventType_descriptor()->FindValueByNumber(payload->number());
  return v ? v->name() : payload->name();
}

// Resolves `path` to a field chain. "" or the problem.
std::string ResolvePath(const std::string& path, const FieldDescriptor* payload, FieldRule* rule) {
  const Descriptor* d = icr::v1::CareEvent::descriptor();
  std::vector<std::string> parts;
  {
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      parts.push_back(
          path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  }
  for (const std::string& p : parts) {
    if (p.empty()) return "is not a field path (field names joined by '.', e.g. nhs_number)";
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* f = d->FindFieldByName(parts[i]);
    if (f == nullptr) {
      return d->name() + " has no field \"" + parts[i] + "\" (fields: " + FieldNames(d) + ")";
    }
    if (i == 0) {
      const std::string& n = f->name();
      if (n == "event_id" || n == "position" || n == "recorded_at" || n == "event_type") {
        return "is assigned by the broker and cannot be mapped";
      }
      if (n == "source_message_id") {
        return "is set by the importer: use \"message_id\" to take it from a column";
      }
      if (n == "priority") return "cannot be mapped: imported events are always BULK";
      if (f->containing_oneof() != nullptr && f != payload) {
        return "belongs to " + PayloadTypeName(f) + " events, but this mapping makes " +
               PayloadTypeName(payload) + " events (its fields start with \"" + payload->name() +
               ".\")";
      }
    }
    rule->chain.push_back(f);
    const bool last = i + 1 == parts.size();
    const bool is_message = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    const bool is_date = is_message && f->message_type() == icr::v1::Date::descriptor();
    const bool is_time =
        is_message && f->message_type() == google::protobuf::Timestamp::descriptor();
    if (!last) {
      if (!is_message || is_date || is_time) {
        return "\"" + parts[i] + "\" is a " + TypeOf(f) + " field, which has no fields of its own";
      }
      if (f->is_repeated()) {
        return "\"" + parts[i] + "\" is a repeated message (" + TypeOf(f) +
               "): one CSV cell cannot fill a list of messages";
      }
      d = f->message_type();
      continue;
    }
    rule->repeated = f->is_repeated();
    rule->required = f->options().GetExtension(icr::v1::required);
    if (is_message && !is_date && !is_time) {
      return "is a " + TypeOf(f) + " message: map its fields, e.g. \"" + path + "." +
             f->message_type()->field(0)->name() + "\"";
    }
    if ((is_date || is_time) && f->is_repeated()) {
      return "is a list of " + TypeOf(f) + ", which cannot be mapped";
    }
    if (is_date) {
      rule->kind = Kind::kDate;
    } else if (is_time) {
      rule->kind = Kind::kTimestamp;
    } else {
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_STRING:
          rule->kind = Kind::kString;
          break;
        case FieldDescriptor::CPPTYPE_INT32:
          rule->kind = Kind::kInt32;
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          rule->kind = Kind::kInt64;
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          rule->kind = Kind::kUint32;
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          rule->kind = Kind::kUint64;
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          rule->kind = Kind::kDouble;
          break;
        case FieldDescriptor::CPPTYPE_FLOAT:
          rule->kind = Kind::kFloat;
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          rule->kind = Kind::kBool;
          break;
        case FieldDescriptor::CPPTYPE_ENUM:
          rule->kind = Kind::kEnum;
          break;
        default:
          return "has a type that cannot be mapped";
      }
    }
  }
  return {};
}

std::string FormatList(const std::vector<std::string>& formats) { return Join(formats, " or "); }

template <typename T>
std::string ParseInteger(std::string_view text, T* out) {
  std::string_view t = text;
  if (!t.empty() && t.front() == '+') t.remove_prefix(1);
  T value{};
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (ec == std::errc::result_out_of_range) return Shown(text) + " is out of range";
  if (ec != std::errc() || end != t.data() + t.size() || t.empty()) {
    return Shown(text) + " is not a whole number";
  }
  *out = value;
  return {};
}

std::string ParseReal(std::string_view text, double* out) {
  std::string_view t = text;
  if (!t.empty() && t.front() == '+') t.remove_prefix(1);
  double value = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value, std::chars_format::fixed);
  if (ec != std::errc() || end != t.data() + t.size() || t.empty() || !std::isfinite(value)) {
    return Shown(text) + " is not a number";
  }
  *out = value;
  return {};
}

std::string ParseBool(std::string_view text, bool* out) {
  const std::string t = Lower(text);
  if (t == "true" || t == "yes" || t == "y" || t == "1") {
    *out = true;
  } else if (t == "false" || t == "no" || t == "n" || t == "0") {
    *out = false;
  } else {
    return Shown(text) +
           " is not yes or no (true/false, yes/no, y/n or 1/0; map other "
           "values with \"values\")";
  }
  return {};
}

std::string ParseEnum(std::string_view text, const EnumDescriptor* e, int* out) {
  std::string name(text);
  for (char& c : name) {
    c = c == ' ' || c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  const EnumValueDescriptor* v = e->FindValueByName(name);
  if (v == nullptr || v->number() == 0) {
    return Shown(text) + " is not a " + e->name() + " (valid: " + EnumNames(e) +
           "; map the export's own words with \"values\")";
  }
  *out = v->number();
  return {};
}

// Sets one value of the leaf field `f` of `m`. `formats` empty: canonical.
std::string SetOne(Message* m, const FieldDescriptor* f, const FieldRule& rule,
                   std::string_view text, bool canonical) {
  const Reflection* r = m->GetReflection();
  const bool add = f->is_repeated();
  switch (rule.kind) {
    case Kind::kString:
      if (!IsValidUtf8(text)) return "is not valid UTF-8 text (save the export as UTF-8)";
      add ? r->AddString(m, f, std::string(text)) : r->SetString(m, f, std::string(text));
      return {};
    case Kind::kInt32: {
      int32_t v{};
      if (auto p = ParseInteger(text, &v); !p.empty()) return p;
      add ? r->AddInt32(m, f, v) : r->SetInt32(m, f, v);
      return {};
    }
    case Kind::kInt64: {
      int64_t v{};
      if (auto p = ParseInteger(text, &v); !p.empty()) return p;
      add ? r->AddInt64(m, f, v) : r->SetInt64(m, f, v);
      return {};
    }
    case Kind::kUint32: {
      uint32_t v{};
      if (auto p = ParseInteger(text, &v); !p.empty()) return p;
      add ? r->AddUInt32(m, f, v) : r->SetUInt32(m, f, v);
      return {};
    }
    case Kind::kUint64: {
      uint64_t v{};
      if (auto p = ParseInteger(text, &v); !p.empty()) return p;
      add ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
      return {};
    }
    case Kind::kDouble: {
      double v{};
      if (auto p = ParseReal(text, &v); !p.empty()) return p;
      add ? r->AddDouble(m, f, v) : r->SetDouble(m, f, v);
      return {};
    }
    case Kind::kFloat: {
      double v{};
      if (auto p = ParseReal(text, &v); !p.empty()) return p;
      if (std::fabs(v) > std::numeric_limits<float>::max()) return Shown(text) + " is out of range";
      add ? r->AddFloat(m, f, static_cast<float>(v)) : r->SetFloat(m, f, static_cast<float>(v));
      return {};
    }
    case Kind::kBool: {
      bool v{};
      if (auto p = ParseBool(text, &v); !p.empty()) return p;
      add ? r->AddBool(m, f, v) : r->SetBool(m, f, v);
      return {};
    }
    case Kind::kEnum: {
      int v{};
      if (auto p = ParseEnum(text, f->enum_type(), &v); !p.empty()) return p;
      add ? r->AddEnumValue(m, f, v) : r->SetEnumValue(m, f, v);
      return {};
    }
    case Kind::kDate:
    case Kind::kTimestamp: {
      const bool date = rule.kind == Kind::kDate;
      const std::vector<std::string>& formats =
          canonical || rule.formats.empty() ? (date ? kCanonicalDateFormats : kCanonicalTimeFormats)
                                            : rule.formats;
      CivilTime t;
      bool parsed = false;
      int year_out_of_range = -1;
      for (const std::string& fmt : formats) {
        if (ParseWithFormat(text, fmt, &t, &year_out_of_range)) {
          parsed = true;
          break;
        }
      }
      if (!parsed && year_out_of_range >= 0) {
        // A real date, in a year the broker does not take.
        return Shown(text) + " is in year " + std::to_string(year_out_of_range) +
               ", outside the supported years " + std::to_string(kMinYear) + ".." +
               std::to_string(kMaxYear);
      }
      if (!parsed) {
        if (canonical || rule.formats.empty()) {
          return Shown(text) + (date ? " is not a valid date (format %Y-%m-%d, e.g. 2026-03-01)"
                                     : " is not a valid date and time (RFC 3339 such as "
                                       "2026-03-01T09:30:00Z, or 2026-03-01 09:30 local time)");
        }
        return Shown(text) + (date ? " is not a valid date" : " is not a valid date and time") +
               " (format " + FormatList(formats) + ")";
      }
      Message* sub = r->MutableMessage(m, f);
      if (date) {
        auto* d = static_cast<icr::v1::Date*>(sub);
        d->set_year(t.year);
        d->set_month(t.month);
        d->set_day(t.day);
      } else {
        auto* ts = static_cast<google::protobuf::Timestamp*>(sub);
        ts->set_seconds(ToUnixSeconds(t, rule.zone));
        ts->set_nanos(t.nanos);
      }
      return {};
    }
  }
  return "cannot be set";
}

// Sets the rule's field in `root` from (trimmed, non-empty) text.
std::string SetField(Message* root, const FieldRule& rule, std::string_view text, bool canonical) {
  Message* m = root;
  for (size_t i = 0; i + 1 < rule.chain.size(); ++i) {
    m = m->GetReflection()->MutableMessage(m, rule.chain[i]);
  }
  const FieldDescriptor* f = rule.chain.back();
  if (rule.repeated && !rule.separator.empty()) {
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find(rule.separator, start);
      if (end == std::string_view::npos) end = text.size();
      std::string_view part = Trim(text.substr(start, end - start));
      if (!part.empty()) {
        if (auto p = SetOne(m, f, rule, part, canonical); !p.empty()) return p;
      }
      start = end + rule.separator.size();
    }
    return {};
  }
  return SetOne(m, f, rule, text, canonical);
}

// Applies "values" (when given) and sets the field from a cell's text.
std::string SetCell(Message* root, const FieldRule& rule, std::string_view text) {
  if (rule.has_values) {
    auto it = rule.values.find(Lower(text));
    if (it == rule.values.end()) {
      std::vector<std::string> keys;
      for (const auto& k : rule.value_keys) keys.push_back("'" + k + "'");
      return Shown(text) + " is not one of the values the mapping lists (" + Join(keys, ", ") + ")";
    }
    return SetField(root, rule, it->second, /*canonical=*/true);
  }
  return SetField(root, rule, text, /*canonical=*/false);
}

// A JSON scalar as text ("" with *ok = false for objects, arrays, null).
std::string ScalarText(const Json& j, bool* ok) {
  *ok = true;
  if (j.is_string()) return j.get<std::string>();
  if (j.is_boolean()) return j.get<bool>() ? "true" : "false";
  if (j.is_number_integer()) return std::to_string(j.get<int64_t>());
  if (j.is_number_unsigned()) return std::to_string(j.get<uint64_t>());
  if (j.is_number_float()) {
    std::ostringstream os;
    os.precision(17);
    os << j.get<double>();
    return os.str();
  }
  *ok = false;
  return {};
}

std::string Keys(const std::vector<std::string>& known) { return Join(known, ", "); }

// Checks that every key of object `j` is one of `known`. "" or the problem.
std::string CheckKeys(const Json& j, const std::string& where,
                      const std::vector<std::string>& known) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      return where + "unknown key \"" + it.key() + "\" (known: " + Keys(known) + ")";
    }
  }
  return {};
}

Status KeyError(const std::string& key, const std::string& problem) {
  return Status::Error(key + ": " + problem);
}

// Parses a field rule's object (or column-name string).
Status ParseRule(const std::string& path, const Json& spec, const MappingData& data,
                 FieldRule* rule) {
  rule->path = path;
  rule->key = "fields." + path;
  rule->zone = data.zone;
  if (auto p = ResolvePath(path, data.payload, rule); !p.empty()) return KeyError(rule->key, p);
  if (spec.is_string()) {
    rule->column = spec.get<std::string>();
  } else if (spec.is_object()) {
    if (auto p = CheckKeys(
            spec, rule->key + ": ",
            {"column", "format", "timezone", "values", "default", "separator", "description"});
        !p.empty()) {
      return Status::Error(p);
    }
    if (!spec.contains("column") || !spec["column"].is_string()) {
      return KeyError(rule->key, "needs \"column\": the name of the column in the header");
    }
    rule->column = spec["column"].get<std::string>();
    if (spec.contains("format")) {
      const Json& f = spec["format"];
      if (rule->kind != Kind::kDate && rule->kind != Kind::kTimestamp) {
        return KeyError(rule->key + ".format", "only dates and times take a format; " + path +
                                                   " is a " + TypeOf(rule->chain.back()) +
                                                   " field");
      }
      std::vector<std::string> formats;
      if (f.is_string()) {
        formats.push_back(f.get<std::string>());
      } else if (f.is_array() && !f.empty()) {
        for (const Json& x : f) {
          if (!x.is_string()) return KeyError(rule->key + ".format", "must be strings");
          formats.push_back(x.get<std::string>());
        }
      } else {
        return KeyError(rule->key + ".format",
                        "must be a format such as \"%d/%m/%Y\", or a list of them tried in turn");
      }
      for (const std::string& fmt : formats) {
        if (auto p = CheckFormat(fmt); !p.empty()) {
          return KeyError(rule->key + ".format", "\"" + fmt + "\" " + p);
        }
      }
      rule->formats = std::move(formats);
    }
    if (spec.contains("timezone")) {
      if (rule->kind != Kind::kTimestamp) {
        return KeyError(rule->key + ".timezone", "only Timestamp fields take a time zone");
      }
      if (!spec["timezone"].is_string() ||
          !ParseTimeZone(spec["timezone"].get<std::string>(), &rule->zone)) {
        return KeyError(rule->key + ".timezone", "must be \"Europe/London\" or \"UTC\"");
      }
    }
    if (spec.contains("separator")) {
      if (!rule->repeated) {
        return KeyError(rule->key + ".separator", "only list (repeated) fields take a separator; " +
                                                      path + " holds one value");
      }
      if (!spec["separator"].is_string() || spec["separator"].get<std::string>().empty()) {
        return KeyError(rule->key + ".separator", "must be a non-empty string such as \";\"");
      }
      rule->separator = spec["separator"].get<std::string>();
    }
    if (spec.contains("values")) {
      const Json& v = spec["values"];
      if (!v.is_object() || v.empty()) {
        return KeyError(rule->key + ".values",
                        "must be an object from the export's values to the field's, e.g. "
                        "{\"Home care\": \"HOME_SUPPORT\"}");
      }
      rule->has_values = true;
      icr::v1::CareEvent scratch;
      for (auto it = v.begin(); it != v.end(); ++it) {
        bool ok = false;
        std::string text = ScalarText(it.value(), &ok);
        const std::string key = rule->key + ".values." + it.key();
        if (!ok) return KeyError(key, "must be a string, number or true/false");
        if (auto p = SetField(&scratch, *rule, text, /*canonical=*/true); !p.empty()) {
          return KeyError(key, p);
        }
        const std::string norm = Lower(Trim(it.key()));
        if (!rule->values.emplace(norm, text).second) {
          return KeyError(key, "is listed twice (keys are compared ignoring case)");
        }
        rule->value_keys.push_back(it.key());
      }
    }
    if (spec.contains("default")) {
      bool ok = false;
      std::string text = ScalarText(spec["default"], &ok);
      if (!ok || Trim(text).empty()) {
        return KeyError(rule->key + ".default", "must be a non-empty string, number or true/false");
      }
      icr::v1::CareEvent scratch;
      if (auto p = SetCell(&scratch, *rule, Trim(text)); !p.empty()) {
        return KeyError(rule->key + ".default", p);
      }
      rule->has_default = true;
      rule->default_text = std::string(Trim(text));
    }
  } else {
    return KeyError(rule->key, "must be a column name, or an object with \"column\"");
  }
  if (Trim(rule->column).empty()) return KeyError(rule->key, "the column name is empty");
  return Status::Ok();
}

// Every required field of every message the mapping fills must be set.
Status CheckRequired(const MappingData& data, const std::set<std::string>& set_paths) {
  std::set<std::string> prefixes = {"", data.payload->name()};
  for (const std::string& p : set_paths) {
    for (size_t dot = p.find('.'); dot != std::string::npos; dot = p.find('.', dot + 1)) {
      prefixes.insert(p.substr(0, dot));
    }
  }
  const std::string type_name = PayloadTypeName(data.payload);
  for (const std::string& prefix : prefixes) {
    const Descriptor* d = icr::v1::CareEvent::descriptor();
    if (!prefix.empty()) {
      size_t start = 0;
      while (d != nullptr) {
        const size_t dot = prefix.find('.', start);
        const FieldDescriptor* f = d->FindFieldByName(prefix.substr(start, dot - start));
        d = f != nullptr && f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE ? f->message_type()
                                                                              : nullptr;
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
    }
    if (d == nullptr) continue;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (!f->options().GetExtension(icr::v1::required)) continue;
      const std::string fp = prefix.empty() ? f->name() : prefix + "." + f->name();
      bool set = set_paths.count(fp) > 0;
      for (auto it = set_paths.lower_bound(fp + ".");
           !set && it != set_paths.end() && it->rfind(fp + ".", 0) == 0; ++it) {
        set = true;
      }
      if (!set) {
        const std::string who =
            prefix.empty() ? std::string("every event must have")
            : prefix == data.payload->name()
                ? type_name + " events must have"
                : "a " + d->name() + " (" + prefix + ") must have once any of its fields is set";
        return Status::Error("the mapping does not set " + fp + ", which " + who +
                             ": map it to a column in \"fields\" or give it in \"constants\"");
      }
    }
  }
  return Status::Ok();
}

// Rejects a key that appears twice in one JSON object (nlohmann keeps the
// last one silently).
class DuplicateKeyCheck {
 public:
  bool operator()(int /*depth*/, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      keys_.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!keys_.empty()) keys_.pop_back();
    } else if (event == Json::parse_event_t::key && duplicate_.empty() && !keys_.empty()) {
      if (parsed.is_string() && !keys_.back().insert(parsed.get<std::string>()).second) {
        duplicate_ = parsed.get<std::string>();
      }
    }
    return true;
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  std::vector<std::set<std::string>> keys_;
  std::string duplicate_;
};

Status ParseMapping(std::string_view text, MappingData* data) {
  if (text.size() > kMaxMappingBytes) {
    return Status::Error("the mapping file is larger than 1 MiB");
  }
  Json root;
  auto check = std::make_shared<DuplicateKeyCheck>();
  try {
    root = Json::parse(text.begin(), text.end(),
                       [check](int depth, Json::parse_event_t event, Json& parsed) {
                         return (*check)(depth, event, parsed);
                       });
  } catch (const Json::exception& e) {
    std::string what = e.what();
    if (size_t close = what.find("] ");
        what.rfind("[json.exception", 0) == 0 && close != std::string::npos) {
      what = what.substr(close + 2);
    }
    return Status::Error("the mapping file is not valid JSON: " + what);
  }
  if (!check->duplicate().empty()) {
    return Status::Error("the key \"" + check->duplicate() +
                         "\" appears twice in one object of the mapping file");
  }
  if (!root.is_object()) return Status::Error("the mapping file must hold one JSON object");
  if (auto p = CheckKeys(root, "",
                         {"event_type", "fields", "constants", "message_id", "timezone",
                          "delimiter", "description"});
      !p.empty()) {
    return Status::Error(p);
  }

  // event_type
  if (!root.contains("event_type") || !root["event_type"].is_string()) {
    return KeyError("event_type",
                    "is required: the type of event each row makes, e.g. "
                    "\"CARE_PACKAGE_START\" (valid: " +
                        EnumNames(icr::v1::EventType_descriptor()) + ")");
  }
  {
    const std::string name = root["event_type"].get<std::string>();
    const EnumValueDescriptor* v = icr::v1::EventType_descriptor()->FindValueByName(name);
    const FieldDescriptor* payload =
        v != nullptr && v->number() != 0
            ? icr::v1::CareEvent::descriptor()->FindFieldByNumber(v->number())
            : nullptr;
    if (payload == nullptr) {
      return KeyError("event_type", "\"" + name + "\" is not an EventType (valid: " +
                                        EnumNames(icr::v1::EventType_descriptor()) + ")");
    }
    data->event_type = static_cast<icr::v1::EventType>(v->number());
    data->payload = payload;
  }
  if (root.contains("delimiter")) {
    const Json& d = root["delimiter"];
    const std::string s = d.is_string() ? d.get<std::string>() : "";
    if (s.size() != 1 || s[0] == '"' || s[0] == '\r' || s[0] == '\n') {
      return KeyError("delimiter",
                      "must be one character other than a quote or a line break, "
                      "e.g. \",\", \";\" or \"\\t\"");
    }
    data->delimiter = s[0];
  }
  if (root.contains("timezone")) {
    if (!root["timezone"].is_string() ||
        !ParseTimeZone(root["timezone"].get<std::string>(), &data->zone)) {
      return KeyError("timezone", "must be \"Europe/London\" (the default) or \"UTC\"");
    }
  }

  // fields
  if (!root.contains("fields") || !root["fields"].is_object()) {
    return KeyError("fields", "is required: an object from CareEvent field paths to column names");
  }
  std::set<std::string> set_paths = {"source_message_id"};
  for (auto it = root["fields"].begin(); it != root["fields"].end(); ++it) {
    FieldRule rule;
    if (Status s = ParseRule(it.key(), it.value(), *data, &rule); !s.ok()) return s;
    set_paths.insert(rule.path);
    data->rules.push_back(std::move(rule));
  }
  std::sort(data->rules.begin(), data->rules.end(),
            [](const FieldRule& a, const FieldRule& b) { return a.path < b.path; });

  // constants
  icr::v1::CareEvent& proto = data->prototype;
  proto.GetReflection()->MutableMessage(&proto, data->payload);  // the payload case
  if (root.contains("constants")) {
    const Json& c = root["constants"];
    if (!c.is_object())
      return KeyError("constants", "must be an object from field paths to values");
    for (auto it = c.begin(); it != c.end(); ++it) {
      const std::string key = "constants." + it.key();
      FieldRule rule;
      rule.path = it.key();
      rule.zone = data->zone;
      if (auto p = ResolvePath(it.key(), data->payload, &rule); !p.empty()) return KeyError(key, p);
      if (set_paths.count(rule.path)) {
        return KeyError(key,
                        "is also in \"fields\": give each field a column or a constant, "
                        "not both");
      }
      std::vector<const Json*> items;
      if (it.value().is_array() && rule.repeated) {
        for (const Json& x : it.value()) items.push_back(&x);
      } else {
        items.push_back(&it.value());
      }
      for (const Json* x : items) {
        bool ok = false;
        std::string text = ScalarText(*x, &ok);
        if (!ok) return KeyError(key, "must be a string, number or true/false");
        if (text.empty()) return KeyError(key, "is empty");
        if (auto p = SetField(&proto, rule, text, /*canonical=*/true); !p.empty()) {
          return KeyError(key, p);
        }
      }
      set_paths.insert(rule.path);
    }
  }
  proto.set_priority(icr::v1::BULK);

  // message_id
  if (root.contains("message_id")) {
    const Json& m = root["message_id"];
    data->id_prefix = std::string(data->payload->name()) + ":";
    if (m.is_string()) {
      data->id_column = m.get<std::string>();
    } else if (m.is_object()) {
      if (auto p = CheckKeys(m, "message_id: ", {"column", "prefix", "description"}); !p.empty()) {
        return Status::Error(p);
      }
      if (!m.contains("column") || !m["column"].is_string()) {
        return KeyError("message_id", "needs \"column\": the column holding the row's own id");
      }
      data->id_column = m["column"].get<std::string>();
      if (m.contains("prefix")) {
        if (!m["prefix"].is_string() || !IsPrintableAscii(m["prefix"].get<std::string>()) ||
            m["prefix"].get<std::string>().size() > 64) {
          return KeyError("message_id.prefix", "must be at most 64 printable ASCII characters");
        }
        data->id_prefix = m["prefix"].get<std::string>();
      }
    } else {
      return KeyError("message_id", "must be a column name, or {\"column\": ..., \"prefix\": ...}");
    }
    if (Trim(data->id_column).empty()) return KeyError("message_id", "the column name is empty");
    data->has_id_column = true;
  }

  return CheckRequired(*data, set_paths);
}

}  // namespace

// ---------------------------------------------------------------------------
// Mapping
// ---------------------------------------------------------------------------

Mapping::Mapping() = default;
Mapping::~Mapping() = default;
Mapping::Mapping(const Mapping&) = default;
Mapping& Mapping::operator=(const Mapping&) = default;

Status Mapping::Parse(std::string_view json_text, Mapping* out) {
  auto data = std::make_shared<MappingData>();
  Status s = ParseMapping(json_text, data.get());
  if (!s.ok()) return s;
  out->data_ = std::move(data);
  return Status::Ok();
}

Status Mapping::Load(const std::string& path, Mapping* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error("cannot open the mapping file " + path);
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxMappingBytes) {
      return Status::Error(path + ": the mapping file is larger than 1 MiB");
    }
  }
  if (in.bad()) return Status::Error("cannot read the mapping file " + path);
  Status s = Parse(text, out);
  if (!s.ok()) return Status::Error(path + ": " + s.message());
  return s;
}

icr::v1::EventType Mapping::event_type() const {
  return data_ ? data_->event_type : icr::v1::EVENT_TYPE_UNSPECIFIED;
}

char Mapping::delimiter() const { return data_ ? data_->delimiter : ','; }

std::vector<std::string> Mapping::columns() const {
  std::vector<std::string> out;
  if (!data_) return out;
  for (const FieldRule& r : data_->rules) out.push_back(r.column);
  if (data_->has_id_column) out.push_back(data_->id_column);
  return out;
}

Status Mapping::Bind(const std::vector<std::string>& header, RowMapper* out) const {
  if (!data_) return Status::Error("no mapping loaded");
  std::vector<std::string> norm;
  for (const std::string& h : header) norm.push_back(Lower(Trim(h)));
  std::vector<std::string> shown;
  for (const std::string& h : header) shown.push_back("'" + std::string(Trim(h)) + "'");
  auto find = [&](const std::string& key, const std::string& column, size_t* index) -> Status {
    const std::string want = Lower(Trim(column));
    std::vector<size_t> found;
    for (size_t i = 0; i < norm.size(); ++i) {
      if (norm[i] == want) found.push_back(i);
    }
    if (found.empty()) {
      return KeyError(key, "the column '" + column + "' is not in the file's header (columns: " +
                               Join(shown, ", ") + ")");
    }
    if (found.size() > 1) {
      return KeyError(key, "the column '" + column + "' appears " + std::to_string(found.size()) +
                               " times in the header (columns " + std::to_string(found[0] + 1) +
                               " and " + std::to_string(found[1] + 1) +
                               "): rename one in the export");
    }
    *index = found[0];
    return Status::Ok();
  };
  RowMapper mapper;
  mapper.data_ = data_;
  mapper.header_ = header;
  for (const FieldRule& rule : data_->rules) {
    size_t index = 0;
    if (Status s = find(rule.key, rule.column, &index); !s.ok()) return s;
    mapper.column_index_.push_back(index);
    mapper.column_name_.push_back(std::string(Trim(header[index])));
  }
  if (data_->has_id_column) {
    if (Status s = find("message_id", data_->id_column, &mapper.id_column_); !s.ok()) return s;
    mapper.has_id_column_ = true;
  }
  *out = std::move(mapper);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// RowMapper
// ---------------------------------------------------------------------------

RowMapper::RowMapper() = default;
RowMapper::~RowMapper() = default;
RowMapper::RowMapper(const RowMapper&) = default;
RowMapper& RowMapper::operator=(const RowMapper&) = default;

std::string RowMapper::Map(const CsvRecord& record, icr::v1::CareEvent* event) const {
  event->Clear();
  if (record.fields.size() != header_.size()) {
    return "has " + std::to_string(record.fields.size()) + " field" +
           (record.fields.size() == 1 ? "" : "s") + ", but the header has " +
           std::to_string(header_.size()) +
           " columns (a field holding the delimiter or a line break must be in quotes)";
  }
  event->CopyFrom(data_->prototype);
  struct Problem {
    size_t index;  // the column's place in the header: problems are told left to right
    std::string column;
    std::string text;
  };
  std::vector<Problem> problems;
  auto add_problem = [&](size_t index, const std::string& column, std::string text) {
    for (const auto& p : problems) {
      if (p.index == index) return;  // one problem per column is enough
    }
    problems.push_back({index, column, std::move(text)});
  };
  Sha256 hash;
  if (!has_id_column_) {
    hash.Update("icr-csv-v1");
    hash.Update(std::string_view("\0", 1));
    hash.Update(icr::v1::EventType_Name(data_->event_type));
    hash.Update(std::string_view("\0", 1));
  }
  for (size_t i = 0; i < data_->rules.size(); ++i) {
    const FieldRule& rule = data_->rules[i];
    std::string_view cell = Trim(record.fields[column_index_[i]]);
    if (!has_id_column_) {
      hash.Update(rule.path);
      hash.Update(std::string_view("\0", 1));
      hash.Update(cell);
      hash.Update(std::string_view("\0", 1));
    }
    if (cell.empty()) {
      if (rule.has_default) {
        cell = rule.default_text;
      } else {
        if (rule.required) {
          add_problem(column_index_[i], column_name_[i],
                      "is empty, but " + rule.path + " is required");
        }
        continue;
      }
    }
    if (std::string p = SetCell(event, rule, cell); !p.empty()) {
      add_problem(column_index_[i], column_name_[i], std::move(p));
    }
  }
  if (has_id_column_) {
    std::string_view id = Trim(record.fields[id_column_]);
    const std::string name(Trim(header_[id_column_]));
    if (id.empty()) {
      add_problem(id_column_, name, "is empty, but it gives the message id (source_message_id)");
    } else if (!IsPrintableAscii(id) || data_->id_prefix.size() + id.size() > 128) {
      add_problem(id_column_, name,
                  Shown(id) + " cannot be a message id (at most " +
                      std::to_string(128 - data_->id_prefix.size()) +
                      " printable ASCII characters)");
    } else {
      event->set_source_message_id(data_->id_prefix + std::string(id));
    }
  } else {
    event->set_source_message_id("csv:" + Sha256::Hex(hash.Finish(), 16));
  }
  if (problems.empty()) return {};
  std::stable_sort(problems.begin(), problems.end(),
                   [](const Problem& a, const Problem& b) { return a.index < b.index; });
  std::string out;
  for (const Problem& p : problems) {
    if (!out.empty()) out += "; ";
    out += "column '" + p.column + "': " + p.text;
  }
  event->Clear();
  return out;
}

std::string RowMapper::ColumnFor(std::string_view field_path) const {
  if (!data_) return {};
  if (field_path == "source_message_id") {
    return has_id_column_ ? std::string(Trim(header_[id_column_])) : std::string();
  }
  std::string best;
  size_t best_len = 0;
  for (size_t i = 0; i < data_->rules.size(); ++i) {
    const std::string& p = data_->rules[i].path;
    const bool match =
        field_path == p || (field_path.size() > p.size() && field_path.substr(0, p.size()) == p &&
                            field_path[p.size()] == '.');
    if (match && p.size() > best_len) {
      best = column_name_[i];
      best_len = p.size();
    }
  }
  return best;
}

std::string RowError(uint64_t row, const std::string& problem) {
  return "row " + std::to_string(row) + (problem.rfind("column ", 0) == 0 ? ", " : ": ") + problem;
}

}  // namespace icr::adapters::csv
