#include "broker/workflow_service.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "broker/access.h"
#include "broker/governance/minimise.h"
#include "broker/grpc_status.h"
#include "broker/hub.h"
#include "broker/nhs_number.h"
#include "broker/timestamp.h"
#include "broker/validation.h"
#include "broker/workflow/metrics.h"
#include "broker/workflow/referral.h"
#include "broker/workflow/state_machine.h"
#include "broker/workflow_reader.h"

namespace icr::broker {
namespace {

namespace keys = workflow::keys;
using icr::v1::Referral;

constexpr uint32_t kDefaultListLimit = 100;
constexpr uint32_t kMaxListLimit = 10000;
constexpr size_t kMaxTeamNameBytes = 200;


std::string TeamRefProblem(icr::v1::TeamRef* ref, const std::string& path) {
  if (auto p = OdsCodeProblem(ref->mutable_organisation(), path + ".organisation"); !p.empty()) {
    return p;
  }
  const std::string& code = ref->team_code();
  if (code.empty() || code.size() > 64 ||
      !std::all_of(code.begin(), code.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      })) {
    return path + ".team_code: must be 1..64 characters of A-Z a-z 0-9 - _ . (e.g. HSCT-UHCW)";
  }
  return {};
}

bool SameTeam(const icr::v1::TeamRef& a, const icr::v1::TeamRef& b) {
  return a.organisation() == b.organisation() && a.team_code() == b.team_code();
}

// Identifies the caller and checks it may run `query` ("" : any identified
// caller may); false when refused (answered already). Without a policy
// (access null) everything is allowed.
bool Admit(AccessControl* access, grpc::CallbackServerContext* ctx,
           grpc::ServerUnaryReactor* reactor, std::string_view query, Caller* caller,
           const std::string& nhs = "") {
  if (access == nullptr) return true;
  store::Status s = access->Identify(*ctx, caller);
  if (s.ok() && !query.empty()) s = access->RequireQuery(*caller, query, nhs);
  if (s.ok()) return true;
  reactor->Finish(ToGrpc(s));
  return false;
}

// Audits the referrals about to be disclosed (one record per person) and
// minimises them to the caller's profile. Not OK: disclose nothing.
store::Status DiscloseReferrals(AccessControl* access, const Caller& caller,
                                std::vector<Referral*> referrals) {
  if (access == nullptr || referrals.empty()) return {};
  std::vector<icr::v1::AuditRecord> records;
  std::map<std::string, size_t> by_person;
  for (const Referral* r : referrals) {
    auto [it, added] = by_person.emplace(r->nhs_number(), records.size());
    if (added) {
      records.push_back(access->Record(caller, icr::v1::REFERRAL_READ));
      records.back().set_nhs_number(r->nhs_number());
      records.back().set_purpose(icr::v1::DIRECT_CARE);
    }
    records[it->second].set_detail(records[it->second].detail() +
                                   (records[it->second].detail().empty() ? "referral " : ", ") +
                                   r->referral_id());
  }
  if (store::Status s = access->Audit(std::move(records)); !s.ok()) return s;
  if (caller.principal->profile) {
    for (Referral* r : referrals) {
      // Safeguarding detail is sensitive: only profiles that allow it see it.
      if (!caller.principal->profile->sensitive.count(icr::v1::SAFEGUARDING)) {
        r->mutable_needs()->clear_safeguarding_detail();
      }
    }
  }
  return {};
}

}  // namespace

