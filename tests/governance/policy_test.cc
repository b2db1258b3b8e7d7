// The policy file: parsing, every kind of error (each names file:line and
// the key path), the built-in FULL profile, the development policy,
// reloading, and the sample Coventry & Warwickshire policy.
#include "broker/governance/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "broker/governance/scope.h"
#include "icr/v1/events.pb.h"
#include "icr/v1/governance_types.pb.h"

namespace icr::broker::governance {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The example from policy.h.
constexpr char kExample[] = R"yaml(profiles:
  FULL: { fields: ["*"], summary: ["*"], sensitive: [SAFEGUARDING, SEXUAL_HEALTH, MENTAL_HEALTH_DETENTION] }
  BROKERAGE:
    fields: [placement_request.request_id, placement_request.needs, placement_offer, escalation]
    summary: [location, open_referral, care_package]
    sensitive: []
principals:
  - id: cov-brokerage
    organisation: "COV01"
    role: BROKERAGE
    profile: BROKERAGE
    publish: { event_types: [PLACEMENT_OFFER, PLACEMENT_CANCELLATION], source_organisations: [COV01] }
    subscribe: { event_types: [PLACEMENT_REQUEST, ESCALATION], places: [COVENTRY] }
    purposes: [DIRECT_CARE]
    legal_basis: "UK GDPR 6(1)(e), 9(2)(h)"
    queries: [care_summary, referrals]
    max_connections: 8
  - id: uhcw-epr
    organisation: RKB
    profile: FULL
retention:
  default: 8y
  review: 30d
  types: { DEMOGRAPHICS_UPDATE: 7y, ED_ATTENDANCE: 90d }
)yaml";

std::string ParseError(const std::string& yaml) {
  std::shared_ptr<const Policy> policy;
  store::Status status = Policy::Parse(yaml, "policy.yaml", &policy);
  EXPECT_FALSE(status.ok()) << yaml;
  EXPECT_EQ(status.code(), store::StatusCode::kInvalidArgument);
  EXPECT_EQ(policy, nullptr) << "nothing is half-loaded";
  return status.message();
}

// A one-principal policy with `extra` appended to the principal (indented
// by four spaces); the principal starts on line 2.
std::string WithPrincipal(const std::string& extra) {
  return "principals:\n"
         "  - id: p1\n"
         "    organisation: RKB\n"
         "    profile: FULL\n" +
         extra;
}

