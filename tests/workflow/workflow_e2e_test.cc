// The discharge workflow end to end: a real broker over a real RocksDB
// directory, driven through real gRPC channels on loopback. Every referral
// transition (legal and illegal), optimistic concurrency, team routing,
// care summaries, NHS number merges and escalation timers across a restart.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "broker/hub.h"
#include "broker/timestamp.h"
#include "broker/workflow/simulator.h"
#include "tests/support/test_support.h"

namespace icr {
namespace {

using icr::testing::TempDir;
using icr::testing::TestBroker;
using icr::testing::TestNhsNumber;
using namespace std::chrono_literals;

using icr::testing::Context;

v1::TeamRef Team(const std::string& org, const std::string& code) {
  v1::TeamRef t;
  t.set_organisation(org);
  t.set_team_code(code);
  return t;
}

const v1::TeamRef kWard = Team("RKB", "WARD-33");
const v1::TeamRef kSocialCare = Team("CCC", "HSCT-UHCW");

// Envelope from UHCW's EPR (or another system), `minutes_ago` in the past.
v1::CareEvent Envelope(const std::string& nhs, const std::string& id, int minutes_ago = 1,
                       const std::string& system = "uhcw-epr", const std::string& org = "RKB",
                       v1::CareSetting setting = v1::ACUTE) {
  v1::CareEvent e;
  e.set_source_system_id(system);
  e.set_source_organisation(org);
  e.set_care_setting(setting);
  e.set_source_message_id(id);
  e.set_nhs_number(nhs);
  broker::SetTimestamp(e.mutable_occurred_at(),
                       broker::NowMicros() - int64_t{minutes_ago} * 60 * 1000000);
  return e;
}

// Ten minutes ago by default: well inside every escalation deadline.
v1::CareEvent Referral(const std::string& nhs, const std::string& ref, int minutes_ago = 10,
                       v1::DischargePathway pathway = v1::PATHWAY_1,
                       v1::Place place = v1::COVENTRY) {
  v1::CareEvent e = Envelope(nhs, "ref-" + ref, minutes_ago);
  *e.mutable_addressee() = kSocialCare;
  auto* r = e.mutable_discharge_referral();
  r->set_referral_id(ref);
  r->set_pathway(pathway);
  *r->mutable_referrer() = kWard;
  r->mutable_needs()->set_dementia(true);
  r->mutable_needs()->set_summary("Lives alone; needs help washing and dressing.");
  r->set_place(place);
  return e;
}

v1::CareEvent Status(const std::string& nhs, const std::string& ref, v1::ReferralStatus status,
                     const std::string& id, int minutes_ago = 1) {
  v1::CareEvent e = Envelope(nhs, id, minutes_ago, "ccc-liquidlogic", "CCC", v1::SOCIAL_CARE);
  auto* c = e.mutable_referral_status_change();
  c->set_referral_id(ref);
  c->set_status(status);
  return e;
}

v1::CareEvent Request(const std::string& nhs, const std::string& ref, const std::string& req,
                      v1::ServiceType type = v1::HOME_SUPPORT, v1::Place place = v1::COVENTRY) {
  v1::CareEvent e = Envelope(nhs, "req-" + req, 1, "ccc-brokerage", "CCC", v1::SOCIAL_CARE);
  auto* p = e.mutable_placement_request();
  p->set_request_id(req);
  p->set_referral_id(ref);
  p->set_service_type(type);
  p->set_place(place);
  p->mutable_start_date()->set_year(2026);
  p->mutable_start_date()->set_month(11);
  p->mutable_start_date()->set_day(25);
  p->set_hours_per_week(10.5);
  p->set_calls_per_day(2);
  return e;
}

v1::CareEvent Offer(const std::string& nhs, const std::string& req, const std::string& offer) {
  v1::CareEvent e = Envelope(nhs, "offer-" + offer, 1, "ccc-brokerage", "CCC", v1::SOCIAL_CARE);
  auto* o = e.mutable_placement_offer();
  o->set_offer_id(offer);
  o->set_request_id(req);
  o->set_provider("VN123");
  return e;
}

v1::CareEvent Answer(const std::string& nhs, const std::string& offer, bool accept,
                     const std::string& id) {
  v1::CareEvent e = Envelope(nhs, id);
  if (accept) {
    e.mutable_placement_acceptance()->set_offer_id(offer);
  } else {
    e.mutable_placement_decline()->set_offer_id(offer);
    e.mutable_placement_decline()->set_reason("family prefer another provider");
  }
  return e;
}

grpc::Status Publish(v1::Broker::Stub* stub, const v1::CareEvent& e,
                     v1::PublishResponse* out = nullptr) {
  v1::PublishRequest req;
  *req.mutable_event() = e;
  v1::PublishResponse resp;
  auto ctx = Context();
  grpc::Status s = stub->Publish(ctx.get(), req, &resp);
  if (out != nullptr) *out = resp;
  return s;
}

void MustPublish(v1::Broker::Stub* stub, const v1::CareEvent& e) {
  grpc::Status s = Publish(stub, e);
  ASSERT_TRUE(s.ok()) << v1::EventType_Name(static_cast<v1::EventType>(e.payload_case())) << " "
                      << e.source_message_id() << ": " << s.error_code() << " "
                      << s.error_message();
}

v1::Referral GetReferral(v1::Workflow::Stub* wf, const std::string& id) {
  v1::GetReferralRequest req;
  req.set_referral_id(id);
  v1::Referral r;
  auto ctx = Context();
  grpc::Status s = wf->GetReferral(ctx.get(), req, &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return r;
}

uint64_t LastPosition(v1::Broker::Stub* stub) {
  v1::GetStatusResponse st;
  auto ctx = Context();
  EXPECT_TRUE(stub->GetStatus(ctx.get(), {}, &st).ok());
  return st.last_position();
}

void Register(v1::Workflow::Stub* wf, const v1::TeamRef& ref, v1::TeamRole role, v1::Place place,
              std::vector<v1::ServiceType> types = {}) {
  v1::RegisterTeamRequest req;
  *req.mutable_team()->mutable_ref() = ref;
  req.mutable_team()->set_role(role);
  req.mutable_team()->set_place(place);
  req.mutable_team()->set_name(ref.team_code());
  for (auto t : types) req.mutable_team()->add_service_types(t);
  v1::Team out;
  auto ctx = Context();
  grpc::Status s = wf->RegisterTeam(ctx.get(), req, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
}

// Everything a subscription receives within `window` (the stream then ends
// with DEADLINE_EXCEEDED).
std::vector<v1::SubscribeResponse> Collect(v1::Broker::Stub* stub, v1::SubscribeRequest req,
                                           std::chrono::milliseconds window,
                                           grpc::Status* finish = nullptr) {
  auto ctx = Context(window);
  auto reader = stub->Subscribe(ctx.get(), req);
  std::vector<v1::SubscribeResponse> out;
  v1::SubscribeResponse r;
  while (reader->Read(&r)) {
    if (!r.has_heartbeat()) out.push_back(r);
  }
  grpc::Status s = reader->Finish();
  if (finish != nullptr) *finish = s;
  return out;
}

v1::SubscribeRequest AsTeam(const v1::TeamRef& team) {
  v1::SubscribeRequest req;
  req.mutable_start()->set_earliest(true);
  *req.mutable_filter()->mutable_team() = team;
  return req;
}

class WorkflowE2ETest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::unique_ptr<TestBroker> broker_ = std::make_unique<TestBroker>(dir_.path());
  std::unique_ptr<v1::Broker::Stub> stub_ = broker_->NewStub();
  std::unique_ptr<v1::Workflow::Stub> wf_ = broker_->NewWorkflowStub();
  const std::string nhs_ = TestNhsNumber(10);

  // Publishes the lifecycle up to (and including) `until`.
  void Advance(const std::string& ref, v1::ReferralStatus until) {
    MustPublish(stub_.get(), Referral(nhs_, ref));
    if (until == v1::CREATED) return;
    MustPublish(stub_.get(), Status(nhs_, ref, v1::ACCEPTED, ref + "-acc"));
    if (until == v1::ACCEPTED) return;
    MustPublish(stub_.get(), Status(nhs_, ref, v1::FORWARDED_TO_BROKERAGE, ref + "-fwd"));
    if (until == v1::FORWARDED_TO_BROKERAGE) return;
    MustPublish(stub_.get(), Request(nhs_, ref, ref + "-R"));
    if (until == v1::PLACEMENT_REQUESTED) return;
    MustPublish(stub_.get(), Offer(nhs_, ref + "-R", ref + "-O"));
    if (until == v1::OFFER_MADE) return;
    MustPublish(stub_.get(), Answer(nhs_, ref + "-O", true, ref + "-yes"));
    if (until == v1::OFFER_ACCEPTED) return;
    MustPublish(stub_.get(), Status(nhs_, ref, v1::SERVICE_CONFIRMED, ref + "-conf"));
    if (until == v1::SERVICE_CONFIRMED) return;
    MustPublish(stub_.get(), Status(nhs_, ref, v1::DISCHARGED, ref + "-dis"));
  }
};

TEST_F(WorkflowE2ETest, HappyPathWalksEveryStateWithVersionsAndMilestones) {
  const std::vector<v1::ReferralStatus> path = {
      v1::CREATED,     v1::ACCEPTED,       v1::FORWARDED_TO_BROKERAGE, v1::PLACEMENT_REQUESTED,
      v1::OFFER_MADE,  v1::OFFER_ACCEPTED, v1::SERVICE_CONFIRMED,      v1::DISCHARGED};
  // One referral per prefix of the path, so each state is checked as reached.
  for (size_t i = 0; i < path.size(); ++i) {
    const std::string ref = "REF-H" + std::to_string(i);
    Advance(ref, path[i]);
    if (HasFatalFailure()) return;
    v1::Referral r = GetReferral(wf_.get(), ref);
    EXPECT_EQ(r.status(), path[i]) << ref;
    EXPECT_EQ(r.version(), i + 1) << ref;
    EXPECT_EQ(r.nhs_number(), nhs_);
  }
  v1::Referral done = GetReferral(wf_.get(), "REF-H7");
  EXPECT_TRUE(done.has_created_at() && done.has_accepted_at() && done.has_forwarded_at() &&
              done.has_placement_requested_at() && done.has_offer_made_at() &&
              done.has_offer_accepted_at() && done.has_service_confirmed_at() &&
              done.has_discharged_at());
  EXPECT_EQ(done.request_id(), "REF-H7-R");
  EXPECT_EQ(done.offer_id(), "REF-H7-O");
  EXPECT_EQ(done.provider(), "VN123");
  EXPECT_TRUE(done.in_d2a());  // pathway 1: now in D2A capacity
  EXPECT_EQ(done.created_position(), 1u + 2 + 3 + 4 + 5 + 6 + 7 + 1);  // after REF-H0..H6's events
  // The needs' free text is kept once, in the creating event, and read back.
  EXPECT_EQ(done.needs().summary(), "Lives alone; needs help washing and dressing.");
  EXPECT_EQ(done.addressee().team_code(), "HSCT-UHCW");

  // The stored workflow events travel URGENT, carry the referral's Place and
  // version, and the offer is addressed back to the referring ward.
  v1::GetPatientHistoryRequest hreq;
  hreq.set_nhs_number(nhs_);
  hreq.set_page_size(1000);
  v1::GetPatientHistoryResponse hist;
  auto ctx = Context();
  ASSERT_TRUE(stub_->GetPatientHistory(ctx.get(), hreq, &hist).ok());
  bool saw_offer = false;
  for (const auto& e : hist.events()) {
    EXPECT_EQ(e.priority(), v1::URGENT) << e.event_type();
    EXPECT_EQ(e.place(), v1::COVENTRY) << e.event_type();
    EXPECT_GT(e.referral_version(), 0u) << e.event_type();
    if (e.has_placement_offer()) {
      saw_offer = true;
      EXPECT_EQ(e.addressee().organisation(), "RKB");
      EXPECT_EQ(e.addressee().team_code(), "WARD-33");
    }
  }
  EXPECT_TRUE(saw_offer);
}

TEST_F(WorkflowE2ETest, DeclineReturnsToRequestedAndANewOfferCanBeMade) {
  Advance("REF-D", v1::OFFER_MADE);
  MustPublish(stub_.get(), Answer(nhs_, "REF-D-O", false, "no-1"));
  v1::Referral r = GetReferral(wf_.get(), "REF-D");
  EXPECT_EQ(r.status(), v1::PLACEMENT_REQUESTED);
  EXPECT_EQ(r.offers_declined(), 1u);
  EXPECT_TRUE(r.offer_id().empty());
  MustPublish(stub_.get(), Offer(nhs_, "REF-D-R", "REF-D-O2"));
  MustPublish(stub_.get(), Answer(nhs_, "REF-D-O2", true, "yes-2"));
  EXPECT_EQ(GetReferral(wf_.get(), "REF-D").status(), v1::OFFER_ACCEPTED);

  // The accepted placement falls through: cancelling the request returns
  // the referral to brokerage, which can request again.
  v1::CareEvent cancel = Envelope(nhs_, "cancel-1", 1, "ccc-brokerage", "CCC", v1::SOCIAL_CARE);
  cancel.mutable_placement_cancellation()->set_request_id("REF-D-R");
  cancel.mutable_placement_cancellation()->set_reason("provider withdrew");
  MustPublish(stub_.get(), cancel);
  v1::Referral back = GetReferral(wf_.get(), "REF-D");
  EXPECT_EQ(back.status(), v1::FORWARDED_TO_BROKERAGE);
  EXPECT_TRUE(back.request_id().empty());
  EXPECT_TRUE(back.offer_id().empty());
  MustPublish(stub_.get(), Request(nhs_, "REF-D", "REF-D-R2", v1::STEP_DOWN_BED));
  EXPECT_EQ(GetReferral(wf_.get(), "REF-D").status(), v1::PLACEMENT_REQUESTED);
  EXPECT_EQ(GetReferral(wf_.get(), "REF-D").service_type(), v1::STEP_DOWN_BED);
  // A late offer on the cancelled request does not land on the new one.
  grpc::Status late = Publish(stub_.get(), Offer(nhs_, "REF-D-R", "late-offer"));
  EXPECT_EQ(late.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(late.error_message().find("waiting on placement request REF-D-R2, not request "
                                      "REF-D-R"),
            std::string::npos)
      << late.error_message();
  // Nor does an event about another person.
  v1::CareEvent wrong = Status(TestNhsNumber(13), "REF-D", v1::WITHDRAWN, "wrong-person");
  grpc::Status ws = Publish(stub_.get(), wrong);
  EXPECT_EQ(ws.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(ws.error_message().find("is about NHS number " + nhs_), std::string::npos)
      << ws.error_message();
  // A request id is used once (a new message reusing it is refused).
  v1::CareEvent reuse = Request(nhs_, "REF-D", "REF-D-R");
  reuse.set_source_message_id("req-reuse");
  grpc::Status rs = Publish(stub_.get(), reuse);
  EXPECT_EQ(rs.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(rs.error_message().find("placement request REF-D-R already exists"),
            std::string::npos)
      << rs.error_message();
}

TEST_F(WorkflowE2ETest, IllegalTransitionsAreRefusedNamingBothStatesAndStoreNothing) {
  Advance("REF-W", v1::PLACEMENT_REQUESTED);
  MustPublish(stub_.get(), Status(nhs_, "REF-W", v1::WITHDRAWN, "wd"));
  const uint64_t before = LastPosition(stub_.get());

  struct Case {
    v1::CareEvent event;
    std::vector<std::string> message_parts;
  };
  std::vector<Case> cases = {
      {Offer(nhs_, "REF-W-R", "late-offer"),
       {"referral REF-W is WITHDRAWN", "OFFER_MADE", "PLACEMENT_REQUESTED"}},
      {Status(nhs_, "NO-SUCH-REF", v1::DISCHARGED, "ghost"),
       {"referral NO-SUCH-REF does not exist", "DISCHARGED"}},
      {Status(nhs_, "REF-W", v1::ACCEPTED, "reopen"), {"WITHDRAWN (closed)", "ACCEPTED"}},
      {[&] {
         v1::CareEvent again = Referral(nhs_, "REF-W");
         again.set_source_message_id("ref-REF-W-again");  // not a resend: a new message
         return again;
       }(),
       {"referral REF-W already exists"}},
      {Offer(nhs_, "NO-SUCH-REQ", "o-x"), {"placement request NO-SUCH-REQ does not exist"}},
  };
  Advance("REF-C", v1::CREATED);
  cases.push_back({Status(nhs_, "REF-C", v1::FORWARDED_TO_BROKERAGE, "skip"),
                   {"referral REF-C is CREATED", "FORWARDED_TO_BROKERAGE", "only from ACCEPTED"}});
  cases.push_back({Status(nhs_, "REF-C", v1::OFFER_MADE, "bad-status"),
                   {"set by a PLACEMENT_OFFER event"}});
  cases.push_back({Status(nhs_, "REF-C", v1::DISCHARGED, "early-dis"),
                   {"referral REF-C is CREATED", "DISCHARGED", "SERVICE_CONFIRMED"}});
  const uint64_t with_c = LastPosition(stub_.get());
  ASSERT_EQ(with_c, before + 1);

  for (const Case& c : cases) {
    grpc::Status s = Publish(stub_.get(), c.event);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << c.event.source_message_id() << ": " << s.error_message();
    for (const std::string& part : c.message_parts) {
      EXPECT_NE(s.error_message().find(part), std::string::npos)
          << "'" << s.error_message() << "' lacks '" << part << "'";
    }
  }
  EXPECT_EQ(LastPosition(stub_.get()), with_c) << "a refused event was stored";
  EXPECT_EQ(GetReferral(wf_.get(), "REF-W").status(), v1::WITHDRAWN);
  EXPECT_EQ(GetReferral(wf_.get(), "REF-C").status(), v1::CREATED);

  // In an atomic batch, one illegal transition refuses the whole batch.
  v1::PublishBatchRequest batch;
  *batch.add_events() = Status(nhs_, "REF-C", v1::ACCEPTED, "batch-ok");
  *batch.add_events() = Offer(nhs_, "REF-W-R", "batch-bad");
  v1::PublishBatchResponse bresp;
  auto ctx = Context();
  grpc::Status s = stub_->PublishBatch(ctx.get(), batch, &bresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(s.error_message().rfind("events[1]: referral REF-W is WITHDRAWN", 0), 0u)
      << s.error_message();
  EXPECT_EQ(LastPosition(stub_.get()), with_c);
  EXPECT_EQ(GetReferral(wf_.get(), "REF-C").status(), v1::CREATED);
}

TEST_F(WorkflowE2ETest, ExpectedVersionGivesOptimisticConcurrency) {
  Advance("REF-V", v1::CREATED);  // version 1
  v1::CareEvent stale = Status(nhs_, "REF-V", v1::ACCEPTED, "stale");
  stale.set_expected_version(7);
  grpc::Status s = Publish(stub_.get(), stale);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED) << s.error_message();
  EXPECT_NE(s.error_message().find("is at version 1"), std::string::npos) << s.error_message();

  v1::CareEvent good = Status(nhs_, "REF-V", v1::ACCEPTED, "good");
  good.set_expected_version(1);
  v1::PublishResponse resp;
  ASSERT_TRUE(Publish(stub_.get(), good, &resp).ok());
  EXPECT_EQ(GetReferral(wf_.get(), "REF-V").version(), 2u);

  // Two updates race with the same expected version: exactly one wins.
  v1::CareEvent a = Status(nhs_, "REF-V", v1::FORWARDED_TO_BROKERAGE, "race-a");
  v1::CareEvent b = Status(nhs_, "REF-V", v1::WITHDRAWN, "race-b");
  a.set_expected_version(2);
  b.set_expected_version(2);
  grpc::Status sa, sb;
  std::thread ta([&] { sa = Publish(stub_.get(), a); });
  std::thread tb([&] { sb = Publish(stub_.get(), b); });
  ta.join();
  tb.join();
  EXPECT_NE(sa.ok(), sb.ok()) << sa.error_message() << " / " << sb.error_message();
  const grpc::Status& loser = sa.ok() ? sb : sa;
  EXPECT_EQ(loser.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(GetReferral(wf_.get(), "REF-V").version(), 3u);

  // A resend of the winner is a duplicate, not a conflict.
  const v1::CareEvent& winner = sa.ok() ? a : b;
  ASSERT_TRUE(Publish(stub_.get(), winner, &resp).ok());
  EXPECT_TRUE(resp.duplicate());
  // expected_version on an event that changes no referral is refused.
  v1::CareEvent adm = Envelope(nhs_, "adm-v");
  adm.mutable_admission()->set_encounter_id("ENC-V");
  adm.set_expected_version(1);
  grpc::Status as = Publish(stub_.get(), adm);
  EXPECT_EQ(as.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << as.error_message();
  EXPECT_NE(as.error_message().find("changes no referral"), std::string::npos);
  // A new referral may insist that it does not exist yet.
  v1::CareEvent fresh = Referral(nhs_, "REF-V");
  fresh.set_source_message_id("ref-again");
  fresh.set_expected_version(0);
  EXPECT_EQ(Publish(stub_.get(), fresh).error_code(), grpc::StatusCode::ABORTED);
}

TEST_F(WorkflowE2ETest, PathwayChangesFromAnOpenStateAndListReferralsFilters) {
  Advance("REF-P1", v1::ACCEPTED);
  v1::CareEvent change = Status(nhs_, "REF-P1", v1::ACCEPTED, "pw-change");
  change.mutable_referral_status_change()->set_pathway(v1::PATHWAY_2);
  MustPublish(stub_.get(), change);
  EXPECT_EQ(GetReferral(wf_.get(), "REF-P1").pathway(), v1::PATHWAY_2);
  EXPECT_EQ(GetReferral(wf_.get(), "REF-P1").status(), v1::ACCEPTED);

  MustPublish(stub_.get(), Referral(TestNhsNumber(11), "REF-P2", 5, v1::PATHWAY_1, v1::RUGBY));
  Advance("REF-P3", v1::DISCHARGED);

  auto list = [&](v1::ListReferralsRequest req) {
    v1::ListReferralsResponse resp;
    auto ctx = Context();
    grpc::Status s = wf_->ListReferrals(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::string> ids;
    for (const auto& r : resp.referrals()) ids.push_back(r.referral_id());
    return ids;
  };
  v1::ListReferralsRequest open;
  EXPECT_EQ(list(open), (std::vector<std::string>{"REF-P1", "REF-P2"}));  // P3 is closed
  v1::ListReferralsRequest rugby;
  rugby.set_place(v1::RUGBY);
  EXPECT_EQ(list(rugby), (std::vector<std::string>{"REF-P2"}));
  v1::ListReferralsRequest pw2;
  pw2.set_pathway(v1::PATHWAY_2);
  EXPECT_EQ(list(pw2), (std::vector<std::string>{"REF-P1"}));
  v1::ListReferralsRequest by_state;
  by_state.add_states(v1::CREATED);
  EXPECT_EQ(list(by_state), (std::vector<std::string>{"REF-P2"}));
  v1::ListReferralsRequest closed;
  closed.add_states(v1::DISCHARGED);
  EXPECT_EQ(list(closed), (std::vector<std::string>{"REF-P3"}));
  {
    v1::ListReferralsResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(wf_->ListReferrals(ctx.get(), closed, &resp).ok());
    ASSERT_EQ(resp.referrals_size(), 1);
    EXPECT_EQ(resp.referrals(0).needs().summary(),
              "Lives alone; needs help washing and dressing.");
  }
  v1::ListReferralsRequest by_team;
  *by_team.mutable_team() = kSocialCare;
  by_team.set_include_closed(true);
  // Oldest referral first: P3 was created ten minutes ago too, P2 five.
  EXPECT_EQ(list(by_team), (std::vector<std::string>{"REF-P1", "REF-P3", "REF-P2"}));
  v1::ListReferralsRequest other_team;
  *other_team.mutable_team() = Team("WCC", "HSCT-GEH");
  EXPECT_TRUE(list(other_team).empty());
}

TEST_F(WorkflowE2ETest, TeamRoutingReachesTheRightTeamsAndOnlyThem) {
  const v1::TeamRef brokerage_cov = Team("CCC", "BROKERAGE");
  const v1::TeamRef brokerage_cov_beds = Team("CCC", "BROKERAGE-BEDS");
  const v1::TeamRef brokerage_rugby = Team("WCC", "BROKERAGE-RUGBY");
  Register(wf_.get(), kWard, v1::ROLE_DISCHARGE, v1::COVENTRY);
  Register(wf_.get(), kSocialCare, v1::ROLE_SOCIAL_CARE, v1::COVENTRY);
  Register(wf_.get(), brokerage_cov, v1::ROLE_BROKERAGE, v1::COVENTRY, {v1::HOME_SUPPORT});
  Register(wf_.get(), brokerage_cov_beds, v1::ROLE_BROKERAGE, v1::COVENTRY,
           {v1::RESIDENTIAL, v1::NURSING});
  Register(wf_.get(), brokerage_rugby, v1::ROLE_BROKERAGE, v1::RUGBY);

  Advance("REF-T", v1::OFFER_ACCEPTED);
  // Traffic nobody in particular should get.
  v1::CareEvent adm = Envelope(nhs_, "adm-1");
  adm.mutable_admission()->set_encounter_id("ENC-1");
  MustPublish(stub_.get(), adm);

  // All five teams subscribe at once, each for 1.5 s.
  const std::vector<v1::TeamRef> teams = {kSocialCare, kWard, brokerage_cov, brokerage_cov_beds,
                                          brokerage_rugby};
  std::vector<std::multiset<int>> got(teams.size());
  std::vector<std::thread> readers;
  for (size_t i = 0; i < teams.size(); ++i) {
    readers.emplace_back([&, i] {
      for (const auto& r : Collect(stub_.get(), AsTeam(teams[i]), 1500ms)) {
        got[i].insert(r.event().event_type());
      }
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(got[0], (std::multiset<int>{v1::DISCHARGE_REFERRAL}));
  // The ward hears back: social care's status changes and the offer.
  EXPECT_EQ(got[1], (std::multiset<int>{v1::REFERRAL_STATUS_CHANGE, v1::REFERRAL_STATUS_CHANGE,
                                        v1::PLACEMENT_OFFER}));
  EXPECT_EQ(got[2], (std::multiset<int>{v1::PLACEMENT_REQUEST, v1::PLACEMENT_OFFER,
                                        v1::PLACEMENT_ACCEPTANCE}));
  // Another service type hears only the offers and answers of its Place
  // (the beds team brokers the same Place); another Place hears nothing.
  EXPECT_EQ(got[3], (std::multiset<int>{v1::PLACEMENT_OFFER, v1::PLACEMENT_ACCEPTANCE}));
  EXPECT_TRUE(got[4].empty());

  // An unregistered team cannot subscribe.
  grpc::Status finish;
  Collect(stub_.get(), AsTeam(Team("XYZ", "NOBODY")), 2000ms, &finish);
  EXPECT_EQ(finish.error_code(), grpc::StatusCode::NOT_FOUND) << finish.error_message();
  EXPECT_NE(finish.error_message().find("XYZ/NOBODY is not registered"), std::string::npos);
}

TEST_F(WorkflowE2ETest, CareSummaryFollowsEventsAndIsSentToTeamsWithACareRelationship) {
  const v1::TeamRef gp = Team("M86001", "PRACTICE");
  Register(wf_.get(), gp, v1::ROLE_GP_PRACTICE, v1::COVENTRY);
  const std::string other = TestNhsNumber(12);

  v1::CareEvent reg = Envelope(nhs_, "gp-1", 120, "emis-m86001", "M86001", v1::GP);
  reg.mutable_gp_registration()->set_practice("M86001");
  MustPublish(stub_.get(), reg);
  v1::CareEvent adm = Envelope(nhs_, "adm-1", 90);
  adm.mutable_admission()->set_encounter_id("ENC-1");
  adm.mutable_admission()->mutable_location()->set_ward("Ward 33");
  MustPublish(stub_.get(), adm);
  v1::CareEvent contrib = Envelope(nhs_, "sum-1", 80);
  auto* allergy = contrib.mutable_care_summary_contribution()->add_allergies();
  allergy->set_system("http://snomed.info/sct");
  allergy->set_code("91936005");
  allergy->set_display("Penicillin allergy");
  contrib.mutable_care_summary_contribution()->add_alerts("Safeguarding concern - see record");
  MustPublish(stub_.get(), contrib);
  // 30 minutes ago: inside the 60-minute forwarding deadline (no escalation).
  MustPublish(stub_.get(), Referral(nhs_, "REF-S", 30));
  v1::CareEvent unrelated = Envelope(other, "adm-2", 20);
  unrelated.mutable_admission()->set_encounter_id("ENC-2");
  MustPublish(stub_.get(), unrelated);

  v1::GetCareSummaryRequest sreq;
  sreq.set_nhs_number(nhs_);
  v1::CareSummary summary;
  auto ctx = Context();
  ASSERT_TRUE(wf_->GetCareSummary(ctx.get(), sreq, &summary).ok());
  EXPECT_EQ(summary.nhs_number(), nhs_);
  EXPECT_EQ(summary.registered_gp_practice(), "M86001");
  EXPECT_EQ(summary.location().kind(), v1::CurrentLocation::IN_HOSPITAL);
  EXPECT_EQ(summary.location().location().ward(), "Ward 33");
  EXPECT_EQ(summary.open_episode().encounter_id(), "ENC-1");
  EXPECT_EQ(summary.open_referral().referral_id(), "REF-S");
  EXPECT_EQ(summary.open_referral().status(), v1::CREATED);
  EXPECT_TRUE(summary.flags().dementia());
  EXPECT_TRUE(summary.flags().safeguarding());
  for (const auto& alert : summary.alerts()) {
    EXPECT_EQ(alert.find("Safeguarding"), std::string::npos) << "detail leaked: " << alert;
  }
  ASSERT_EQ(summary.allergies_size(), 1);
  EXPECT_EQ(summary.events(), 4u);
  EXPECT_EQ(summary.last_updates_size(), 2);  // emis and uhcw-epr

  // The GP practice follows its patient's summary, not the other person's.
  v1::SubscribeRequest req = AsTeam(gp);
  req.mutable_filter()->set_care_relationship(true);
  req.set_summary_changes(true);
  auto got = Collect(stub_.get(), req, 1500ms);
  ASSERT_EQ(got.size(), 4u);
  for (const auto& r : got) {
    ASSERT_TRUE(r.has_summary_changed());
    EXPECT_EQ(r.summary_changed().nhs_number(), nhs_);
    EXPECT_EQ(r.summary_changed().summary().registered_gp_practice(), "M86001");
  }
  EXPECT_EQ(got[1].summary_changed().cause(), v1::ADMISSION);

  // Unknown person: NOT_FOUND, bad number: INVALID_ARGUMENT.
  sreq.set_nhs_number(TestNhsNumber(99));
  auto c2 = Context();
  EXPECT_EQ(wf_->GetCareSummary(c2.get(), sreq, &summary).error_code(),
            grpc::StatusCode::NOT_FOUND);
  sreq.set_nhs_number("9990000019");
  auto c3 = Context();
  EXPECT_EQ(wf_->GetCareSummary(c3.get(), sreq, &summary).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(WorkflowE2ETest, MergedNumbersAnswerForTheSurvivor) {
  const std::string survivor = TestNhsNumber(20), retired = TestNhsNumber(21);
  v1::CareEvent gp = Envelope(retired, "gp-r", 50, "emis-m86001", "M86001", v1::GP);
  gp.mutable_gp_registration()->set_practice("M86001");
  MustPublish(stub_.get(), gp);
  v1::CareEvent adm = Envelope(survivor, "adm-s", 40);
  adm.mutable_admission()->set_encounter_id("ENC-S");
  MustPublish(stub_.get(), adm);
  v1::CareEvent merge = Envelope(survivor, "merge-1", 30);
  merge.mutable_nhs_number_merge()->set_retired_nhs_number(retired);
  MustPublish(stub_.get(), merge);
  // Later news under the retired number still lands on the survivor.
  v1::CareEvent late = Envelope(retired, "mo-late", 20);
  late.mutable_medically_optimised()->set_encounter_id("ENC-S");
  late.mutable_medically_optimised()->mutable_discharge_ready_date()->set_year(2026);
  late.mutable_medically_optimised()->mutable_discharge_ready_date()->set_month(11);
  late.mutable_medically_optimised()->mutable_discharge_ready_date()->set_day(22);
  MustPublish(stub_.get(), late);

  v1::GetCareSummaryRequest sreq;
  sreq.set_nhs_number(retired);
  v1::CareSummary summary;
  auto ctx = Context();
  ASSERT_TRUE(wf_->GetCareSummary(ctx.get(), sreq, &summary).ok());
  EXPECT_EQ(summary.nhs_number(), survivor);
  EXPECT_EQ(summary.requested_nhs_number(), retired);
  EXPECT_EQ(summary.registered_gp_practice(), "M86001");  // from the retired record
  EXPECT_EQ(summary.open_episode().encounter_id(), "ENC-S");
  EXPECT_EQ(summary.open_episode().discharge_ready_date().day(), 22);
  ASSERT_EQ(summary.retired_nhs_numbers_size(), 1);
  EXPECT_EQ(summary.retired_nhs_numbers(0), retired);

  for (const std::string& asked : {retired, survivor}) {
    v1::GetPatientHistoryRequest hreq;
    hreq.set_nhs_number(asked);
    hreq.set_page_size(2);  // pages across both numbers
    std::vector<std::string> ids;
    std::string surviving;
    do {
      v1::GetPatientHistoryResponse hist;
      auto hctx = Context();
      ASSERT_TRUE(stub_->GetPatientHistory(hctx.get(), hreq, &hist).ok());
      surviving = hist.surviving_nhs_number();
      for (const auto& e : hist.events()) ids.push_back(e.source_message_id());
      hreq.set_page_token(hist.next_page_token());
    } while (!hreq.page_token().empty());
    EXPECT_EQ(ids, (std::vector<std::string>{"gp-r", "adm-s", "merge-1", "mo-late"})) << asked;
    EXPECT_EQ(surviving, asked == retired ? survivor : "");
  }

  // After a restart, news under the retired number still lands on the
  // survivor (the broker reloads which numbers are retired).
  stub_.reset();
  wf_.reset();
  broker_.reset();
  broker_ = std::make_unique<TestBroker>(dir_.path());
  stub_ = broker_->NewStub();
  wf_ = broker_->NewWorkflowStub();
  v1::CareEvent gp2 = Envelope(retired, "gp-r2", 5, "emis-m86001", "M86001", v1::GP);
  gp2.mutable_gp_registration()->set_practice("M86002");
  MustPublish(stub_.get(), gp2);
  sreq.set_nhs_number(survivor);
  auto ctx2 = Context();
  ASSERT_TRUE(wf_->GetCareSummary(ctx2.get(), sreq, &summary).ok());
  EXPECT_EQ(summary.registered_gp_practice(), "M86002");
  EXPECT_EQ(summary.events(), 5u);

  // A merge keeps the person's live referral: here the survivor's is closed
  // and the retired number's is open.
  const std::string s2 = TestNhsNumber(23), r2 = TestNhsNumber(24);
  auto referral_of = [&](const std::string& nhs, const std::string& ref, int minutes_ago) {
    v1::CareEvent e = Referral(nhs, ref, minutes_ago);
    e.set_source_message_id("ref-" + ref);
    return e;
  };
  MustPublish(stub_.get(), referral_of(s2, "OLD-S2", 9));
  v1::CareEvent wd = Status(s2, "OLD-S2", v1::WITHDRAWN, "old-wd");
  MustPublish(stub_.get(), wd);
  MustPublish(stub_.get(), referral_of(r2, "LIVE-R2", 8));
  v1::CareEvent merge2 = Envelope(s2, "merge-s2", 1);
  merge2.mutable_nhs_number_merge()->set_retired_nhs_number(r2);
  MustPublish(stub_.get(), merge2);
  sreq.set_nhs_number(s2);
  auto ctx3 = Context();
  ASSERT_TRUE(wf_->GetCareSummary(ctx3.get(), sreq, &summary).ok());
  EXPECT_EQ(summary.open_referral().referral_id(), "LIVE-R2");
  // ... and events about it under the survivor's number are accepted.
  MustPublish(stub_.get(), Status(s2, "LIVE-R2", v1::ACCEPTED, "live-acc"));

  // A merge into a retired number, or of a number merged already, is refused.
  v1::CareEvent again = Envelope(TestNhsNumber(22), "merge-2", 10);
  again.mutable_nhs_number_merge()->set_retired_nhs_number(retired);
  grpc::Status s = Publish(stub_.get(), again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("already merged into " + survivor), std::string::npos)
      << s.error_message();
}

// Coventry's BCF plan 2022/23 table (002:180-188), generated as event
// streams with those timings, published over gRPC and read back through
// GetFlowMetrics: the broker must reproduce the table.
TEST(WorkflowFlowTest, FlowMetricsReproduceTheCoventry2022Table) {
  TempDir dir;
  broker::BrokerOptions options = icr::testing::TestBrokerOptions(dir.path());
  options.escalation.enabled = false;  // 2022 events: every deadline is long past
  TestBroker broker(options);
  auto stub = broker.NewStub();
  auto wf = broker.NewWorkflowStub();
  const auto scenario = broker::workflow::CoventryTable2022Scenario(20);
  std::vector<v1::CareEvent> events = broker::workflow::BuildFlowScenario(scenario);
  ASSERT_GT(events.size(), 500u);
  for (size_t i = 0; i < events.size(); i += 200) {
    v1::PublishBatchRequest req;
    for (size_t j = i; j < std::min(events.size(), i + 200); ++j) *req.add_events() = events[j];
    v1::PublishBatchResponse resp;
    auto ctx = Context();
    grpc::Status s = stub->PublishBatch(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  }
  struct Row {
    double pw1_minutes, pw2_minutes, pw1_offer, pw2_offer, pw1_discharge, pw2_discharge;
  };
  const Row table[2] = {{31, 34, 0, 1, 2, 3}, {29, 32, 0, 2, 2, 3}};
  ASSERT_EQ(scenario.periods.size(), 2u);
  for (int p = 0; p < 2; ++p) {
    v1::GetFlowMetricsRequest req;
    broker::SetTimestamp(req.mutable_from(), scenario.periods[p].from_micros);
    broker::SetTimestamp(req.mutable_to(), scenario.periods[p].to_micros);
    req.set_place(v1::COVENTRY);
    v1::FlowMetrics m;
    auto ctx = Context();
    grpc::Status s = wf->GetFlowMetrics(ctx.get(), req, &m);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(m.pathways_size(), 4);
    const v1::PathwayFlow& pw1 = m.pathways(1);
    const v1::PathwayFlow& pw2 = m.pathways(2);
    ASSERT_EQ(pw1.pathway(), v1::PATHWAY_1);
    SCOPED_TRACE("period " + std::to_string(p + 1));
    EXPECT_EQ(pw1.minutes_referral_to_brokerage().count(), 20u);
    EXPECT_DOUBLE_EQ(pw1.minutes_referral_to_brokerage().mean(), table[p].pw1_minutes);
    EXPECT_DOUBLE_EQ(pw2.minutes_referral_to_brokerage().mean(), table[p].pw2_minutes);
    EXPECT_DOUBLE_EQ(pw1.days_brokerage_to_offer().mean(), table[p].pw1_offer);
    EXPECT_DOUBLE_EQ(pw2.days_brokerage_to_offer().mean(), table[p].pw2_offer);
    EXPECT_DOUBLE_EQ(pw1.days_offer_to_discharge().mean(), table[p].pw1_discharge);
    EXPECT_DOUBLE_EQ(pw2.days_offer_to_discharge().mean(), table[p].pw2_discharge);
    EXPECT_EQ(pw1.discharges(), 20u);
  }
  // Another Place has none of it.
  v1::GetFlowMetricsRequest rugby;
  broker::SetTimestamp(rugby.mutable_from(), scenario.periods[0].from_micros);
  broker::SetTimestamp(rugby.mutable_to(), scenario.periods[1].to_micros);
  rugby.set_place(v1::RUGBY);
  v1::FlowMetrics m;
  auto ctx = Context();
  ASSERT_TRUE(wf->GetFlowMetrics(ctx.get(), rugby, &m).ok());
  EXPECT_EQ(m.pathways(1).discharges(), 0u);
  // A period that ends before it starts is refused.
  v1::GetFlowMetricsRequest bad = rugby;
  std::swap(*bad.mutable_from(), *bad.mutable_to());
  auto ctx2 = Context();
  EXPECT_EQ(wf->GetFlowMetrics(ctx2.get(), bad, &m).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(WorkflowTimersTest, EscalationsFireOnTimeAndSurviveARestart) {
  TempDir dir;
  broker::BrokerOptions options = icr::testing::TestBrokerOptions(dir.path());
  options.workflow.management_plan_seconds = 3;
  options.workflow.forward_to_brokerage_seconds = 3600;
  options.escalation.poll_ms = 100;
  const std::string nhs = TestNhsNumber(30);
  {
    TestBroker broker(options);
    auto stub = broker.NewStub();
    auto wf = broker.NewWorkflowStub();
    Register(wf.get(), kSocialCare, v1::ROLE_SOCIAL_CARE, v1::COVENTRY);
    // Created 0 minutes ago: due in 3 s. The broker stops before then.
    v1::CareEvent r = Referral(nhs, "REF-E", 0);
    MustPublish(stub.get(), r);
    // Accepted in time: its deadline must never fire.
    MustPublish(stub.get(), Referral(nhs, "REF-OK", 0));
    MustPublish(stub.get(), Status(nhs, "REF-OK", v1::ACCEPTED, "ok-acc", 0));
    EXPECT_TRUE(GetReferral(wf.get(), "REF-E").open_escalations().empty());
  }
  std::this_thread::sleep_for(4s);  // the deadline passes while the broker is down
  const int64_t restarted = broker::NowMicros();
  TestBroker broker(options);
  auto stub = broker.NewStub();
  auto wf = broker.NewWorkflowStub();
  // The restarted broker finds the deadline in the store and escalates to
  // the referral's team, URGENT.
  v1::SubscribeRequest req = AsTeam(kSocialCare);
  req.mutable_filter()->add_event_types(v1::ESCALATION);
  auto got = Collect(stub.get(), req, 3000ms);
  ASSERT_EQ(got.size(), 1u);
  const v1::CareEvent& e = got[0].event();
  EXPECT_EQ(e.escalation().referral_id(), "REF-E");
  EXPECT_EQ(e.escalation().kind(), v1::NO_MANAGEMENT_PLAN);
  EXPECT_EQ(e.escalation().referral_status(), v1::CREATED);
  EXPECT_EQ(e.priority(), v1::URGENT);
  EXPECT_EQ(e.source_system_id(), "icr-broker");
  // Raised by the restarted broker, not before the stop.
  EXPECT_GE(broker::ToMicros(e.recorded_at()), restarted);
  v1::Referral ref = GetReferral(wf.get(), "REF-E");
  ASSERT_EQ(ref.open_escalations_size(), 1);
  EXPECT_EQ(ref.open_escalations(0), v1::NO_MANAGEMENT_PLAN);
  EXPECT_TRUE(GetReferral(wf.get(), "REF-OK").open_escalations().empty());
  // Accepting it resolves the escalation.
  MustPublish(stub.get(), Status(nhs, "REF-E", v1::ACCEPTED, "e-acc", 0));
  EXPECT_TRUE(GetReferral(wf.get(), "REF-E").open_escalations().empty());
  // Publishers cannot raise escalations themselves.
  v1::CareEvent fake = Envelope(nhs, "fake-esc", 0);
  fake.mutable_escalation()->set_referral_id("REF-E");
  fake.mutable_escalation()->set_kind(v1::NO_OFFER);
  broker::SetTimestamp(fake.mutable_escalation()->mutable_deadline(), broker::NowMicros());
  EXPECT_EQ(Publish(stub.get(), fake).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(WorkflowTimersTest, D2aBeyondItsLimitEscalatesUntilReablementEnds) {
  TempDir dir;
  broker::BrokerOptions options = icr::testing::TestBrokerOptions(dir.path());
  options.workflow.d2a_max_seconds = 2;  // stands in for 6 weeks
  options.escalation.poll_ms = 100;
  TestBroker broker(options);
  auto stub = broker.NewStub();
  auto wf = broker.NewWorkflowStub();
  const std::string nhs = TestNhsNumber(32);
  auto now_status = [&](const std::string& ref, v1::ReferralStatus st, const std::string& id) {
    v1::CareEvent e = Status(nhs, ref, st, id);
    broker::SetTimestamp(e.mutable_occurred_at(), broker::NowMicros());
    return e;
  };
  MustPublish(stub.get(), Referral(nhs, "REF-D2A", 0));
  MustPublish(stub.get(), now_status("REF-D2A", v1::ACCEPTED, "d-acc"));
  MustPublish(stub.get(), now_status("REF-D2A", v1::FORWARDED_TO_BROKERAGE, "d-fwd"));
  MustPublish(stub.get(), Request(nhs, "REF-D2A", "D2A-R"));
  MustPublish(stub.get(), Offer(nhs, "D2A-R", "D2A-O"));
  MustPublish(stub.get(), Answer(nhs, "D2A-O", true, "d-yes"));
  MustPublish(stub.get(), now_status("REF-D2A", v1::SERVICE_CONFIRMED, "d-conf"));
  MustPublish(stub.get(), now_status("REF-D2A", v1::DISCHARGED, "d-dis"));
  ASSERT_TRUE(GetReferral(wf.get(), "REF-D2A").in_d2a());

  v1::SubscribeRequest req;
  req.mutable_start()->set_earliest(true);
  req.mutable_filter()->add_event_types(v1::ESCALATION);
  auto got = Collect(stub.get(), req, 3000ms);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].event().escalation().kind(), v1::D2A_OVER_SIX_WEEKS);
  EXPECT_EQ(got[0].event().escalation().referral_status(), v1::DISCHARGED);
  // Still counted as open in the flow metrics while the person is in D2A.
  v1::GetFlowMetricsRequest mreq;
  broker::SetTimestamp(mreq.mutable_from(), broker::NowMicros() - 3600LL * 1000000);
  broker::SetTimestamp(mreq.mutable_to(), broker::NowMicros() + 60LL * 1000000);
  v1::FlowMetrics m;
  {
    auto ctx = Context();
    ASSERT_TRUE(wf->GetFlowMetrics(ctx.get(), mreq, &m).ok());
  }
  EXPECT_EQ(m.open_escalations(), 1u);

  // The end of reablement ends D2A capacity and resolves the escalation.
  v1::CareEvent end = Envelope(nhs, "reab-end", 0, "ccc-liquidlogic", "CCC", v1::SOCIAL_CARE);
  end.mutable_reablement_end()->set_episode_id("REAB-1");
  end.mutable_reablement_end()->mutable_end_date()->set_year(2026);
  end.mutable_reablement_end()->mutable_end_date()->set_month(11);
  end.mutable_reablement_end()->mutable_end_date()->set_day(22);
  MustPublish(stub.get(), end);
  v1::Referral after = GetReferral(wf.get(), "REF-D2A");
  EXPECT_FALSE(after.in_d2a());
  EXPECT_TRUE(after.open_escalations().empty());
}

TEST(WorkflowTimersTest, NoOfferEscalatesAgainOnlyAfterAFreshWindowFollowingADecline) {
  TempDir dir;
  broker::BrokerOptions options = icr::testing::TestBrokerOptions(dir.path());
  options.workflow.offer_seconds[1] = 2;  // pathway 1: an offer within 2 s
  options.escalation.poll_ms = 100;
  TestBroker broker(options);
  auto stub = broker.NewStub();
  auto wf = broker.NewWorkflowStub();
  const std::string nhs = TestNhsNumber(31);
  MustPublish(stub.get(), Referral(nhs, "REF-N", 0));
  MustPublish(stub.get(), Status(nhs, "REF-N", v1::ACCEPTED, "n-acc", 0));
  MustPublish(stub.get(), Status(nhs, "REF-N", v1::FORWARDED_TO_BROKERAGE, "n-fwd", 0));
  MustPublish(stub.get(), Request(nhs, "REF-N", "REF-N-R"));

  v1::SubscribeRequest req;
  req.mutable_start()->set_earliest(true);
  req.mutable_filter()->add_event_types(v1::ESCALATION);
  auto first = Collect(stub.get(), req, 3000ms);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].event().escalation().kind(), v1::NO_OFFER);
  EXPECT_EQ(GetReferral(wf.get(), "REF-N").open_escalations_size(), 1);

  // An offer resolves it; a decline starts a fresh 2 s window.
  MustPublish(stub.get(), Offer(nhs, "REF-N-R", "REF-N-O"));
  EXPECT_TRUE(GetReferral(wf.get(), "REF-N").open_escalations().empty());
  v1::CareEvent no = Answer(nhs, "REF-N-O", false, "n-no");
  broker::SetTimestamp(no.mutable_occurred_at(), broker::NowMicros());
  MustPublish(stub.get(), no);
  auto both = Collect(stub.get(), req, 3500ms);
  ASSERT_EQ(both.size(), 2u);
  const int64_t d1 = broker::ToMicros(both[0].event().escalation().deadline());
  const int64_t d2 = broker::ToMicros(both[1].event().escalation().deadline());
  EXPECT_GE(d2 - d1, 1000000) << "the second window must start at the decline";
  EXPECT_EQ(GetReferral(wf.get(), "REF-N").open_escalations_size(), 1);
}

}  // namespace
}  // namespace icr
