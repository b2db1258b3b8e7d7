// Information governance end to end (docs/governance.md), through the real
// path: a broker with mutual TLS on loopback, real certificates from
// deploy/make-test-pki.sh, a real policy file, gRPC clients presenting them.
//
//  - Identity: a certificate for the wrong organisation, or a CN the policy
//    does not know, is UNAUTHENTICATED and audited. (No certificate, an
//    unknown CA and an expired certificate are refused at the handshake:
//    tls_test.)
//  - Publish scope: a principal may publish only its types, as its
//    organisations; nothing of a refused batch is stored.
//  - The property: 20 principals with random scopes and profiles against
//    thousands of random events: each receives exactly the events in its
//    scope (an independent oracle here), never a field outside its profile
//    or a sensitive item it is not allowed, and the audit trail holds one
//    DELIVERED entry per delivery, one to one.
//  - Objections and opt-outs, minimised summaries and history, denials
//    audited, policy reload on a live stream, connections per principal at
//    the limit and one past it, an audit trail that cannot be written
//    discloses nothing, and an edited audit record is found.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "icr/v1/broker.grpc.pb.h"
#include "icr/v1/governance.grpc.pb.h"
#include "icr/v1/workflow.grpc.pb.h"
#include "tests/support/fault_fs.h"
#include "tests/support/test_support.h"

namespace icr {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using v1::CareEvent;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// The principals of the property test: p00 .. p19, spread over these
// organisations.
const std::vector<std::string> kOrgs = {"RKB", "RJC", "COV01", "WAR01", "M85001"};
std::string PropertyPrincipal(int i) {
  char name[8];
  std::snprintf(name, sizeof(name), "p%02d", i);
  return name;
}

// Certificates for every principal the tests use, made once per run.
class Pki {
 public:
  static const Pki& Get() {
    static Pki* pki = new Pki();
    return *pki;
  }
  std::string Path(const std::string& file) const { return dir_.path() + "/" + file; }

 private:
  Pki() {
    std::vector<std::string> argv = {"/bin/bash", std::string(ICR_SOURCE_DIR) + "/deploy/make-test-pki.sh",
                                     dir_.path(),
                                     "hospital-epr:RKB", "cov-brokerage:COV01",
                                     "icb-analytics:QWU", "gp-system:M85001",
                                     "icr-operator:QWU", "stranger:RKB", "publisher:RKB"};
    for (int i = 0; i < 20; ++i) {
      argv.push_back(PropertyPrincipal(i) + ":" + kOrgs[i % kOrgs.size()]);
    }
    testing::ProgramRun run = testing::RunProgram(argv, dir_.path());
    if (run.exit_code != 0) {
      throw std::runtime_error("make-test-pki.sh failed: " + run.start_error + run.err);
    }
  }
  testing::TempDir dir_;
};

// The policy of the named tests.
constexpr char kPolicy[] = R"yaml(
profiles:
  BROKERAGE:
    fields: [placement_request.request_id, placement_request.service_type,
             placement_request.place, placement_request.start_date,
             placement_request.needs, placement_request.contact]
    summary: [location, open_referral, care_package, flags]
    sensitive: []
principals:
  - id: hospital-epr
    organisation: RKB
    role: EPR
    profile: FULL
    publish: { event_types: ["*"], source_organisations: [RKB] }
    subscribe: { event_types: ["*"] }
    purposes: [DIRECT_CARE]
    queries: [patient_history, care_summary, referrals]
  - id: cov-brokerage
    organisation: COV01
    role: BROKERAGE
    profile: BROKERAGE
    publish: { event_types: [PLACEMENT_OFFER] }
    subscribe: { event_types: [PLACEMENT_REQUEST], places: [COVENTRY] }
    purposes: [DIRECT_CARE]
    legal_basis: "UK GDPR 6(1)(e), 9(2)(h)"
    queries: [care_summary, patient_history]
    max_connections: 2
  - id: icb-analytics
    organisation: QWU
    role: ANALYTICS
    profile: FULL
    subscribe: { event_types: ["*"] }
    purposes: [SERVICE_PLANNING]
    queries: [patient_history, care_summary, flow_metrics]
  - id: gp-system
    organisation: M85001
    role: GP
    profile: FULL
    publish: { event_types: [GP_REGISTRATION, CARE_SUMMARY_CONTRIBUTION] }
    subscribe: { event_types: [GP_REGISTRATION] }
  - id: icr-operator
    organisation: QWU
    role: OPERATOR
    profile: FULL
    queries: [audit, retention, policy, subscriptions, status]
retention:
  default: 8y
  review: 30d
)yaml";

std::shared_ptr<grpc::Channel> ChannelFor(int port, const std::string& cn, bool own_connection = false) {
  const Pki& pki = Pki::Get();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(pki.Path("ca.pem"));
  ssl.pem_cert_chain = ReadFile(pki.Path(cn + ".pem"));
  ssl.pem_private_key = ReadFile(pki.Path(cn + ".key"));
  grpc::ChannelArguments args;
  // A channel of its own: not shared with other channels to the same
  // address, so each is its own TCP connection.
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // By address, not "localhost": gRPC's DNS resolver (c-ares) leaks a little
  // in Debian's build, which LeakSanitizer reports. The server certificate
  // names IP 127.0.0.1 too.
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::SslCredentials(ssl), args);
}

class GovernanceE2eTest : public ::testing::Test {
 protected:
  void StartBroker(const std::string& policy, rocksdb::Env* env = nullptr) {
    const Pki& pki = Pki::Get();
    policy_path_ = dir_.path() + "/policy.yaml";
    WriteFile(policy_path_, policy);
    broker::BrokerOptions options = testing::TestBrokerOptions(dir_.path() + "/data");
    options.tls.certificate_file = pki.Path("server.pem");
    options.tls.private_key_file = pki.Path("server.key");
    options.tls.client_ca_file = pki.Path("ca.pem");
    options.policy_file = policy_path_;
    options.store_env = env;
    options.escalation.enabled = false;
    broker_ = std::make_unique<testing::TestBroker>(options);
  }