TEST(PolicyTest, ParsesTheExample) {
  std::shared_ptr<const Policy> policy;
  ASSERT_TRUE(Policy::Parse(kExample, "policy.yaml", &policy).ok());
  EXPECT_EQ(policy->source(), "policy.yaml");
  EXPECT_EQ(policy->principal_count(), 2u);
  EXPECT_EQ(policy->profile_count(), 2u);
  EXPECT_EQ(policy->Find("nobody"), nullptr);

  const Principal* p = policy->Find("cov-brokerage");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->organisation, "COV01");
  EXPECT_EQ(p->role, "BROKERAGE");
  ASSERT_NE(p->profile, nullptr);
  EXPECT_EQ(p->profile->name, "BROKERAGE");
  EXPECT_FALSE(p->profile->full());
  EXPECT_FALSE(p->profile->all_fields);
  EXPECT_EQ(p->profile->fields.count("placement_request.needs"), 1u);
  EXPECT_EQ(p->profile->summary_fields,
            (std::set<std::string>{"location", "open_referral", "care_package"}));
  EXPECT_TRUE(p->profile->sensitive.empty());
  EXPECT_FALSE(p->publish.all_types);
  EXPECT_EQ(p->publish.event_types,
            (std::set<int>{icr::v1::PLACEMENT_OFFER, icr::v1::PLACEMENT_CANCELLATION}));
  EXPECT_EQ(p->publish.source_organisations, (std::set<std::string>{"COV01"}));
  EXPECT_EQ(p->subscribe.places, (std::set<int>{icr::v1::COVENTRY}));
  EXPECT_TRUE(p->subscribe.addressed_to.empty());
  EXPECT_EQ(p->purposes, (std::set<int>{icr::v1::DIRECT_CARE}));
  EXPECT_EQ(p->default_legal_basis, "UK GDPR 6(1)(e), 9(2)(h)");
  EXPECT_TRUE(p->HasQuery("care_summary"));
  EXPECT_FALSE(p->HasQuery("audit"));
  EXPECT_EQ(p->max_connections, 8u);

  const Principal* epr = policy->Find("uhcw-epr");
  ASSERT_NE(epr, nullptr);
  EXPECT_TRUE(epr->profile->full());
  EXPECT_EQ(epr->purposes, (std::set<int>{icr::v1::DIRECT_CARE})) << "the default purpose";
  EXPECT_TRUE(epr->queries.empty());
  EXPECT_FALSE(epr->publish.all_types);
  EXPECT_TRUE(epr->publish.event_types.empty()) << "no publish section: nothing";
  EXPECT_EQ(epr->max_connections, 0u);

  const RetentionRules& r = policy->retention();
  EXPECT_EQ(r.default_seconds, int64_t{8} * 365 * 86400);
  EXPECT_EQ(r.review_seconds, int64_t{30} * 86400);
  EXPECT_EQ(r.SecondsFor(icr::v1::DEMOGRAPHICS_UPDATE), int64_t{7} * 365 * 86400);
  EXPECT_EQ(r.SecondsFor(icr::v1::ED_ATTENDANCE), int64_t{90} * 86400);
  EXPECT_EQ(r.SecondsFor(icr::v1::ADMISSION), r.default_seconds);
}

TEST(PolicyTest, BuiltInFullProfileUnlessTheFileDefinesOne) {
  std::shared_ptr<const Policy> policy;
  ASSERT_TRUE(Policy::Parse(WithPrincipal(""), "policy.yaml", &policy).ok());
  EXPECT_EQ(policy->profile_count(), 1u);
  EXPECT_TRUE(policy->Find("p1")->profile->full());

  // A file's own FULL replaces the built-in one.
  ASSERT_TRUE(Policy::Parse("profiles:\n  FULL: { fields: [\"*\"] }\n" + WithPrincipal(""),
                            "policy.yaml", &policy)
                  .ok());
  EXPECT_FALSE(policy->Find("p1")->profile->full());
  EXPECT_TRUE(policy->Find("p1")->profile->all_fields);
  EXPECT_FALSE(policy->Find("p1")->profile->all_summary);
}

TEST(PolicyTest, StarsAndDefaults) {
  std::shared_ptr<const Policy> policy;
  ASSERT_TRUE(Policy::Parse(WithPrincipal("    publish: { event_types: \"*\", "
                                          "source_organisations: [\"*\"] }\n"
                                          "    subscribe: { event_types: [\"*\"], addressed_to: "
                                          "[RKB, RKB/WARD-1], own_organisation: yes, "
                                          "care_relationship: true }\n"
                                          "    purposes: [\"*\"]\n"
                                          "    queries: [\"*\"]\n"),
                            "policy.yaml", &policy)
                  .ok());
  const Principal* p = policy->Find("p1");
  EXPECT_TRUE(p->publish.all_types);
  EXPECT_TRUE(p->publish.all_source_organisations);
  EXPECT_TRUE(p->subscribe.all_types);
  EXPECT_EQ(p->subscribe.addressed_to, (std::set<std::string>{"RKB", "RKB/WARD-1"}));
  EXPECT_TRUE(p->subscribe.own_organisation);
  EXPECT_TRUE(p->subscribe.care_relationship);
  EXPECT_EQ(p->purposes, (std::set<int>{icr::v1::DIRECT_CARE, icr::v1::SERVICE_PLANNING,
                                        icr::v1::RESEARCH, icr::v1::SERVICE_EVALUATION}));
  EXPECT_EQ(p->queries.size(), std::size(kQueryNames));
  // An empty document section is allowed; an absent retention section keeps
  // the defaults.
  EXPECT_EQ(policy->retention().default_seconds, RetentionRules().default_seconds);
}

