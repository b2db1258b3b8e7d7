#include "broker/governance/policy.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <utility>

#include "icr/v1/events.pb.h"
#include "icr/v1/governance_types.pb.h"
#include "icr/v1/workflow.pb.h"

namespace icr::broker::governance {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;

constexpr int kSensitiveCategories[] = {icr::v1::SAFEGUARDING, icr::v1::SEXUAL_HEALTH,
                                        icr::v1::MENTAL_HEALTH_DETENTION};

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}

// The names of an enum's values other than 0 (every icr.v1 enum's 0 is
// *_UNSPECIFIED), in declaration order.
std::string EnumNames(const EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) {
    if (e->value(i)->number() != 0) names.push_back(e->value(i)->name());
  }
  return Join(names);
}

std::string FieldNames(const Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return Join(names);
}

bool IsOdsCode(std::string_view s) {
  if (s.size() < 3 || s.size() > 10) return false;
  for (char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

bool IsPrincipalId(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

bool IsProfileName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-')) {
      return false;
    }
  }
  return true;
}

std::shared_ptr<const Profile> BuiltInFull() {
  auto full = std::make_shared<Profile>();
  full->name = "FULL";
  full->all_fields = true;
  full->all_summary = true;
  full->sensitive.insert(std::begin(kSensitiveCategories), std::end(kSensitiveCategories));
  return full;
}

// Thrown inside the parser only (yaml-cpp reports its own errors by
// throwing too); Policy::Parse turns both into a Status.
struct PolicyError {
  std::string message;
};

}  // namespace

bool Profile::full() const {
  if (!all_fields || !all_summary) return false;
  for (int c : kSensitiveCategories) {
    if (!sensitive.count(c)) return false;
  }
  return true;
}

bool Principal::HasQuery(std::string_view q) const { return queries.count(std::string(q)) > 0; }

// Builds a Policy from a YAML document. Each Parse* method reads one node,
// `path` being its key path ("principals[2].subscribe.places[0]"), and throws
// PolicyError naming the source, line and path at the first problem.
class PolicyParser {
 public:
  explicit PolicyParser(std::string source) : source_(std::move(source)) {}

  std::shared_ptr<const Policy> Run(std::string_view yaml) {
    YAML::Node root = YAML::Load(std::string(yaml));
    auto policy = std::shared_ptr<Policy>(new Policy());
    policy->source_ = source_;
    if (root.IsNull()) {
      Fail(root, "",
           "the policy is empty: expected a map with keys profiles, principals, retention");
    }
    CheckMap(root, "", {"profiles", "principals", "retention"});
    if (root["profiles"]) ParseProfiles(root["profiles"], "profiles", policy.get());
    if (!policy->profiles_.count("FULL")) policy->profiles_["FULL"] = BuiltInFull();
    if (root["principals"]) ParsePrincipals(root["principals"], "principals", policy.get());
    if (root["retention"]) ParseRetention(root["retention"], "retention", &policy->retention_);
    return policy;
  }

 private:
  [[noreturn]] void Fail(const YAML::Node& node, const std::string& path,
                         const std::string& what) const {
    std::string message = source_;
    const YAML::Mark mark = node.Mark();
    if (!mark.is_null()) message += ":" + std::to_string(mark.line + 1);
    message += ": ";
    if (!path.empty()) message += path + ": ";
    message += what;
    throw PolicyError{std::move(message)};
  }