  std::unique_ptr<v1::Broker::Stub> Broker(const std::string& cn) {
    return v1::Broker::NewStub(ChannelFor(broker_->port(), cn));
  }
  std::unique_ptr<v1::Workflow::Stub> Workflow(const std::string& cn) {
    return v1::Workflow::NewStub(ChannelFor(broker_->port(), cn));
  }
  std::unique_ptr<v1::Governance::Stub> Governance(const std::string& cn) {
    return v1::Governance::NewStub(ChannelFor(broker_->port(), cn));
  }

  grpc::Status Publish(const std::string& cn, std::vector<CareEvent> events,
                       v1::PublishBatchResponse* out = nullptr) {
    v1::PublishBatchRequest req;
    for (auto& e : events) *req.add_events() = std::move(e);
    v1::PublishBatchResponse resp;
    auto ctx = testing::Context();
    grpc::Status s = Broker(cn)->PublishBatch(ctx.get(), req, &resp);
    if (out) *out = resp;
    return s;
  }

  // Every audit record about `nhs` (icrctl audit who-saw).
  std::vector<v1::AuditRecord> WhoSaw(const std::string& nhs) {
    auto gov = Governance("icr-operator");
    std::vector<v1::AuditRecord> all;
    std::string token;
    do {
      v1::WhoSawRequest req;
      req.set_nhs_number(nhs);
      req.set_page_size(1000);
      req.set_page_token(token);
      v1::WhoSawResponse resp;
      auto ctx = testing::Context();
      grpc::Status s = gov->WhoSaw(ctx.get(), req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      for (const auto& r : resp.records()) all.push_back(r);
      token = resp.next_page_token();
    } while (!token.empty());
    return all;
  }

  // Receives an ephemeral subscription's events from the start of the log
  // until it has been idle for two heartbeats after the log's end.
  grpc::Status ReceiveAll(const std::string& cn, std::vector<CareEvent>* out,
                          v1::Purpose purpose = v1::PURPOSE_UNSPECIFIED) {
    auto stub = Broker(cn);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::SubscribeRequest req;
    req.mutable_start()->set_earliest(true);
    req.set_position_order(true);
    req.set_heartbeat_ms(150);
    req.set_purpose(purpose);
    auto reader = stub->Subscribe(&ctx, req);
    v1::SubscribeResponse resp;
    int idle = 0;
    while (idle < 2 && reader->Read(&resp)) {
      if (resp.has_event()) {
        out->push_back(resp.event());
        idle = 0;
      } else if (resp.has_heartbeat()) {
        ++idle;
      }
    }
    if (idle < 2) return reader->Finish();  // the broker ended the stream: its status
    ctx.TryCancel();
    reader->Finish();
    return grpc::Status::OK;
  }

  testing::TempDir dir_;
  std::string policy_path_;
  // A disk that can fill up; declared before the broker, which uses it to
  // the end.
  std::shared_ptr<testing::FaultFs> fs_ = std::make_shared<testing::FaultFs>();
  std::unique_ptr<rocksdb::Env> env_ = rocksdb::NewCompositeEnv(fs_);
  std::unique_ptr<testing::TestBroker> broker_;
};

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

CareEvent Envelope(const std::string& nhs, const std::string& id, const std::string& org) {
  CareEvent e = testing::AdmissionEvent(nhs, id);
  e.set_source_organisation(org);
  e.set_source_system_id("sys-" + org);
  return e;
}

CareEvent PlacementRequest(const std::string& nhs, const std::string& id, v1::Place place) {
  CareEvent e = Envelope(nhs, id, "RKB");
  e.clear_admission();
  auto* r = e.mutable_placement_request();
  r->set_request_id("PR-" + id);
  r->set_service_type(v1::RESIDENTIAL);
  r->set_place(place);
  r->mutable_start_date()->set_year(2026);
  r->mutable_start_date()->set_month(12);
  r->mutable_start_date()->set_day(1);
  r->mutable_needs()->set_dementia(true);
  r->mutable_needs()->set_summary("Needs help with washing and dressing.");
  r->mutable_needs()->set_safeguarding_detail("Concern about financial abuse by a relative.");
  r->set_contact("Ward 33 ext 4471");
  e.set_priority(v1::URGENT);
  return e;
}

CareEvent Contribution(const std::string& nhs, const std::string& id, const std::string& org) {
  CareEvent e = Envelope(nhs, id, org);
  e.clear_admission();
  auto* c = e.mutable_care_summary_contribution();
  auto* p = c->add_problems();
  p->set_system("http://snomed.info/sct");
  p->set_code("38341003");
  p->set_display("Hypertension");
  auto* sh = c->add_problems();
  sh->set_system("http://snomed.info/sct");
  sh->set_code("240589008");
  sh->set_display("Chlamydial infection");
  sh->set_sensitivity(v1::SEXUAL_HEALTH);
  c->add_alerts("dementia");
  c->add_alerts("Safeguarding concern: see GP record");
  auto* a = c->add_allergies();
  a->set_system("http://snomed.info/sct");
  a->set_code("91936005");
  a->set_display("Penicillin allergy");
  return e;
}

// ---------------------------------------------------------------------------
// Identity and publish scope
// ---------------------------------------------------------------------------

TEST_F(GovernanceE2eTest, WrongOrganisationAndUnknownPrincipalAreRefusedAndAudited) {
  StartBroker(kPolicy);
  const std::string nhs = testing::TestNhsNumber(1);
  // wrong-org.pem: CN=cov-brokerage, O=RKB (the policy says COV01).
  for (const std::string cn : {"wrong-org", "stranger"}) {
    grpc::Status s = Publish(cn, {PlacementRequest(nhs, "w-" + cn, v1::COVENTRY)});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << cn;
    std::vector<CareEvent> got;
    grpc::Status sub = ReceiveAll(cn, &got);
    EXPECT_EQ(sub.error_code(), grpc::StatusCode::UNAUTHENTICATED) << cn;
    EXPECT_TRUE(got.empty());
  }
  grpc::Status s = Publish("wrong-org", {PlacementRequest(nhs, "w2", v1::COVENTRY)});
  EXPECT_NE(s.error_message().find("names organisation 'RKB'"), std::string::npos)
      << s.error_message();
  EXPECT_NE(s.error_message().find("belongs to 'COV01'"), std::string::npos);
  s = Publish("stranger", {PlacementRequest(nhs, "w3", v1::COVENTRY)});
  EXPECT_NE(s.error_message().find("not a principal of the policy"), std::string::npos)
      << s.error_message();
  // Nothing was stored.
  v1::GetStatusResponse status;
  auto ctx = testing::Context();
  ASSERT_TRUE(Broker("icr-operator")->GetStatus(ctx.get(), {}, &status).ok());
  EXPECT_EQ(status.last_position(), 0u);
}

TEST_F(GovernanceE2eTest, PublishScopeRefusesOtherTypesAndOtherOrganisationsStoringNothing) {
  StartBroker(kPolicy);
  const std::string nhs = testing::TestNhsNumber(2);
  // The brokerage team may publish offers only.
  grpc::Status s = Publish("cov-brokerage", {testing::ReferralEvent(nhs, "b-ref")});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("DISCHARGE_REFERRAL"), std::string::npos) << s.error_message();
  // A GP system cannot publish as the hospital; one bad event refuses the batch.
  CareEvent good = Contribution(nhs, "gp-1", "M85001");
  CareEvent as_hospital = Contribution(nhs, "gp-2", "RKB");
  s = Publish("gp-system", {good, as_hospital});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("events[1]"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("'RKB'"), std::string::npos) << s.error_message();
  v1::GetStatusResponse status;
  auto ctx = testing::Context();
  ASSERT_TRUE(Broker("icr-operator")->GetStatus(ctx.get(), {}, &status).ok());
  EXPECT_EQ(status.last_position(), 0u);
  // Alone, the good one is stored.
  EXPECT_TRUE(Publish("gp-system", {good}).ok());
  // Each denial left a DENIED record naming the principal.
  int denied = 0;
  for (const auto& r : WhoSaw(nhs)) {
    if (r.action() != v1::DENIED) continue;
    ++denied;
    EXPECT_TRUE(r.principal() == "cov-brokerage" || r.principal() == "gp-system");
  }
  EXPECT_EQ(denied, 2);
}