TEST(PolicyTest, ErrorsNameFileLineAndKeyPath) {
  // The example in policy.h, exactly.
  EXPECT_EQ(ParseError(WithPrincipal("    subscribe:\n"
                                     "      places: [COVENTRY, LONDON]\n")),
            "policy.yaml:6: principals[0].subscribe.places[1]: 'LONDON' is not a Place "
            "(COVENTRY, RUGBY, WARWICKSHIRE_NORTH, SOUTH_WARWICKSHIRE)");

  struct Case {
    std::string yaml;
    std::string expected_prefix;  // "policy.yaml:<line>: <path>: "
    std::string expected_detail;
  };
  const std::vector<Case> cases = {
      // Unknown keys, at every level, name the key and the allowed ones.
      {"principal: []\n",
       "policy.yaml:1: ", "unknown key 'principal' (allowed: profiles, principals, retention)"},
      {WithPrincipal("    subscibe: {}\n"), "policy.yaml:5: principals[0]: ",
       "unknown key 'subscibe' (allowed: id, organisation, role, profile, publish, subscribe, "
       "purposes, legal_basis, queries, max_connections)"},
      {WithPrincipal("    publish: { types: [ADMISSION] }\n"),
       "policy.yaml:5: principals[0].publish: ", "unknown key 'types'"},
      {"profiles:\n  X: { field: [] }\n",
       "policy.yaml:2: profiles.X: ", "unknown key 'field' (allowed: fields, summary, sensitive)"},
      {"retention:\n  defaults: 8y\n",
       "policy.yaml:2: retention: ", "unknown key 'defaults' (allowed: default, review, types)"},
      // Duplicates.
      {WithPrincipal("  - id: p1\n    organisation: RJC\n    profile: FULL\n"),
       "policy.yaml:5: principals[1].id: ",
       "duplicate principal id 'p1' (first defined on line 2)"},
      {WithPrincipal("    role: A\n    role: B\n"),
       "policy.yaml:6: principals[0]: ", "duplicate key 'role'"},
      {"profiles:\n  A: {}\n  A: {}\n", "policy.yaml:3: profiles: ", "duplicate key 'A'"},
      // Required keys and references.
      {"principals:\n  - id: p1\n    profile: FULL\n",
       "policy.yaml:2: principals[0]: ", "'organisation' is required"},
      {"principals:\n  - id: p1\n    organisation: RKB\n    profile: BROKERAGE\n",
       "policy.yaml:4: principals[0].profile: ", "unknown profile 'BROKERAGE' (profiles: FULL)"},
      {"principals:\n  - id: Cov_Brokerage\n    organisation: RKB\n    profile: FULL\n",
       "policy.yaml:2: principals[0].id: ", "'Cov_Brokerage' is not a principal id"},
      {"principals:\n  p1: {}\n",
       "policy.yaml:2: principals: ", "expected a list of principals, got a map"},
      // ODS codes.
      {"principals:\n  - id: p1\n    organisation: rkb\n    profile: FULL\n",
       "policy.yaml:3: principals[0].organisation: ",
       "'rkb' is not an ODS code (3..10 of A-Z 0-9)"},
      {WithPrincipal("    publish: { source_organisations: [RKB, X1] }\n"),
       "policy.yaml:5: principals[0].publish.source_organisations[1]: ", "'X1' is not an ODS code"},
      {WithPrincipal("    subscribe: { addressed_to: [RKB/] }\n"),
       "policy.yaml:5: principals[0].subscribe.addressed_to[0]: ",
       "'RKB/' is not an addressee (\"ORG\" or \"ORG/TEAM\""},
      // Enum names.
      {WithPrincipal("    publish: { event_types: [ADMISSION, ADMITTED] }\n"),
       "policy.yaml:5: principals[0].publish.event_types[1]: ",
       "'ADMITTED' is not an EventType (DEMOGRAPHICS_UPDATE, ADMISSION, "},
      {WithPrincipal("    subscribe:\n      event_types: [EVENT_TYPE_UNSPECIFIED]\n"),
       "policy.yaml:6: principals[0].subscribe.event_types[0]: ",
       "'EVENT_TYPE_UNSPECIFIED' is not an EventType"},
      {WithPrincipal("    purposes: [DIRECT_CARE, MARKETING]\n"),
       "policy.yaml:5: principals[0].purposes[1]: ",
       "'MARKETING' is not a Purpose (DIRECT_CARE, SERVICE_PLANNING, RESEARCH, "
       "SERVICE_EVALUATION)"},
      {WithPrincipal("    queries: [care_summary, everything]\n"),
       "policy.yaml:5: principals[0].queries[1]: ",
       "'everything' is not a query (patient_history, care_summary, referrals, flow_metrics, "
       "teams, subscriptions, status, audit, retention, policy)"},
      {"profiles:\n  X:\n    sensitive: [SAFEGUARDING, HIV]\n",
       "policy.yaml:3: profiles.X.sensitive[1]: ",
       "'HIV' is not a SensitiveCategory (SAFEGUARDING, SEXUAL_HEALTH, MENTAL_HEALTH_DETENTION)"},
      // Other values.
      {WithPrincipal("    max_connections: -1\n"),
       "policy.yaml:5: principals[0].max_connections: ", "'-1' is not a connection count"},
      {WithPrincipal("    max_connections: 4294967296\n"),
       "policy.yaml:5: principals[0].max_connections: ", "'4294967296' is not a connection count"},
      {WithPrincipal("    subscribe: { addressed_to: [RKB], own_organisation: maybe }\n"),
       "policy.yaml:5: principals[0].subscribe.own_organisation: ",
       "expected true or false, got 'maybe'"},
      {WithPrincipal("    subscribe: { care_relationship: true }\n"),
       "policy.yaml:5: principals[0].subscribe.care_relationship: ", "needs addressed_to"},
      {WithPrincipal("    role: [A, B]\n"),
       "policy.yaml:5: principals[0].role: ", "expected a single value, got a list"},
      // Durations.
      {"retention:\n  default: 8 years\n", "policy.yaml:2: retention.default: ",
       "'8 years' is not a duration (a whole number and a unit: 8y, 90d, 12h, 30m, 45s)"},
      {"retention:\n  review: 0d\n",
       "policy.yaml:2: retention.review: ", "a duration must be at least 1d"},
      {"retention:\n  review: 30w\n",
       "policy.yaml:2: retention.review: ", "'30w' is not a duration"},
      {"retention:\n  review: -3d\n",
       "policy.yaml:2: retention.review: ", "'-3d' is not a duration"},
      {"retention:\n  default: 999999999999y\n",
       "policy.yaml:2: retention.default: ", "too long a duration"},
      {"retention:\n  types:\n    ED_ATTENDANCE: 8y\n    ED: 8y\n",
       "policy.yaml:4: retention.types: ", "'ED' is not an EventType"},
      {"retention:\n  types: { ED_ATTENDANCE: 8x }\n",
       "policy.yaml:2: retention.types.ED_ATTENDANCE: ", "'8x' is not a duration"},
      // Profile field paths, checked against the CareEvent descriptor.
      {"profiles:\n  X:\n    fields: [placement_request, placement_requests.needs]\n",
       "policy.yaml:3: profiles.X.fields[1]: ",
       "'placement_requests' is not a CareEvent payload (demographics_update, admission, "},
      {"profiles:\n  X:\n    fields: [nhs_number]\n",
       "policy.yaml:3: profiles.X.fields[0]: ", "'nhs_number' is not a CareEvent payload"},
      {"profiles:\n  X:\n    fields:\n      - placement_request.needs.dementa\n",
       "policy.yaml:4: profiles.X.fields[0]: ",
       "'dementa' is not a field of icr.v1.CareNeeds (dementia, end_of_life, "},
      {"profiles:\n  X:\n    fields: [placement_request.contact.phone]\n",
       "policy.yaml:3: profiles.X.fields[0]: ",
       "'contact' has no fields, so 'phone' cannot follow it"},
      {"profiles:\n  X:\n    fields: [placement_request.]\n",
       "policy.yaml:3: profiles.X.fields[0]: ", "'placement_request.' is not a field path"},
      {"profiles:\n  X:\n    summary: [location, diagnoses]\n",
       "policy.yaml:3: profiles.X.summary[1]: ",
       "'diagnoses' is not a CareSummary field (nhs_number, requested_nhs_number, "},
      {"profiles:\n  x y: {}\n", "policy.yaml:2: profiles: ", "'x y' is not a profile name"},
      // Not YAML at all, or not a map.
      {"principals: [\n", "policy.yaml:2: ", "not valid YAML"},
      {"- a\n- b\n", "policy.yaml:1: ", "expected a map, got a list"},
      {"", "policy.yaml: ", "the policy is empty"},
  };
  for (const Case& c : cases) {
    const std::string message = ParseError(c.yaml);
    EXPECT_THAT(message, StartsWith(c.expected_prefix)) << c.yaml;
    EXPECT_THAT(message, HasSubstr(c.expected_detail)) << c.yaml;
  }
}