  static std::string Kind(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Map:
        return "a map";
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Scalar:
        return "'" + node.Scalar() + "'";
      default:
        return "nothing";
    }
  }

  // `node` must be a map whose keys are all in `allowed`, each once.
  void CheckMap(const YAML::Node& node, const std::string& path,
                std::initializer_list<std::string_view> allowed) const {
    if (!node.IsMap()) Fail(node, path, "expected a map, got " + Kind(node));
    std::set<std::string> seen;
    for (const auto& entry : node) {
      const std::string key = Key(entry.first, path);
      bool known = allowed.size() == 0;
      for (std::string_view a : allowed) known = known || a == key;
      if (!known) {
        std::vector<std::string> names(allowed.begin(), allowed.end());
        Fail(entry.first, path, "unknown key '" + key + "' (allowed: " + Join(names) + ")");
      }
      if (!seen.insert(key).second) Fail(entry.first, path, "duplicate key '" + key + "'");
    }
  }

  std::string Key(const YAML::Node& key, const std::string& path) const {
    if (!key.IsScalar()) Fail(key, path, "a key must be a plain name, got " + Kind(key));
    return key.Scalar();
  }

  static std::string Child(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  static std::string Index(const std::string& path, size_t i) {
    return path + "[" + std::to_string(i) + "]";
  }

  std::string Scalar(const YAML::Node& node, const std::string& path) const {
    if (!node.IsScalar()) Fail(node, path, "expected a single value, got " + Kind(node));
    return node.Scalar();
  }

  bool Bool(const YAML::Node& node, const std::string& path) const {
    bool value = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
      Fail(node, path, "expected true or false, got " + Kind(node));
    }
    return value;
  }

  // A list of single values with their nodes and paths. Nothing (`key:`)
  // is an empty list; a single value is a list of one.
  struct Item {
    std::string value;
    YAML::Node node;
    std::string path;
  };
  std::vector<Item> List(const YAML::Node& node, const std::string& path) const {
    std::vector<Item> items;
    if (node.IsNull()) return items;
    if (node.IsScalar()) {
      items.push_back({node.Scalar(), node, path});
      return items;
    }
    if (!node.IsSequence()) Fail(node, path, "expected a list, got " + Kind(node));
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string item_path = Index(path, i);
      items.push_back({Scalar(node[i], item_path), node[i], item_path});
    }
    return items;
  }

  // A value of `e` by name (not its 0 value).
  int EnumValue(const Item& item, const EnumDescriptor* e, std::string_view what) const {
    const auto* v = e->FindValueByName(item.value);
    if (v == nullptr || v->number() == 0) {
      Fail(item.node, item.path,
           "'" + item.value + "' is not " + std::string(what) + " (" + EnumNames(e) + ")");
    }
    return v->number();
  }

  // A list of enum names or "*": sets *all on "*", else fills *values.
  void EnumList(const YAML::Node& node, const std::string& path, const EnumDescriptor* e,
                std::string_view what, bool* all, std::set<int>* values) const {
    for (const Item& item : List(node, path)) {
      if (item.value == "*" && all != nullptr) {
        *all = true;
      } else {
        values->insert(EnumValue(item, e, what));
      }
    }
  }

  void ParseProfiles(const YAML::Node& node, const std::string& path, Policy* policy) {
    CheckMap(node, path, {});
    for (const auto& entry : node) {
      const std::string name = Key(entry.first, path);
      const std::string profile_path = Child(path, name);
      if (!IsProfileName(name)) {
        Fail(entry.first, path, "'" + name + "' is not a profile name (1..64 of A-Z a-z 0-9 _ -)");
      }
      policy->profiles_[name] = ParseProfile(entry.second, profile_path, name);
    }
  }

  std::shared_ptr<const Profile> ParseProfile(const YAML::Node& node, const std::string& path,
                                              const std::string& name) {
    auto profile = std::make_shared<Profile>();
    profile->name = name;
    if (node.IsNull()) return profile;  // `NONE:` keeps nothing
    CheckMap(node, path, {"fields", "summary", "sensitive"});
    if (node["fields"]) {
      for (const Item& item : List(node["fields"], Child(path, "fields"))) {
        if (item.value == "*") {
          profile->all_fields = true;
        } else {
          CheckFieldPath(item);
          profile->fields.insert(item.value);
        }
      }
    }
    if (node["summary"]) {
      const Descriptor* summary = icr::v1::CareSummary::descriptor();
      for (const Item& item : List(node["summary"], Child(path, "summary"))) {
        if (item.value == "*") {
          profile->all_summary = true;
        } else if (summary->FindFieldByName(item.value) == nullptr) {
          Fail(item.node, item.path,
               "'" + item.value + "' is not a CareSummary field (" + FieldNames(summary) + ")");
        } else {
          profile->summary_fields.insert(item.value);
        }
      }
    }
    if (node["sensitive"]) {
      bool all = false;
      EnumList(node["sensitive"], Child(path, "sensitive"), icr::v1::SensitiveCategory_descriptor(),
               "a SensitiveCategory", &all, &profile->sensitive);
      if (all) {
        profile->sensitive.insert(std::begin(kSensitiveCategories), std::end(kSensitiveCategories));
      }
    }
    return profile;
  }

  // "payload[.field[.field...]]" against the CareEvent descriptor.
  void CheckFieldPath(const Item& item) const {
    const Descriptor* event = icr::v1::CareEvent::descriptor();
    const auto* payload = event->FindOneofByName("payload");
    std::vector<std::string> parts;
    std::stringstream in(item.value);
    for (std::string part; std::getline(in, part, '.');) parts.push_back(part);
    if (parts.empty() || item.value.back() == '.') {
      Fail(item.node, item.path, "'" + item.value + "' is not a field path");
    }
    const FieldDescriptor* field = event->FindFieldByName(parts[0]);
    if (field == nullptr || field->containing_oneof() != payload) {
      std::vector<std::string> names;
      for (int i = 0; i < payload->field_count(); ++i) names.push_back(payload->field(i)->name());
      Fail(item.node, item.path,
           "'" + parts[0] + "' is not a CareEvent payload (" + Join(names) + ")");
    }
    for (size_t i = 1; i < parts.size(); ++i) {
      const Descriptor* message = field->message_type();
      if (message == nullptr) {
        Fail(item.node, item.path,
             "'" + field->name() + "' has no fields, so '" + parts[i] + "' cannot follow it");
      }
      field = message->FindFieldByName(parts[i]);
      if (field == nullptr) {
        Fail(item.node, item.path,
             "'" + parts[i] + "' is not a field of " + message->full_name() + " (" +
                 FieldNames(message) + ")");
      }
    }
  }

  void ParsePrincipals(const YAML::Node& node, const std::string& path, Policy* policy) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) Fail(node, path, "expected a list of principals, got " + Kind(node));
    std::map<std::string, int> first_line;  // id -> line of its first definition
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string item_path = Index(path, i);
      Principal principal = ParsePrincipal(node[i], item_path, *policy);
      const int line = node[i].Mark().line + 1;
      auto [it, inserted] = first_line.emplace(principal.id, line);
      if (!inserted) {
        Fail(node[i]["id"], Child(item_path, "id"),
             "duplicate principal id '" + principal.id + "' (first defined on line " +
                 std::to_string(it->second) + ")");
      }
      policy->principals_.emplace(principal.id, std::move(principal));
    }
  }

  Principal ParsePrincipal(const YAML::Node& node, const std::string& path, const Policy& policy) {
    CheckMap(node, path,
             {"id", "organisation", "role", "profile", "publish", "subscribe", "purposes",
              "legal_basis", "queries", "max_connections"});
    Principal p;
    for (const char* required : {"id", "organisation", "profile"}) {
      if (!node[required]) Fail(node, path, std::string("'") + required + "' is required");
    }
    p.id = Scalar(node["id"], Child(path, "id"));
    if (!IsPrincipalId(p.id)) {
      Fail(node["id"], Child(path, "id"),
           "'" + p.id + "' is not a principal id (a certificate CN: 1..64 of a-z 0-9 -)");
    }
    p.organisation = OdsCode(node["organisation"], Child(path, "organisation"));
    if (node["role"]) p.role = Scalar(node["role"], Child(path, "role"));

    const std::string profile_name = Scalar(node["profile"], Child(path, "profile"));
    auto profile = policy.profiles_.find(profile_name);
    if (profile == policy.profiles_.end()) {
      std::vector<std::string> names;
      for (const auto& [name, unused] : policy.profiles_) names.push_back(name);
      Fail(node["profile"], Child(path, "profile"),
           "unknown profile '" + profile_name + "' (profiles: " + Join(names) + ")");
    }
    p.profile = profile->second;

    if (node["publish"]) ParsePublish(node["publish"], Child(path, "publish"), &p.publish);
    if (node["subscribe"]) {
      ParseSubscribe(node["subscribe"], Child(path, "subscribe"), &p.subscribe);
    }

    if (node["purposes"]) {
      bool all = false;
      EnumList(node["purposes"], Child(path, "purposes"), icr::v1::Purpose_descriptor(),
               "a Purpose", &all, &p.purposes);
      if (all) {
        const EnumDescriptor* e = icr::v1::Purpose_descriptor();
        for (int i = 0; i < e->value_count(); ++i) {
          if (e->value(i)->number() != 0) p.purposes.insert(e->value(i)->number());
        }
      }
    } else {
      p.purposes.insert(icr::v1::DIRECT_CARE);
    }
    if (node["legal_basis"]) {
      p.default_legal_basis = Scalar(node["legal_basis"], Child(path, "legal_basis"));
    }
    if (node["queries"]) {
      for (const Item& item : List(node["queries"], Child(path, "queries"))) {
        bool known = false;
        for (std::string_view q : kQueryNames) {
          if (item.value == "*" || item.value == q) {
            p.queries.insert(std::string(q));
            known = true;
          }
        }
        if (!known) {
          std::vector<std::string> names(std::begin(kQueryNames), std::end(kQueryNames));
          Fail(item.node, item.path, "'" + item.value + "' is not a query (" + Join(names) + ")");
        }
      }
    }
    if (node["max_connections"]) {
      const std::string where = Child(path, "max_connections");
      const std::string text = Scalar(node["max_connections"], where);
      uint64_t value = 0;
      bool ok = !text.empty() && text.size() <= 10;
      for (char c : text) ok = ok && c >= '0' && c <= '9';
      if (ok) value = std::stoull(text);
      if (!ok || value > std::numeric_limits<uint32_t>::max()) {
        Fail(node["max_connections"], where,
             "'" + text + "' is not a connection count (0..4294967295; 0: no limit)");
      }
      p.max_connections = static_cast<uint32_t>(value);
    }
    return p;
  }

  std::string OdsCode(const YAML::Node& node, const std::string& path) const {
    const std::string code = Scalar(node, path);
    if (!IsOdsCode(code)) {
      Fail(node, path, "'" + code + "' is not an ODS code (3..10 of A-Z 0-9)");
    }
    return code;
  }

  void ParsePublish(const YAML::Node& node, const std::string& path, PublishScope* scope) {
    CheckMap(node, path, {"event_types", "source_organisations"});
    if (node["event_types"]) {
      EnumList(node["event_types"], Child(path, "event_types"), icr::v1::EventType_descriptor(),
               "an EventType", &scope->all_types, &scope->event_types);
    }
    if (node["source_organisations"]) {
      for (const Item& item :
           List(node["source_organisations"], Child(path, "source_organisations"))) {
        if (item.value == "*") {
          scope->all_source_organisations = true;
        } else {
          scope->source_organisations.insert(OdsCode(item.node, item.path));
        }
      }
    }
  }

  void ParseSubscribe(const YAML::Node& node, const std::string& path, SubscribeScope* scope) {
    CheckMap(node, path,
             {"event_types", "places", "addressed_to", "own_organisation", "care_relationship"});
    if (node["event_types"]) {
      EnumList(node["event_types"], Child(path, "event_types"), icr::v1::EventType_descriptor(),
               "an EventType", &scope->all_types, &scope->event_types);
    }
    if (node["places"]) {
      EnumList(node["places"], Child(path, "places"), icr::v1::Place_descriptor(), "a Place",
               nullptr, &scope->places);
    }
    if (node["addressed_to"]) {
      for (const Item& item : List(node["addressed_to"], Child(path, "addressed_to"))) {
        const size_t slash = item.value.find('/');
        const std::string org = item.value.substr(0, slash);
        const bool team_ok =
            slash == std::string::npos ||
            (slash + 1 < item.value.size() && item.value.find('/', slash + 1) == std::string::npos);
        if (!IsOdsCode(org) || !team_ok) {
          Fail(item.node, item.path,
               "'" + item.value +
                   "' is not an addressee (\"ORG\" or \"ORG/TEAM\", ORG an ODS code: 3..10 of "
                   "A-Z 0-9)");
        }
        scope->addressed_to.insert(item.value);
      }
    }
    for (const char* flag : {"own_organisation", "care_relationship"}) {
      if (!node[flag]) continue;
      const bool value = Bool(node[flag], Child(path, flag));
      // Without addressed_to there is no addressee condition for the flag
      // to widen: the scope would already be every addressee, which is
      // unlikely to be what the author meant.
      if (value && scope->addressed_to.empty()) {
        Fail(node[flag], Child(path, flag),
             "needs addressed_to: it widens the addressee condition, and without one every "
             "addressee is already in scope");
      }
      (std::string_view(flag) == "own_organisation" ? scope->own_organisation
                                                    : scope->care_relationship) = value;
    }
  }

  void ParseRetention(const YAML::Node& node, const std::string& path, RetentionRules* rules) {
    CheckMap(node, path, {"default", "review", "types"});
    if (node["default"]) rules->default_seconds = Duration(node["default"], Child(path, "default"));
    if (node["review"]) rules->review_seconds = Duration(node["review"], Child(path, "review"));
    if (node["types"]) {
      const std::string types_path = Child(path, "types");
      CheckMap(node["types"], types_path, {});
      for (const auto& entry : node["types"]) {
        const Item type{Key(entry.first, types_path), entry.first, types_path};
        const int value = EnumValue(type, icr::v1::EventType_descriptor(), "an EventType");
        rules->seconds_by_type[value] = Duration(entry.second, Child(types_path, type.value));
      }
    }
  }

  // "<n>y" (365 days), "<n>d", "<n>h", "<n>m", "<n>s"; n >= 1.
  int64_t Duration(const YAML::Node& node, const std::string& path) const {
    const std::string text = Scalar(node, path);
    const auto fail = [&] {
      Fail(node, path,
           "'" + text + "' is not a duration (a whole number and a unit: 8y, 90d, 12h, 30m, 45s)");
    };
    if (text.size() < 2 || text.size() > 16) fail();
    int64_t unit = 0;
    switch (text.back()) {
      case 'y':
        unit = int64_t{365} * 86400;
        break;
      case 'd':
        unit = 86400;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'm':
        unit = 60;
        break;
      case 's':
        unit = 1;
        break;
      default:
        fail();
    }
    int64_t n = 0;
    for (size_t i = 0; i + 1 < text.size(); ++i) {
      const char c = text[i];
      if (c < '0' || c > '9') fail();
      if (n > (std::numeric_limits<int64_t>::max() / unit - (c - '0')) / 10) {
        Fail(node, path, "'" + text + "' is too long a duration");
      }
      n = n * 10 + (c - '0');
    }
    if (n == 0) Fail(node, path, "'" + text + "': a duration must be at least 1" + text.back());
    return n * unit;
  }

  const std::string source_;
};