// ---------------------------------------------------------------------------
// The property: scopes, profiles and the audit trail
// ---------------------------------------------------------------------------

struct Scope {
  std::set<int> types;  // empty: all
  std::set<int> places;
  std::set<std::string> addressed_to;  // "ORG" or "ORG/TEAM"
  bool own_organisation = false;
  std::string organisation;
  std::string profile;
};

const std::vector<int> kTypes = {v1::ADMISSION,         v1::DISCHARGE_REFERRAL,
                                 v1::PLACEMENT_REQUEST, v1::CARE_SUMMARY_CONTRIBUTION,
                                 v1::MENTAL_HEALTH_EPISODE_START, v1::GP_REGISTRATION,
                                 v1::ED_ATTENDANCE};
const std::vector<int> kPlaces = {v1::COVENTRY, v1::RUGBY, v1::WARWICKSHIRE_NORTH,
                                  v1::SOUTH_WARWICKSHIRE};
const std::vector<std::string> kTeams = {"RKB/WARD-33", "COV01/BROKERAGE", "WAR01/BROKERAGE",
                                         "RJC/IDT"};

// The test's own reading of the scope rule (docs/governance.md).
bool InScope(const Scope& s, const CareEvent& e) {
  if (!s.types.empty() && !s.types.count(e.event_type())) return false;
  if (!s.places.empty() && !s.places.count(e.place())) return false;
  if (s.addressed_to.empty()) return true;
  if (e.has_addressee()) {
    if (s.addressed_to.count(e.addressee().organisation()) ||
        s.addressed_to.count(e.addressee().organisation() + "/" + e.addressee().team_code())) {
      return true;
    }
  }
  return s.own_organisation && e.source_organisation() == s.organisation;
}

// Profiles: payload paths allowed and sensitive categories allowed.
struct ProfileSpec {
  std::vector<std::string> fields;  // "*" or paths
  std::set<int> sensitive;
};
const std::map<std::string, ProfileSpec> kProfiles = {
    {"FULL", {{"*"}, {v1::SAFEGUARDING, v1::SEXUAL_HEALTH, v1::MENTAL_HEALTH_DETENTION}}},
    {"NARROW",
     {{"admission.encounter_id", "placement_request.place", "placement_request.needs.dementia",
       "discharge_referral.pathway", "gp_registration"},
      {}}},
    {"CLINICAL",
     {{"care_summary_contribution", "mental_health_episode_start", "discharge_referral.needs",
       "placement_request"},
      {v1::SEXUAL_HEALTH}}},
};

bool PathAllowed(const ProfileSpec& p, const std::string& path) {
  for (const std::string& f : p.fields) {
    if (f == "*" || path == f || path.rfind(f + ".", 0) == 0) return true;
  }
  return false;
}

// Every set leaf field under the payload, as a path, and the sensitive
// categories present.
void Walk(const Message& m, const std::string& prefix, std::set<std::string>* paths,
          std::set<int>* sensitive) {
  std::vector<const FieldDescriptor*> fields;
  m.GetReflection()->ListFields(m, &fields);
  if (m.GetDescriptor() == v1::Code::descriptor()) {
    const auto& code = static_cast<const v1::Code&>(m);
    if (code.sensitivity() != 0) sensitive->insert(code.sensitivity());
  }
  for (const FieldDescriptor* f : fields) {
    const std::string path = prefix.empty() ? f->name() : prefix + "." + f->name();
    if (f->name() == "safeguarding_detail") sensitive->insert(v1::SAFEGUARDING);
    if (f->name() == "detained") sensitive->insert(v1::MENTAL_HEALTH_DETENTION);
    if (f->name() == "alerts") {
      for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) {
        std::string a = m.GetReflection()->GetRepeatedString(m, f, i);
        for (char& c : a) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (a.find("safeguard") != std::string::npos) sensitive->insert(v1::SAFEGUARDING);
      }
    }
    if (f->type() != FieldDescriptor::TYPE_MESSAGE) {
      paths->insert(path);
      continue;
    }
    if (f->is_repeated()) {
      for (int i = 0; i < m.GetReflection()->FieldSize(m, f); ++i) {
        Walk(m.GetReflection()->GetRepeatedMessage(m, f, i), path, paths, sensitive);
      }
    } else {
      Walk(m.GetReflection()->GetMessage(m, f), path, paths, sensitive);
    }
  }
}

std::string Yaml(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + std::string("\"") + items[i] + "\"";
  return out + "]";
}