TEST(PolicyTest, Development) {
  std::shared_ptr<const Policy> policy = Policy::Development();
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->principal_count(), 1u);
  const Principal* p = policy->Find("local-developer");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->organisation, "DEV");
  EXPECT_EQ(p->role, "DEVELOPER");
  EXPECT_EQ(p->profile->name, "FULL");
  EXPECT_TRUE(p->profile->full());
  EXPECT_TRUE(p->publish.all_types);
  EXPECT_TRUE(p->publish.all_source_organisations);
  EXPECT_TRUE(p->subscribe.all_types);
  EXPECT_TRUE(p->subscribe.places.empty());
  EXPECT_TRUE(p->subscribe.addressed_to.empty());
  EXPECT_EQ(p->purposes.size(), 4u);
  for (std::string_view q : kQueryNames) EXPECT_TRUE(p->HasQuery(q)) << q;

  icr::v1::CareEvent event;
  event.set_source_organisation("RKB");
  event.mutable_discharge_referral();
  EXPECT_EQ(CheckPublish(*p, event), "");
  event.set_event_type(icr::v1::DISCHARGE_REFERRAL);
  EXPECT_TRUE(InSubscribeScope(*p, event, nullptr));
}

// kExample with `principal` added to its principals.
std::string ExampleWith(const std::string& principal) {
  std::string yaml = kExample;
  yaml.insert(yaml.find("retention:"), principal);
  return yaml;
}

class PolicyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("icr-policy-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "policy.yaml").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& text) {
    std::ofstream out(path_, std::ios::trunc);
    out << text;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(PolicyFileTest, LoadNamesThePath) {
  std::shared_ptr<const Policy> policy;
  store::Status status = Policy::Load(path_, &policy);
  EXPECT_EQ(status.code(), store::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(path_));

  Write(WithPrincipal("    profile: FULL\n"));
  status = Policy::Load(path_, &policy);
  EXPECT_EQ(status.code(), store::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), StartsWith(path_ + ":5: principals[0]: duplicate key 'profile'"));
  EXPECT_EQ(policy, nullptr);

  Write(kExample);
  ASSERT_TRUE(Policy::Load(path_, &policy).ok());
  EXPECT_EQ(policy->source(), path_);
}

TEST_F(PolicyFileTest, ReloadKeepsTheOldPolicyOnErrorAndBumpsTheVersionOnSuccess) {
  Write(kExample);
  std::shared_ptr<const Policy> initial;
  ASSERT_TRUE(Policy::Load(path_, &initial).ok());
  PolicyHolder holder(initial, path_);
  EXPECT_EQ(holder.version(), 1u);
  EXPECT_EQ(holder.path(), path_);
  EXPECT_EQ(holder.Get(), initial);

  // A broken file: refused with the reason, the old policy stays.
  Write(ExampleWith("  - id: cov-brokerage\n    organisation: COV01\n    profile: FULL\n"));
  store::Status status = holder.Reload();
  EXPECT_EQ(status.code(), store::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("duplicate principal id 'cov-brokerage'"));
  EXPECT_EQ(holder.Get(), initial);
  EXPECT_EQ(holder.version(), 1u);

  // A missing file: likewise.
  std::filesystem::remove(path_);
  EXPECT_EQ(holder.Reload().code(), store::StatusCode::kNotFound);
  EXPECT_EQ(holder.Get(), initial);
  EXPECT_EQ(holder.version(), 1u);

  // A good file with a new principal: swapped in, version 2. Snapshots taken
  // before stay valid.
  std::shared_ptr<const Policy> snapshot = holder.Get();
  Write(ExampleWith("  - id: new-team\n    organisation: RJC\n    profile: BROKERAGE\n"));
  ASSERT_TRUE(holder.Reload().ok());
  EXPECT_EQ(holder.version(), 2u);
  EXPECT_NE(holder.Get(), initial);
  EXPECT_NE(holder.Get()->Find("new-team"), nullptr);
  EXPECT_EQ(snapshot->Find("new-team"), nullptr);
  ASSERT_TRUE(holder.Reload().ok());
  EXPECT_EQ(holder.version(), 3u);
}