grpc::ServerUnaryReactor* WorkflowService::RegisterTeam(grpc::CallbackServerContext* ctx,
                                                        const icr::v1::RegisterTeamRequest* request,
                                                        icr::v1::Team* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "teams", &caller)) return reactor;
  icr::v1::Team team = request->team();
  if (auto p = TeamRefProblem(team.mutable_ref(), "team.ref"); !p.empty()) {
    reactor->Finish(Invalid(p));
    return reactor;
  }
  if (team.role() == icr::v1::TEAM_ROLE_UNSPECIFIED || !icr::v1::TeamRole_IsValid(team.role())) {
    reactor->Finish(Invalid("team.role: is required (ROLE_DISCHARGE, ROLE_SOCIAL_CARE, "
                            "ROLE_BROKERAGE, ROLE_PROVIDER, ROLE_GP_PRACTICE or ROLE_COMMUNITY)"));
    return reactor;
  }
  if ((team.role() == icr::v1::ROLE_BROKERAGE || team.role() == icr::v1::ROLE_SOCIAL_CARE) &&
      team.place() == icr::v1::PLACE_UNSPECIFIED) {
    reactor->Finish(Invalid("team.place: is required for " +
                            icr::v1::TeamRole_Name(team.role()) +
                            " teams (placement requests are routed by Place)"));
    return reactor;
  }
  if (team.name().size() > kMaxTeamNameBytes) {
    reactor->Finish(Invalid("team.name: at most " + std::to_string(kMaxTeamNameBytes) + " bytes"));
    return reactor;
  }
  if (!icr::v1::Place_IsValid(team.place())) {
    reactor->Finish(Invalid("team.place: " + std::to_string(team.place()) + " is not a Place"));
    return reactor;
  }
  for (int t : team.service_types()) {
    if (t == icr::v1::SERVICE_TYPE_UNSPECIFIED || !icr::v1::ServiceType_IsValid(t)) {
      reactor->Finish(Invalid("team.service_types: " + std::to_string(t) +
                              " is not a ServiceType"));
      return reactor;
    }
  }
  if (team.role() != icr::v1::ROLE_BROKERAGE && team.service_types_size() > 0) {
    reactor->Finish(Invalid("team.service_types: only ROLE_BROKERAGE teams broker service types"));
    return reactor;
  }
  SetTimestamp(team.mutable_registered_at(), NowMicros());
  store::Status s = store_->PutState(keys::TeamKey(team.ref()), team.SerializeAsString());
  if (!s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  *response = std::move(team);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkflowService::ListTeams(grpc::CallbackServerContext* ctx,
                                                     const icr::v1::ListTeamsRequest* request,
                                                     icr::v1::ListTeamsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "", &caller)) return reactor;
  std::vector<icr::v1::Team> teams;
  store::Status s = ListAllTeams(store_, &teams);
  if (!s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  for (auto& t : teams) {
    if (request->place() != icr::v1::PLACE_UNSPECIFIED && t.place() != request->place()) continue;
    if (request->role() != icr::v1::TEAM_ROLE_UNSPECIFIED && t.role() != request->role()) continue;
    *response->add_teams() = std::move(t);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkflowService::GetReferral(grpc::CallbackServerContext* ctx,
                                                       const icr::v1::GetReferralRequest* request,
                                                       icr::v1::Referral* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "referrals", &caller)) return reactor;
  if (request->referral_id().empty()) {
    reactor->Finish(Invalid("referral_id: is required"));
    return reactor;
  }
  store::Status s = ReadReferral(store_, request->referral_id(), response);
  if (s.ok()) s = DiscloseReferrals(access_, caller, {response});
  if (!s.ok()) response->Clear();
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* WorkflowService::ListReferrals(
    grpc::CallbackServerContext* ctx, const icr::v1::ListReferralsRequest* request,
    icr::v1::ListReferralsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "referrals", &caller)) return reactor;
  if (request->limit() > kMaxListLimit) {
    reactor->Finish(Invalid("limit: " + std::to_string(request->limit()) +
                            " exceeds the limit of " + std::to_string(kMaxListLimit)));
    return reactor;
  }
  icr::v1::TeamRef team = request->team();
  const bool by_team = request->has_team();
  if (by_team) {
    if (auto p = TeamRefProblem(&team, "team"); !p.empty()) {
      reactor->Finish(Invalid(p));
      return reactor;
    }
  }
  if (!icr::v1::Place_IsValid(request->place())) {
    reactor->Finish(Invalid("place: " + std::to_string(request->place()) + " is not a Place"));
    return reactor;
  }
  if (!icr::v1::DischargePathway_IsValid(request->pathway())) {
    reactor->Finish(Invalid("pathway: " + std::to_string(request->pathway()) +
                            " is not a DischargePathway"));
    return reactor;
  }
  std::set<int> states(request->states().begin(), request->states().end());
  for (int st : states) {
    if (!icr::v1::ReferralStatus_IsValid(st) || st == icr::v1::REFERRAL_STATUS_UNSPECIFIED) {
      reactor->Finish(Invalid("states: " + std::to_string(st) + " is not a referral state"));
      return reactor;
    }
  }
  const bool include_closed =
      request->include_closed() || states.count(icr::v1::DISCHARGED) || states.count(icr::v1::WITHDRAWN);
  const uint32_t limit = request->limit() == 0 ? kDefaultListLimit : request->limit();

  std::vector<Referral> matched;
  store::Status inner;
  auto consider = [&](const Referral& r) {
    if (!states.empty() && !states.count(r.status())) return;
    if (request->place() != icr::v1::PLACE_UNSPECIFIED && r.place() != request->place()) return;
    if (request->pathway() != icr::v1::DISCHARGE_PATHWAY_UNSPECIFIED &&
        r.pathway() != request->pathway()) {
      return;
    }
    if (by_team && !SameTeam(r.referrer(), team) && !SameTeam(r.addressee(), team)) return;
    matched.push_back(r);
  };
  store::Status s;
  if (include_closed) {
    s = ScanReferrals(store_, [&](Referral&& r) {
      consider(r);
      return true;
    });
  } else {
    // Open referrals have an index entry each: no need to read closed ones.
    std::vector<std::string> ids;
    s = store_->ScanState(std::string(keys::kOpen), [&](std::string_view k, std::string_view) {
      ids.emplace_back(k.substr(keys::kOpen.size()));
      return true;
    });
    for (size_t i = 0; s.ok() && inner.ok() && i < ids.size(); ++i) {
      std::string bytes;
      inner = store_->GetState(keys::Key(keys::kReferral, ids[i]), &bytes);
      if (inner.code() == store::StatusCode::kNotFound) {
        inner = store::Status::Ok();  // closed since the index was read
        continue;
      }
      Referral r;
      if (inner.ok() && !r.ParseFromString(bytes)) {
        inner = store::Status::Corruption("the stored referral " + ids[i] + " could not be parsed");
      }
      if (inner.ok()) consider(r);
    }
  }
  if (s.ok()) s = inner;
  if (!s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  std::sort(matched.begin(), matched.end(), [](const Referral& a, const Referral& b) {
    const int64_t ta = ToMicros(a.created_at()), tb = ToMicros(b.created_at());
    return ta != tb ? ta < tb : a.referral_id() < b.referral_id();
  });
  if (matched.size() > limit) {
    matched.resize(limit);
    response->set_truncated(true);
  }
  // The needs' free text, only for the referrals answered.
  for (Referral& r : matched) {
    if (store::Status fs = FillReferralNeeds(store_, &r); !fs.ok()) {
      reactor->Finish(ToGrpc(fs));
      return reactor;
    }
  }
  std::vector<Referral*> shown;
  for (Referral& r : matched) shown.push_back(&r);
  if (store::Status ds = DiscloseReferrals(access_, caller, shown); !ds.ok()) {
    reactor->Finish(ToGrpc(ds));
    return reactor;
  }
  for (auto& r : matched) *response->add_referrals() = std::move(r);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkflowService::GetCareSummary(
    grpc::CallbackServerContext* ctx, const icr::v1::GetCareSummaryRequest* request,
    icr::v1::CareSummary* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (access_ != nullptr) {
    store::Status s = access_->Identify(*ctx, &caller);
    if (!s.ok()) {
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
  }
  const std::string nhs = NormaliseNhsNumber(request->nhs_number());
  if (auto p = NhsNumberProblem(nhs); !p.empty()) {
    reactor->Finish(Invalid("nhs_number: " + p));
    return reactor;
  }
  icr::v1::Purpose purpose = request->purpose();
  std::string legal_basis;
  if (access_ != nullptr) {
    store::Status s =
        access_->CheckPersonRead(caller, "care_summary", nhs, "summary", &purpose, &legal_basis);
    if (!s.ok()) {
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
  }
  store::Status s = ReadCareSummary(store_, nhs, response);
  if (s.ok() && access_ != nullptr) {
    // Audited before it is answered, minimised to the caller's profile.
    icr::v1::AuditRecord r = access_->Record(caller, icr::v1::SUMMARY_READ);
    r.set_nhs_number(response->nhs_number());
    r.set_purpose(purpose);
    r.set_legal_basis(legal_basis);
    r.set_detail("GetCareSummary");
    s = access_->Audit({std::move(r)});
    if (s.ok() && caller.principal->profile) {
      governance::MinimiseSummary(*caller.principal->profile, response);
    }
  }
  if (!s.ok()) response->Clear();
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* WorkflowService::GetFlowMetrics(
    grpc::CallbackServerContext* ctx, const icr::v1::GetFlowMetricsRequest* request,
    icr::v1::FlowMetrics* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "flow_metrics", &caller)) return reactor;
  if (!request->has_from() || !request->has_to()) {
    reactor->Finish(Invalid("from and to: both are required (the period is [from, to))"));
    return reactor;
  }
  for (const auto* t : {&request->from(), &request->to()}) {
    if (!InTimestampRange(*t)) {
      reactor->Finish(Invalid("from and to: must be valid timestamps (years 1 to 9999)"));
      return reactor;
    }
  }
  const int64_t from = ToMicros(request->from()), to = ToMicros(request->to());
  if (to <= from) {
    reactor->Finish(Invalid("to: must be after from"));
    return reactor;
  }
  if (!icr::v1::Place_IsValid(request->place())) {
    reactor->Finish(Invalid("place: " + std::to_string(request->place()) + " is not a Place"));
    return reactor;
  }
  // Every referral is a few hundred bytes and a Place makes about a hundred
  // a day, so a scan is milliseconds even for a year; the fold itself is
  // live (it changes with each event).
  std::vector<Referral> referrals;
  store::Status s = ScanReferrals(store_, [&](Referral&& r) {
    referrals.push_back(std::move(r));
    return true;
  });
  if (!s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  *response = workflow::ComputeFlowMetrics(referrals, from, to, request->place(), NowMicros());
  if (access_ != nullptr) {
    // The drill-down names people: purpose-checked, filtered for purposes
    // beyond direct care, and audited (one record per person) before it is
    // answered.
    icr::v1::Purpose purpose = request->purpose();
    std::string legal_basis;
    if (store::Status ps = access_->CheckPurpose(caller, &purpose, &legal_basis); !ps.ok()) {
      response->Clear();
      reactor->Finish(ToGrpc(ps));
      return reactor;
    }
    auto* rows = response->mutable_awaiting_discharge();
    if (purpose != icr::v1::DIRECT_CARE) {
      rows->erase(std::remove_if(rows->begin(), rows->end(),
                                 [&](const icr::v1::AwaitingDischarge& row) {
                                   return !access_->MayDiscloseFor(purpose, row.nhs_number());
                                 }),
                  rows->end());
    }
    std::vector<icr::v1::AuditRecord> records;
    for (const auto& row : *rows) {
      records.push_back(access_->Record(caller, icr::v1::REFERRAL_READ));
      records.back().set_nhs_number(row.nhs_number());
      records.back().set_purpose(purpose);
      records.back().set_legal_basis(legal_basis);
      records.back().set_detail("flow metrics, awaiting discharge: referral " + row.referral_id());
    }
    if (store::Status as = access_->Audit(std::move(records)); !as.ok()) {
      response->Clear();
      reactor->Finish(ToGrpc(as));
      return reactor;
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace icr::broker