TEST_F(GovernanceE2eTest, TwentyPrincipalsReceiveExactlyTheirScopeMinimisedAndEveryDeliveryIsAudited) {
  std::mt19937 rng(20261123);
  auto coin = [&](double p) { return std::uniform_real_distribution<>(0, 1)(rng) < p; };
  // The policy: a publisher that may publish everything, and 20 principals.
  std::string policy = "profiles:\n";
  for (const auto& [name, p] : kProfiles) {
    if (name == "FULL") continue;
    std::vector<std::string> sens;
    for (int c : p.sensitive) sens.push_back(v1::SensitiveCategory_Name(static_cast<v1::SensitiveCategory>(c)));
    policy += "  " + name + ":\n    fields: " + Yaml(p.fields) + "\n    summary: [\"location\"]\n" +
              "    sensitive: " + Yaml(sens) + "\n";
  }
  policy +=
      "principals:\n"
      "  - id: publisher\n    organisation: RKB\n    role: EPR\n    profile: FULL\n"
      "    publish: { event_types: [\"*\"], source_organisations: [RKB, RJC, COV01, WAR01, M85001] }\n"
      "  - id: icr-operator\n    organisation: QWU\n    role: OPERATOR\n    profile: FULL\n"
      "    queries: [audit, status]\n";
  std::vector<Scope> scopes(20);
  const std::vector<std::string> profile_names = {"FULL", "NARROW", "CLINICAL"};
  for (int i = 0; i < 20; ++i) {
    Scope& s = scopes[i];
    s.organisation = kOrgs[i % kOrgs.size()];
    s.profile = profile_names[i % 3];
    std::vector<std::string> types, places, addressed;
    if (i % 5 != 0) {
      for (int t : kTypes) {
        if (coin(0.5)) s.types.insert(t);
      }
      if (s.types.empty()) s.types.insert(v1::PLACEMENT_REQUEST);
    }
    for (int t : s.types) types.push_back(v1::EventType_Name(static_cast<v1::EventType>(t)));
    if (types.empty()) types.push_back("*");
    if (coin(0.4)) {
      for (int p : kPlaces) {
        if (coin(0.5)) s.places.insert(p);
      }
    }
    for (int p : s.places) places.push_back(v1::Place_Name(static_cast<v1::Place>(p)));
    if (coin(0.4)) {
      for (const auto& t : kTeams) {
        if (coin(0.4)) s.addressed_to.insert(coin(0.5) ? t : t.substr(0, t.find('/')));
      }
      s.own_organisation = coin(0.5);
      if (s.addressed_to.empty()) s.addressed_to.insert("RKB");
    }
    addressed.assign(s.addressed_to.begin(), s.addressed_to.end());
    policy += "  - id: " + PropertyPrincipal(i) + "\n    organisation: " + s.organisation +
              "\n    role: R" + std::to_string(i) + "\n    profile: " + s.profile +
              "\n    subscribe: { event_types: " + Yaml(types) +
              (places.empty() ? "" : ", places: " + Yaml(places)) +
              (addressed.empty() ? "" : ", addressed_to: " + Yaml(addressed)) +
              (s.own_organisation ? ", own_organisation: true" : "") + " }\n";
  }
  StartBroker(policy);

  // Thousands of random events about 40 people.
  constexpr int kEvents = 3000;
  std::vector<CareEvent> published;
  std::uniform_int_distribution<int> person(0, 39);
  for (int i = 0; i < kEvents; ++i) {
    const std::string nhs = testing::TestNhsNumber(100 + person(rng));
    const std::string id = "prop-" + std::to_string(i);
    const std::string org = kOrgs[std::uniform_int_distribution<size_t>(0, kOrgs.size() - 1)(rng)];
    CareEvent e;
    switch (kTypes[std::uniform_int_distribution<size_t>(0, kTypes.size() - 1)(rng)]) {
      case v1::ADMISSION:
        e = Envelope(nhs, id, org);
        break;
      case v1::DISCHARGE_REFERRAL:
        e = testing::ReferralEvent(nhs, id);
        e.set_source_organisation(org);
        e.mutable_discharge_referral()->mutable_needs()->set_safeguarding_detail("detail " + id);
        break;
      case v1::PLACEMENT_REQUEST:
        e = PlacementRequest(nhs, id, static_cast<v1::Place>(kPlaces[i % kPlaces.size()]));
        e.set_source_organisation(org);
        break;
      case v1::CARE_SUMMARY_CONTRIBUTION:
        e = Contribution(nhs, id, org);
        break;
      case v1::MENTAL_HEALTH_EPISODE_START:
        e = Envelope(nhs, id, org);
        e.mutable_mental_health_episode_start()->set_episode_id("MH-" + id);
        e.mutable_mental_health_episode_start()->set_detained(coin(0.5));
        e.mutable_mental_health_episode_start()->set_team("Crisis team");
        break;
      case v1::GP_REGISTRATION:
        e = Envelope(nhs, id, org);
        e.mutable_gp_registration()->set_practice("M85001");
        break;
      default:
        e = Envelope(nhs, id, org);
        e.mutable_ed_attendance()->set_attendance_id("ED-" + id);
        e.mutable_ed_attendance()->set_site("RKB01");
        break;
    }
    if (coin(0.5)) {
      const std::string& t = kTeams[std::uniform_int_distribution<size_t>(0, kTeams.size() - 1)(rng)];
      e.mutable_addressee()->set_organisation(t.substr(0, t.find('/')));
      e.mutable_addressee()->set_team_code(t.substr(t.find('/') + 1));
    }
    if (e.payload_case() != CareEvent::kPlacementRequest && e.payload_case() != CareEvent::kDischargeReferral) {
      e.set_place(coin(0.6) ? static_cast<v1::Place>(kPlaces[i % kPlaces.size()]) : v1::PLACE_UNSPECIFIED);
    }
    published.push_back(std::move(e));
  }
  // Stored as the broker has them (types, places filled in), by position.
  std::map<uint64_t, CareEvent> stored;
  for (int start = 0; start < kEvents; start += 250) {
    std::vector<CareEvent> batch(published.begin() + start,
                                 published.begin() + std::min(kEvents, start + 250));
    v1::PublishBatchResponse resp;
    grpc::Status s = Publish("publisher", batch, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // The oracle works on what was published, with the broker-assigned
  // fields (type, place) as the broker fills them in.
  std::map<std::string, int> by_message;  // source_message_id -> index
  for (int i = 0; i < kEvents; ++i) by_message[published[i].source_message_id()] = i;

  std::map<std::string, std::multiset<uint64_t>> delivered;  // principal -> positions
  size_t total_delivered = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string cn = PropertyPrincipal(i);
    const Scope& scope = scopes[i];
    const ProfileSpec& profile = kProfiles.at(scope.profile);
    std::vector<CareEvent> got;
    grpc::Status s = ReceiveAll(cn, &got);
    ASSERT_TRUE(s.ok()) << cn << ": " << s.error_message();
    std::set<std::string> got_ids;
    for (const CareEvent& e : got) {
      ASSERT_TRUE(by_message.count(e.source_message_id())) << e.source_message_id();
      CareEvent original = published[by_message[e.source_message_id()]];
      // The envelope as the broker fills it in (type, place, position).
      original.set_event_type(e.event_type());
      original.set_place(e.place());
      EXPECT_TRUE(InScope(scope, original)) << cn << " received out of scope: " << e.ShortDebugString();
      std::set<std::string> paths;
      std::set<int> sensitive;
      // The payload only: the envelope is always kept.
      const FieldDescriptor* payload = e.GetReflection()->GetOneofFieldDescriptor(
          e, CareEvent::descriptor()->FindOneofByName("payload"));
      if (payload != nullptr) {
        Walk(e.GetReflection()->GetMessage(e, payload), payload->name(), &paths, &sensitive);
      }
      for (const std::string& p : paths) {
        EXPECT_TRUE(PathAllowed(profile, p)) << cn << " (" << scope.profile << ") got field " << p;
      }
      for (int c : sensitive) {
        EXPECT_TRUE(profile.sensitive.count(c)) << cn << " (" << scope.profile << ") got sensitive category " << c;
      }
      if (scope.profile == "FULL") {
        EXPECT_EQ(e.source_organisation(), original.source_organisation());
        EXPECT_TRUE(e.has_admission() == original.has_admission());
      }
      got_ids.insert(e.source_message_id());
      delivered[cn].insert(e.position());
    }
    total_delivered += got.size();
    // Nothing in scope is missing.
    size_t expected = 0;
    for (int k = 0; k < kEvents; ++k) {
      CareEvent probe = published[k];
      probe.set_event_type(static_cast<v1::EventType>(probe.payload_case()));
      if (probe.payload_case() == CareEvent::kPlacementRequest) {
        probe.set_place(probe.placement_request().place());
      } else if (probe.payload_case() == CareEvent::kDischargeReferral) {
        probe.set_place(probe.discharge_referral().place());
      }
      if (InScope(scope, probe)) {
        ++expected;
        EXPECT_TRUE(got_ids.count(probe.source_message_id()))
            << cn << " missed " << probe.source_message_id() << " " << probe.ShortDebugString();
      }
    }
    EXPECT_EQ(got.size(), expected) << cn;
  }
  EXPECT_GT(total_delivered, 5000u);  // the scopes are not trivially empty

  // The audit trail: one DELIVERED entry per delivery, one to one.
  std::map<std::string, std::multiset<uint64_t>> audited;
  for (int p = 0; p < 40; ++p) {
    for (const v1::AuditRecord& r : WhoSaw(testing::TestNhsNumber(100 + p))) {
      if (r.action() != v1::DELIVERED) continue;
      EXPECT_EQ(r.nhs_number(), testing::TestNhsNumber(100 + p));
      EXPECT_EQ(r.purpose(), v1::DIRECT_CARE);
      for (uint64_t pos : r.positions()) audited[r.principal()].insert(pos);
      EXPECT_EQ(r.positions_size(), r.event_ids_size());
    }
  }
  for (int i = 0; i < 20; ++i) {
    const std::string cn = PropertyPrincipal(i);
    EXPECT_EQ(audited[cn], delivered[cn]) << cn;
  }
  EXPECT_EQ(audited.count("publisher"), 0u);

  // And the chain is intact.
  grpc::ClientContext ctx;
  auto reader = Governance("icr-operator")->VerifyAudit(&ctx, {});
  v1::VerifyAuditProgress progress, last;
  while (reader->Read(&progress)) last = progress;
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(last.done());
  EXPECT_TRUE(last.intact()) << last.problem();
  EXPECT_GE(last.checked(), 20u);
}

// ---------------------------------------------------------------------------
// Minimisation in summaries and history; objections and opt-outs
// ---------------------------------------------------------------------------

TEST_F(GovernanceE2eTest, BrokerageSeesPlacementRequestsOfItsPlaceWithoutSafeguardingDetail) {
  StartBroker(kPolicy);
  const std::string nhs = testing::TestNhsNumber(3);
  ASSERT_TRUE(Publish("hospital-epr", {PlacementRequest(nhs, "pr-cov", v1::COVENTRY),
                                       PlacementRequest(nhs, "pr-rugby", v1::RUGBY),
                                       Contribution(nhs, "c-1", "RKB")})
                  .ok());
  std::vector<CareEvent> got;
  ASSERT_TRUE(ReceiveAll("cov-brokerage", &got).ok());
  ASSERT_EQ(got.size(), 1u);
  const v1::PlacementRequest& r = got[0].placement_request();
  EXPECT_EQ(r.request_id(), "PR-pr-cov");
  EXPECT_TRUE(r.needs().dementia());
  EXPECT_EQ(r.contact(), "Ward 33 ext 4471");
  EXPECT_TRUE(r.needs().safeguarding_detail().empty());
  // The hospital's own EPR (FULL) sees the detail.
  std::vector<CareEvent> full;
  ASSERT_TRUE(ReceiveAll("hospital-epr", &full).ok());
  ASSERT_EQ(full.size(), 3u);
  EXPECT_FALSE(full[0].placement_request().needs().safeguarding_detail().empty());

  // Summary: the safeguarding flag is withheld from BROKERAGE.
  v1::GetCareSummaryRequest sreq;
  sreq.set_nhs_number(nhs);
  v1::CareSummary summary;
  auto ctx = testing::Context();
  ASSERT_TRUE(Workflow("hospital-epr")->GetCareSummary(ctx.get(), sreq, &summary).ok());
  EXPECT_TRUE(summary.flags().safeguarding());
  EXPECT_FALSE(summary.allergies().empty());
  ctx = testing::Context();
  summary.Clear();
  ASSERT_TRUE(Workflow("cov-brokerage")->GetCareSummary(ctx.get(), sreq, &summary).ok());
  EXPECT_FALSE(summary.flags().safeguarding());
  EXPECT_TRUE(summary.allergies().empty());  // not in the BROKERAGE summary fields

  // History: only its types, minimised.
  v1::GetPatientHistoryRequest hreq;
  hreq.set_nhs_number(nhs);
  v1::GetPatientHistoryResponse history;
  ctx = testing::Context();
  ASSERT_TRUE(Broker("cov-brokerage")->GetPatientHistory(ctx.get(), hreq, &history).ok());
  ASSERT_EQ(history.events_size(), 2);  // both placement requests; not the contribution
  for (const auto& e : history.events()) {
    EXPECT_TRUE(e.placement_request().needs().safeguarding_detail().empty());
  }
  // Care summaries on a stream need the same query as GetCareSummary.
  {
    grpc::ClientContext sctx;
    sctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::SubscribeRequest sreq2;
    sreq2.set_summary_changes(true);
    auto reader = Broker("gp-system")->Subscribe(&sctx, sreq2);
    v1::SubscribeResponse r;
    EXPECT_FALSE(reader->Read(&r));
    grpc::Status refused = reader->Finish();
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(refused.error_message().find("care_summary"), std::string::npos)
        << refused.error_message();
  }
  // A principal without the query is refused.
  ctx = testing::Context();
  history.Clear();
  grpc::Status s = Broker("gp-system")->GetPatientHistory(ctx.get(), hreq, &history);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(history.events_size(), 0);

  // Every read and the denial are in the person's audit.
  std::map<std::pair<std::string, int>, int> seen;
  for (const auto& rec : WhoSaw(nhs)) ++seen[{rec.principal(), rec.action()}];
  EXPECT_EQ((seen[{"cov-brokerage", v1::DELIVERED}]), 1);
  EXPECT_EQ((seen[{"hospital-epr", v1::DELIVERED}]), 3);  // one per delivery
  EXPECT_EQ((seen[{"hospital-epr", v1::SUMMARY_READ}]), 1);
  EXPECT_EQ((seen[{"cov-brokerage", v1::SUMMARY_READ}]), 1);
  EXPECT_EQ((seen[{"cov-brokerage", v1::HISTORY_READ}]), 1);
  EXPECT_EQ((seen[{"gp-system", v1::DENIED}]), 1);
}

TEST_F(GovernanceE2eTest, ObjectionsAndOptOutsWithholdPeopleFromPurposesBeyondDirectCare) {
  StartBroker(kPolicy);
  const std::string objector = testing::TestNhsNumber(10);
  const std::string opted_out = testing::TestNhsNumber(11);
  const std::string other = testing::TestNhsNumber(12);
  CareEvent objection = Envelope(objector, "obj-1", "RKB");
  objection.clear_admission();
  objection.mutable_sharing_objection()->set_reason("Does not want data used for planning");
  CareEvent opt_out = Envelope(opted_out, "ndop-1", "RKB");
  opt_out.clear_admission();
  opt_out.mutable_national_data_opt_out()->set_opted_out(true);
  ASSERT_TRUE(Publish("hospital-epr", {objection, opt_out,
                                       Envelope(objector, "a-1", "RKB"),
                                       Envelope(opted_out, "a-2", "RKB"),
                                       Envelope(other, "a-3", "RKB")})
                  .ok());
  // Planning sees only the person with neither.
  std::vector<CareEvent> planning;
  ASSERT_TRUE(ReceiveAll("icb-analytics", &planning, v1::SERVICE_PLANNING).ok());
  ASSERT_EQ(planning.size(), 1u);
  EXPECT_EQ(planning[0].nhs_number(), other);
  // Direct care sees everyone.
  std::vector<CareEvent> care;
  ASSERT_TRUE(ReceiveAll("hospital-epr", &care).ok());
  EXPECT_EQ(care.size(), 5u);
  // icb-analytics may not declare direct care.
  std::vector<CareEvent> none;
  grpc::Status s = ReceiveAll("icb-analytics", &none, v1::DIRECT_CARE);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("SERVICE_PLANNING"), std::string::npos) << s.error_message();
  // Shown on the summary; refused for planning.
  v1::GetCareSummaryRequest sreq;
  sreq.set_nhs_number(objector);
  v1::CareSummary summary;
  auto ctx = testing::Context();
  ASSERT_TRUE(Workflow("hospital-epr")->GetCareSummary(ctx.get(), sreq, &summary).ok());
  EXPECT_TRUE(summary.flags().sharing_objection());
  sreq.set_purpose(v1::SERVICE_PLANNING);
  ctx = testing::Context();
  s = Workflow("icb-analytics")->GetCareSummary(ctx.get(), sreq, &summary);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  v1::GetPatientHistoryRequest hreq;
  hreq.set_nhs_number(opted_out);
  hreq.set_purpose(v1::SERVICE_PLANNING);
  v1::GetPatientHistoryResponse history;
  ctx = testing::Context();
  s = Broker("icb-analytics")->GetPatientHistory(ctx.get(), hreq, &history);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("opt-out"), std::string::npos);
  // The flow metrics' drill-down names people: for planning it leaves out
  // the objector (the anonymous counts still include them); for direct care
  // it does not. Each person shown is audited.
  ASSERT_TRUE(Publish("hospital-epr", {testing::ReferralEvent(objector, "ref-obj"),
                                       testing::ReferralEvent(other, "ref-other")})
                  .ok());
  v1::GetFlowMetricsRequest freq;
  const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  freq.mutable_from()->set_seconds(now_s - 86400);
  freq.mutable_to()->set_seconds(now_s + 3600);
  freq.set_purpose(v1::SERVICE_PLANNING);
  v1::FlowMetrics metrics;
  ctx = testing::Context();
  s = Workflow("icb-analytics")->GetFlowMetrics(ctx.get(), freq, &metrics);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::set<std::string> listed;
  for (const auto& row : metrics.awaiting_discharge()) listed.insert(row.nhs_number());
  EXPECT_EQ(listed, std::set<std::string>{other});
  freq.set_purpose(v1::DIRECT_CARE);
  ctx = testing::Context();
  s = Workflow("icb-analytics")->GetFlowMetrics(ctx.get(), freq, &metrics);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);  // not its purpose
  int drill_down_records = 0;
  for (const auto& r : WhoSaw(other)) {
    if (r.action() == v1::REFERRAL_READ && r.principal() == "icb-analytics") ++drill_down_records;
  }
  EXPECT_EQ(drill_down_records, 1);

  // Withdrawn: planning sees the objector's later events again.
  CareEvent withdrawn = Envelope(objector, "obj-2", "RKB");
  withdrawn.clear_admission();
  withdrawn.mutable_sharing_objection()->set_withdrawn(true);
  ASSERT_TRUE(Publish("hospital-epr", {withdrawn}).ok());
  planning.clear();
  ASSERT_TRUE(ReceiveAll("icb-analytics", &planning, v1::SERVICE_PLANNING).ok());
  std::set<std::string> people;
  for (const auto& e : planning) people.insert(e.nhs_number());
  EXPECT_TRUE(people.count(objector));
  EXPECT_FALSE(people.count(opted_out));
}