TEST_F(PolicyFileTest, ReadersKeepWorkingWhileThePolicyIsReloaded) {
  Write(kExample);
  std::shared_ptr<const Policy> initial;
  ASSERT_TRUE(Policy::Load(path_, &initial).ok());
  PolicyHolder holder(initial, path_);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  std::atomic<uint64_t> reads{0};
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        std::shared_ptr<const Policy> snapshot = holder.Get();
        const Principal* p = snapshot->Find("cov-brokerage");
        if (p == nullptr || p->profile->name != "BROKERAGE") ADD_FAILURE() << "torn policy";
        EXPECT_GE(holder.version(), 1u);
        ++reads;
      }
    });
  }
  std::vector<std::thread> reloaders;
  for (int t = 0; t < 2; ++t) {
    reloaders.emplace_back([&] {
      for (int i = 0; i < 25; ++i) EXPECT_TRUE(holder.Reload().ok());
    });
  }
  for (auto& t : reloaders) t.join();
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(holder.version(), 51u);
  EXPECT_GT(reads.load(), 0u);
}

TEST(PolicyHolderTest, WithoutAPathIsNotReloadable) {
  PolicyHolder holder(Policy::Development());
  EXPECT_EQ(holder.Reload().code(), store::StatusCode::kFailedPrecondition);
  EXPECT_EQ(holder.version(), 1u);
  EXPECT_EQ(holder.Get(), Policy::Development());
}

// The sample policy in deploy/policy/.
class SamplePolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::Status status = Policy::Load(ICR_SAMPLE_POLICY, &policy_);
    ASSERT_TRUE(status.ok()) << status.message();
  }
  const Principal& Get(const std::string& id) {
    const Principal* p = policy_->Find(id);
    EXPECT_NE(p, nullptr) << id;
    static const Principal none;
    return p != nullptr ? *p : none;
  }
  static icr::v1::CareEvent Event(icr::v1::EventType type, const std::string& source) {
    icr::v1::CareEvent event;
    event.set_source_organisation(source);
    event.set_nhs_number("9990000018");
    const auto* field = icr::v1::CareEvent::descriptor()->FindFieldByNumber(type);
    event.GetReflection()->MutableMessage(&event, field);
    event.set_event_type(type);
    return event;
  }

  std::shared_ptr<const Policy> policy_;
};