store::Status Policy::Parse(std::string_view yaml, const std::string& source,
                            std::shared_ptr<const Policy>* out) {
  try {
    *out = PolicyParser(source).Run(yaml);
    return store::Status::Ok();
  } catch (const PolicyError& e) {
    return store::Status::InvalidArgument(e.message);
  } catch (const YAML::Exception& e) {
    std::string message = source;
    if (!e.mark.is_null()) message += ":" + std::to_string(e.mark.line + 1);
    return store::Status::InvalidArgument(message + ": not valid YAML: " + e.msg);
  }
}

store::Status Policy::Load(const std::string& path, std::shared_ptr<const Policy>* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string message = "cannot open policy file " + path + ": " + std::strerror(err);
    return err == ENOENT ? store::Status::NotFound(message) : store::Status::Unavailable(message);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return store::Status::Unavailable("cannot read policy file " + path + ": " +
                                      std::strerror(errno));
  }
  return Parse(text.str(), path, out);
}

std::shared_ptr<const Policy> Policy::Development() {
  static const std::shared_ptr<const Policy> development = [] {
    auto policy = std::shared_ptr<Policy>(new Policy());
    policy->source_ = "<development>";
    auto full = BuiltInFull();
    policy->profiles_["FULL"] = full;
    Principal p;
    p.id = "local-developer";
    p.organisation = "DEV";
    p.role = "DEVELOPER";
    p.profile = full;
    p.publish.all_types = true;
    p.publish.all_source_organisations = true;
    p.subscribe.all_types = true;
    const EnumDescriptor* purposes = icr::v1::Purpose_descriptor();
    for (int i = 0; i < purposes->value_count(); ++i) {
      if (purposes->value(i)->number() != 0) p.purposes.insert(purposes->value(i)->number());
    }
    p.default_legal_basis = "development (no real data)";
    for (std::string_view q : kQueryNames) p.queries.insert(std::string(q));
    policy->principals_.emplace(p.id, std::move(p));
    return std::shared_ptr<const Policy>(std::move(policy));
  }();
  return development;
}

const Principal* Policy::Find(std::string_view id) const {
  auto it = principals_.find(id);
  return it == principals_.end() ? nullptr : &it->second;
}

PolicyHolder::PolicyHolder(std::shared_ptr<const Policy> initial, std::string path)
    : path_(std::move(path)), policy_(std::move(initial)) {}

std::shared_ptr<const Policy> PolicyHolder::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return policy_;
}

store::Status PolicyHolder::Reload() {
  if (path_.empty()) {
    return store::Status::FailedPrecondition(
        "the policy was not loaded from a file, so there is nothing to reload");
  }
  std::lock_guard<std::mutex> reload_lock(reload_mu_);
  std::shared_ptr<const Policy> next;
  store::Status status = Policy::Load(path_, &next);
  if (!status.ok()) return status;
  std::lock_guard<std::mutex> lock(mu_);
  policy_ = std::move(next);
  ++version_;
  return store::Status::Ok();
}

uint64_t PolicyHolder::version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return version_;
}

}  // namespace icr::broker::governance