TEST_F(GovernanceE2eTest, ARedeliveryAfterAnObjectionIsWithheld) {
  StartBroker(kPolicy);
  const std::string nhs = testing::TestNhsNumber(13);
  ASSERT_TRUE(Publish("hospital-epr", {Envelope(nhs, "before-objection", "RKB")}).ok());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SubscribeRequest req;
  req.set_subscription("planning-feed");
  req.mutable_start()->set_earliest(true);
  req.set_purpose(v1::SERVICE_PLANNING);
  req.set_ack_timeout_ms(1000);
  req.set_heartbeat_ms(200);
  auto reader = Broker("icb-analytics")->Subscribe(&ctx, req);
  v1::SubscribeResponse r;
  ASSERT_TRUE(reader->Read(&r));
  ASSERT_TRUE(r.has_event());
  EXPECT_EQ(r.event().source_message_id(), "before-objection");
  // Not acknowledged; meanwhile the person objects.
  CareEvent objection = Envelope(nhs, "objection", "RKB");
  objection.clear_admission();
  objection.mutable_sharing_objection();
  ASSERT_TRUE(Publish("hospital-epr", {objection}).ok());
  // The ack timeout passes: the redelivery is withheld (acknowledged unsent).
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3000);
  while (std::chrono::steady_clock::now() < until && reader->Read(&r)) {
    EXPECT_FALSE(r.has_event()) << "delivered after the objection: " << r.ShortDebugString();
  }
  ctx.TryCancel();
  reader->Finish();
  v1::ListSubscriptionsResponse subs;
  auto lctx = testing::Context();
  ASSERT_TRUE(Broker("icb-analytics")->ListSubscriptions(lctx.get(), {}, &subs).ok());
  ASSERT_EQ(subs.subscriptions_size(), 1);
  EXPECT_EQ(subs.subscriptions(0).cursor(), 2u);  // both events passed, neither redelivered
  int delivered = 0;
  for (const auto& rec : WhoSaw(nhs)) {
    if (rec.action() == v1::DELIVERED && rec.principal() == "icb-analytics") ++delivered;
  }
  EXPECT_EQ(delivered, 1);  // the first delivery only
}