TEST_F(SamplePolicyTest, Decisions) {
  EXPECT_EQ(policy_->principal_count(), 11u);

  // Brokerage offers placements but does not refer.
  const Principal& brokerage = Get("cov-brokerage");
  EXPECT_EQ(CheckPublish(brokerage, Event(icr::v1::PLACEMENT_OFFER, "COV01")), "");
  EXPECT_EQ(CheckPublish(brokerage, Event(icr::v1::DISCHARGE_REFERRAL, "COV01")),
            "principal 'cov-brokerage' may not publish DISCHARGE_REFERRAL (policy allows: "
            "PLACEMENT_OFFER, PLACEMENT_CANCELLATION)");
  EXPECT_FALSE(brokerage.profile->full());
  EXPECT_TRUE(brokerage.profile->sensitive.empty());

  // The GP system publishes as its practice only.
  const Principal& gp = Get("gp-system");
  EXPECT_EQ(CheckPublish(gp, Event(icr::v1::GP_REGISTRATION, "M84001")), "");
  EXPECT_EQ(CheckPublish(gp, Event(icr::v1::GP_REGISTRATION, "RKB")),
            "principal 'gp-system' may not publish as organisation 'RKB' (policy allows: M84001)");

  // Warwickshire brokerage has no source_organisations: its own only.
  EXPECT_EQ(CheckPublish(Get("wcc-brokerage"), Event(icr::v1::PLACEMENT_OFFER, "COV01")),
            "principal 'wcc-brokerage' may not publish as organisation 'COV01' (policy allows: "
            "WCC01)");

  // ICB analytics: service planning only, no publishing, flow metrics only.
  const Principal& icb = Get("icb-analytics");
  EXPECT_EQ(icb.organisation, "QWU");
  EXPECT_EQ(icb.purposes, (std::set<int>{icr::v1::SERVICE_PLANNING}));
  EXPECT_FALSE(icb.purposes.count(icr::v1::DIRECT_CARE));
  EXPECT_NE(CheckPublish(icb, Event(icr::v1::DISCHARGE_REFERRAL, "QWU")), "");
  EXPECT_TRUE(icb.HasQuery("flow_metrics"));
  EXPECT_FALSE(icb.HasQuery("patient_history"));
  EXPECT_FALSE(icb.profile->all_fields);
  EXPECT_TRUE(icb.profile->summary_fields.empty());

  // The operator sees no care data but may run the broker.
  const Principal& op = Get("icr-operator");
  for (const char* q : {"audit", "retention", "policy", "subscriptions", "status"}) {
    EXPECT_TRUE(op.HasQuery(q)) << q;
  }
  EXPECT_FALSE(op.HasQuery("patient_history"));
  EXPECT_FALSE(op.HasQuery("care_summary"));
  EXPECT_TRUE(op.profile->fields.empty());

  // Providers receive only what is addressed to them.
  const Principal& provider = Get("acorn-care");
  icr::v1::CareEvent request = Event(icr::v1::PLACEMENT_REQUEST, "COV01");
  EXPECT_FALSE(InSubscribeScope(provider, request, nullptr));
  request.mutable_addressee()->set_organisation("VN4X2");
  request.mutable_addressee()->set_team_code("HOME-SUPPORT");
  EXPECT_TRUE(InSubscribeScope(provider, request, nullptr));

  // The acute trusts publish as themselves.
  EXPECT_EQ(CheckPublish(Get("uhcw-epr"), Event(icr::v1::ADMISSION, "RKB")), "");
  EXPECT_NE(CheckPublish(Get("uhcw-epr"), Event(icr::v1::ADMISSION, "RJC")), "");
  EXPECT_EQ(CheckPublish(Get("swft-epr"), Event(icr::v1::ADMISSION, "RJC")), "");
}

}  // namespace
}  // namespace icr::broker::governance