// ---------------------------------------------------------------------------
// Policy reload, connections per principal
// ---------------------------------------------------------------------------

TEST_F(GovernanceE2eTest, ReloadedPolicyAppliesToALiveStreamAndABadOneIsRefused) {
  StartBroker(kPolicy);
  const std::string nhs = testing::TestNhsNumber(20);
  auto stub = Broker("cov-brokerage");
  grpc::ClientContext ctx;
  v1::SubscribeRequest req;
  req.set_heartbeat_ms(100);
  auto reader = stub->Subscribe(&ctx, req);
  v1::SubscribeResponse resp;
  ASSERT_TRUE(reader->Read(&resp));  // a heartbeat: connected
  ASSERT_TRUE(Publish("hospital-epr", {PlacementRequest(nhs, "r-1", v1::RUGBY)}).ok());
  // Rugby is not in its scope yet; now it is.
  std::string widened = kPolicy;
  widened.replace(widened.find("places: [COVENTRY]"), 18, "places: [COVENTRY, RUGBY]");
  WriteFile(policy_path_, widened);
  v1::ReloadPolicyResponse reloaded;
  auto c = testing::Context();
  grpc::Status s = Governance("icr-operator")->ReloadPolicy(c.get(), {}, &reloaded);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reloaded.policy_version(), 2u);
  ASSERT_TRUE(Publish("hospital-epr", {PlacementRequest(nhs, "r-2", v1::RUGBY)}).ok());
  std::vector<std::string> ids;
  while (ids.empty() && reader->Read(&resp)) {
    if (resp.has_event()) ids.push_back(resp.event().source_message_id());
  }
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0], "r-2");
  // A broken policy is refused with its line; the old one stays.
  WriteFile(policy_path_, "principals:\n  - id: x\n    organisation: lower\n");
  c = testing::Context();
  s = Governance("icr-operator")->ReloadPolicy(c.get(), {}, &reloaded);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("policy.yaml:"), std::string::npos) << s.error_message();
  // Not everyone may reload.
  c = testing::Context();
  s = Governance("cov-brokerage")->ReloadPolicy(c.get(), {}, &reloaded);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ctx.TryCancel();
  reader->Finish();
}

TEST_F(GovernanceE2eTest, ConnectionsPerPrincipalAtTheLimitAndOnePast) {
  StartBroker(kPolicy);  // cov-brokerage: max_connections 2
  struct Stream {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Broker::Stub> stub;
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader;
  };
  auto open = [&](std::shared_ptr<grpc::Channel> channel) {
    auto s = std::make_unique<Stream>();
    s->channel = std::move(channel);
    s->stub = v1::Broker::NewStub(s->channel);
    v1::SubscribeRequest req;
    req.set_heartbeat_ms(100);
    s->reader = s->stub->Subscribe(&s->ctx, req);
    return s;
  };
  auto first_reply = [](Stream* s, grpc::Status* status) {
    v1::SubscribeResponse resp;
    if (s->reader->Read(&resp)) return true;
    *status = s->reader->Finish();
    return false;
  };
  grpc::Status status;
  auto a = open(ChannelFor(broker_->port(), "cov-brokerage", true));
  ASSERT_TRUE(first_reply(a.get(), &status)) << status.error_message();
  auto b = open(ChannelFor(broker_->port(), "cov-brokerage", true));
  ASSERT_TRUE(first_reply(b.get(), &status)) << status.error_message();  // at the limit
  auto c = open(ChannelFor(broker_->port(), "cov-brokerage", true));
  ASSERT_FALSE(first_reply(c.get(), &status));  // one past it
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("max_connections 2"), std::string::npos)
      << status.error_message();
  // Another stream on a connection it holds is fine.
  auto a2 = open(a->channel);
  EXPECT_TRUE(first_reply(a2.get(), &status)) << status.error_message();
  // Other principals are not affected.
  auto other = open(ChannelFor(broker_->port(), "hospital-epr", true));
  EXPECT_TRUE(first_reply(other.get(), &status)) << status.error_message();
  // Once a connection's streams end, a new connection may take its place.
  b->ctx.TryCancel();
  b->reader->Finish();
  bool admitted = false;
  for (int attempt = 0; attempt < 50 && !admitted; ++attempt) {
    auto d = open(ChannelFor(broker_->port(), "cov-brokerage", true));
    admitted = first_reply(d.get(), &status);
    if (admitted) {
      d->ctx.TryCancel();
      d->reader->Finish();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_TRUE(admitted) << status.error_message();
  for (Stream* s : {a.get(), a2.get(), other.get()}) {
    s->ctx.TryCancel();
    s->reader->Finish();
  }
}

// ---------------------------------------------------------------------------
// The audit trail: nothing disclosed without it; tampering found
// ---------------------------------------------------------------------------

TEST_F(GovernanceE2eTest, WhenTheAuditTrailCannotBeWrittenNothingIsDisclosed) {
  testing::FaultFs* fs = fs_.get();
  StartBroker(kPolicy, env_.get());
  const std::string nhs = testing::TestNhsNumber(30);
  ASSERT_TRUE(Publish("hospital-epr", {Envelope(nhs, "f-1", "RKB"), Envelope(nhs, "f-2", "RKB")})
                  .ok());
  fs->SetFull(true);
  std::vector<CareEvent> got;
  grpc::Status s = ReceiveAll("hospital-epr", &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find("audit trail cannot be written"), std::string::npos)
      << s.error_message();
  EXPECT_TRUE(got.empty());
  v1::GetPatientHistoryRequest hreq;
  hreq.set_nhs_number(nhs);
  v1::GetPatientHistoryResponse history;
  auto ctx = testing::Context();
  s = Broker("hospital-epr")->GetPatientHistory(ctx.get(), hreq, &history);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(history.events_size(), 0);
  v1::GetCareSummaryRequest sreq;
  sreq.set_nhs_number(nhs);
  v1::CareSummary summary;
  ctx = testing::Context();
  s = Workflow("hospital-epr")->GetCareSummary(ctx.get(), sreq, &summary);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(summary.nhs_number().empty());
  // Space returns: the store resumes by itself, and so do disclosures, each
  // audited.
  fs->SetFull(false);
  bool delivered = false;
  for (int attempt = 0; attempt < 100 && !delivered; ++attempt) {
    got.clear();
    delivered = ReceiveAll("hospital-epr", &got).ok() && got.size() == 2;
    if (!delivered) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(delivered);
  int records = 0;
  for (const auto& r : WhoSaw(nhs)) {
    if (r.action() == v1::DELIVERED && r.principal() == "hospital-epr") records += r.positions_size();
  }
  EXPECT_EQ(records, 2);  // only the delivery that happened is audited
}

TEST_F(GovernanceE2eTest, AnEditedAuditRecordIsFoundByVerify) {
  StartBroker(kPolicy);
  const std::string nhs = testing::TestNhsNumber(40);
  ASSERT_TRUE(Publish("hospital-epr", {Envelope(nhs, "e-1", "RKB")}).ok());
  for (int i = 0; i < 5; ++i) {
    v1::GetCareSummaryRequest sreq;
    sreq.set_nhs_number(nhs);
    v1::CareSummary summary;
    auto ctx = testing::Context();
    ASSERT_TRUE(Workflow("hospital-epr")->GetCareSummary(ctx.get(), sreq, &summary).ok());
  }
  auto records = WhoSaw(nhs);
  ASSERT_EQ(records.size(), 5u);
  const uint64_t victim = records[2].sequence();
  broker_->Shutdown();
  broker_.reset();
  {
    // Someone with access to the disk rewrites who read the record (the
    // audit trail is its own database, <data_dir>/audit).
    rocksdb::DB* raw = nullptr;
    rocksdb::Status opened = rocksdb::DB::Open(rocksdb::Options(), dir_.path() + "/data/audit", &raw);
    ASSERT_TRUE(opened.ok()) << opened.ToString();
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string key = "r";
    for (int shift = 56; shift >= 0; shift -= 8) key.push_back(static_cast<char>(victim >> shift));
    std::string value;
    rocksdb::Status got = db->Get({}, key, &value);
    ASSERT_TRUE(got.ok()) << got.ToString() << " sequence " << victim;
    v1::AuditRecord r;
    ASSERT_TRUE(r.ParseFromString(value));
    r.set_principal("icr-operator");
    rocksdb::WriteOptions synced;
    synced.sync = true;
    ASSERT_TRUE(db->Put(synced, key, r.SerializeAsString()).ok());
  }
  StartBroker(kPolicy);
  grpc::ClientContext ctx;
  auto reader = Governance("icr-operator")->VerifyAudit(&ctx, {});
  v1::VerifyAuditProgress progress, last;
  while (reader->Read(&progress)) last = progress;
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(last.done());
  EXPECT_FALSE(last.intact());
  // The edit changed record `victim`'s bytes, so the next record's link to
  // it no longer matches.
  EXPECT_EQ(last.first_bad_sequence(), victim + 1) << last.problem();
  EXPECT_FALSE(last.problem().empty());
}

}  // namespace
}  // namespace icr
