#include "broker/governance_service.h"

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "broker/access.h"
#include "broker/governance/retention.h"
#include "broker/grpc_status.h"
#include "broker/hub.h"
#include "broker/nhs_number.h"
#include "broker/timestamp.h"

namespace icr::broker {
namespace {

// Identifies the caller and checks it may run `query` ("": any identified
// caller may); false when refused (answered already).
bool Admit(AccessControl* access, grpc::CallbackServerContext* ctx,
           grpc::ServerUnaryReactor* reactor, std::string_view query, Caller* caller) {
  store::Status s = access->Identify(*ctx, caller);
  if (s.ok() && !query.empty()) s = access->RequireQuery(*caller, query);
  if (s.ok()) return true;
  reactor->Finish(ToGrpc(s));
  return false;
}

// The time a retention call judges at: the request's, or now.
bool AsOf(const google::protobuf::Timestamp& as_of, bool has, int64_t* micros) {
  if (!has) {
    *micros = NowMicros();
    return true;
  }
  if (!InTimestampRange(as_of)) return false;
  *micros = ToMicros(as_of);
  return true;
}

// Identifies an operator of retention (the "retention" query) and reads the
// time the request judges at; false when refused (answered already).
template <typename Request>
bool AdmitRetention(AccessControl* access, grpc::CallbackServerContext* ctx,
                    grpc::ServerUnaryReactor* reactor, const Request& request, Caller* caller,
                    int64_t* now) {
  if (!Admit(access, ctx, reactor, "retention", caller)) return false;
  if (AsOf(request.as_of(), request.has_as_of(), now)) return true;
  reactor->Finish(Invalid("as_of: must be a valid timestamp (years 1 to 9999)"));
  return false;
}

template <typename Enum>
void AddAll(bool all, const std::set<int>& values, bool (*valid)(int),
            google::protobuf::RepeatedField<int>* out, int first, int last) {
  if (all) {
    for (int v = first; v <= last; ++v) {
      if (valid(v)) out->Add(v);
    }
    return;
  }
  for (int v : values) out->Add(v);
}

// Streams the verification's progress while a thread of its own walks the
// chain (a long trail must not hold one of gRPC's callback threads).
class VerifyReactor final : public grpc::ServerWriteReactor<icr::v1::VerifyAuditProgress> {
 public:
  explicit VerifyReactor(store::EventStore* store) {
    worker_ = std::thread([this, store] {
      store::AuditVerifyResult result;
      store::Status s = store->VerifyAudit(
          [this](uint64_t checked, uint64_t total) {
            icr::v1::VerifyAuditProgress p;
            p.set_checked(checked);
            p.set_total(total);
            Post(std::move(p), std::nullopt);
          },
          &result);
      icr::v1::VerifyAuditProgress last;
      last.set_done(true);
      last.set_checked(result.checked);
      last.set_total(result.checked);
      last.set_intact(result.intact);
      last.set_first_bad_sequence(result.first_bad_sequence);
      last.set_problem(result.problem);
      last.set_head_hash(result.head_hash);
      Post(std::move(last), ToGrpc(s));
    });
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      broken_ = true;
      MaybeFinishLocked();
      return;
    }
    WriteNextLocked();
  }

  void OnDone() override {
    worker_.join();
    delete this;
  }

 private:
  // Keeps only the newest progress message (the client wants the latest
  // count, not every one); the final message is always written.
  void Post(icr::v1::VerifyAuditProgress p, std::optional<grpc::Status> final_status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_status) {
      final_ = std::move(p);
      status_ = *final_status;
    } else {
      pending_ = std::move(p);
    }
    if (!writing_) WriteNextLocked();
  }

  void WriteNextLocked() {
    if (broken_ || finished_) return MaybeFinishLocked();
    if (pending_) {
      current_ = std::move(*pending_);
      pending_.reset();
    } else if (final_ && status_ && status_->ok()) {
      current_ = std::move(*final_);
      final_.reset();
      wrote_final_ = true;
    } else {
      return MaybeFinishLocked();
    }
    writing_ = true;
    StartWrite(&current_);
  }

  void MaybeFinishLocked() {
    if (finished_ || writing_) return;
    if (broken_) {
      finished_ = true;
      Finish({grpc::StatusCode::CANCELLED, "the client went away"});
      return;
    }
    if (status_ && (wrote_final_ || !status_->ok())) {
      finished_ = true;
      Finish(*status_);
    }
  }

  std::mutex mu_;
  std::thread worker_;
  icr::v1::VerifyAuditProgress current_;
  std::optional<icr::v1::VerifyAuditProgress> pending_;
  std::optional<icr::v1::VerifyAuditProgress> final_;
  std::optional<grpc::Status> status_;
  bool writing_ = false;
  bool broken_ = false;
  bool finished_ = false;
  bool wrote_final_ = false;
};

}  // namespace

grpc::ServerUnaryReactor* GovernanceService::WhoAmI(grpc::CallbackServerContext* ctx,
                                                    const icr::v1::WhoAmIRequest* request,
                                                    icr::v1::WhoAmIResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "", &caller)) return reactor;
  const governance::Principal& p = *caller.principal;
  response->set_principal(p.id);
  response->set_organisation(p.organisation);
  response->set_role(p.role);
  response->set_profile(p.profile ? p.profile->name : "");
  response->set_authenticated(caller.identity.authenticated);
  AddAll<icr::v1::EventType>(p.publish.all_types, p.publish.event_types,
                             icr::v1::EventType_IsValid,
                             response->mutable_publish_event_types(), 100, 200);
  if (p.publish.all_source_organisations) {
    response->add_publish_source_organisations("*");
  } else if (p.publish.source_organisations.empty()) {
    response->add_publish_source_organisations(p.organisation);
  }
  for (const auto& o : p.publish.source_organisations) response->add_publish_source_organisations(o);
  AddAll<icr::v1::EventType>(p.subscribe.all_types, p.subscribe.event_types,
                             icr::v1::EventType_IsValid,
                             response->mutable_subscribe_event_types(), 100, 200);
  for (int purpose : p.purposes) response->add_purposes(static_cast<icr::v1::Purpose>(purpose));
  for (const auto& q : p.queries) response->add_queries(q);
  response->set_policy_version(caller.identity.authenticated ? access_->policy()->version() : 0);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GovernanceService::ReloadPolicy(
    grpc::CallbackServerContext* ctx, const icr::v1::ReloadPolicyRequest* request,
    icr::v1::ReloadPolicyResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "policy", &caller)) return reactor;
  store::Status s = access_->policy()->Reload();
  if (s.ok()) {
    auto policy = access_->policy()->Get();
    response->set_policy_version(access_->policy()->version());
    response->set_principals(static_cast<uint32_t>(policy->principal_count()));
    response->set_profiles(static_cast<uint32_t>(policy->profile_count()));
  }
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerWriteReactor<icr::v1::VerifyAuditProgress>* GovernanceService::VerifyAudit(
    grpc::CallbackServerContext* ctx, const icr::v1::VerifyAuditRequest* request) {
  Caller caller;
  store::Status s = access_->Identify(*ctx, &caller);
  if (s.ok()) s = access_->RequireQuery(caller, "audit");
  if (!s.ok()) {
    class Refused final : public grpc::ServerWriteReactor<icr::v1::VerifyAuditProgress> {
     public:
      explicit Refused(const grpc::Status& status) { Finish(status); }
      void OnDone() override { delete this; }
    };
    return new Refused(ToGrpc(s));
  }
  return new VerifyReactor(store_);
}

grpc::ServerUnaryReactor* GovernanceService::WhoSaw(grpc::CallbackServerContext* ctx,
                                                    const icr::v1::WhoSawRequest* request,
                                                    icr::v1::WhoSawResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "audit", &caller)) return reactor;
  const std::string nhs = NormaliseNhsNumber(request->nhs_number());
  if (auto p = NhsNumberProblem(nhs); !p.empty()) {
    reactor->Finish(Invalid("nhs_number: " + p));
    return reactor;
  }
  if (request->page_size() > 1000) {
    reactor->Finish(Invalid("page_size: " + std::to_string(request->page_size()) +
                            " exceeds the limit of 1000"));
    return reactor;
  }
  const size_t page = request->page_size() == 0 ? 100 : request->page_size();
  uint64_t after = 0;
  if (!request->page_token().empty()) {
    const std::string& token = request->page_token();
    if (token.size() > 20 || token.find_first_not_of("0123456789") != std::string::npos) {
      reactor->Finish(Invalid("page_token: not a token from a previous response"));
      return reactor;
    }
    after = std::strtoull(token.c_str(), nullptr, 10);
  }
  std::vector<icr::v1::AuditRecord> records;
  // One more than the page, to know whether another page exists.
  store::Status s = store_->AuditForPerson(nhs, after, page + 1, &records);
  if (!s.ok()) {
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  const bool more = records.size() > page;
  if (more) records.resize(page);
  for (auto& r : records) *response->add_records() = std::move(r);
  if (more) response->set_next_page_token(std::to_string(response->records().rbegin()->sequence()));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GovernanceService::ReviewRetention(
    grpc::CallbackServerContext* ctx, const icr::v1::ReviewRetentionRequest* request,
    icr::v1::ReviewRetentionResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  int64_t now = 0;
  if (!AdmitRetention(access_, ctx, reactor, *request, &caller, &now)) return reactor;
  governance::RetentionReport report;
  store::Status s = governance::ReviewRetention(
      store_, caller.policy->retention(), now, access_->Record(caller, icr::v1::RETENTION_FLAGGED),
      [](uint64_t, uint64_t) {}, &report);
  response->set_scanned(report.scanned);
  response->set_newly_flagged(report.newly_flagged);
  response->set_flagged(report.flagged);
  response->set_on_hold(report.on_hold);
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* GovernanceService::PurgeRetention(
    grpc::CallbackServerContext* ctx, const icr::v1::PurgeRetentionRequest* request,
    icr::v1::PurgeRetentionResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  int64_t now = 0;
  if (!AdmitRetention(access_, ctx, reactor, *request, &caller, &now)) return reactor;
  governance::RetentionReport report;
  store::Status s = governance::PurgeRetention(
      store_, caller.policy->retention(), now, access_->Record(caller, icr::v1::RETENTION_PURGED),
      &report);
  for (const auto& [nhs, positions] : report.by_person) {
    for (uint64_t p : positions) refresh_(p);
  }
  response->set_purged(report.purged);
  response->set_held(report.held);
  response->set_awaiting_review(report.awaiting_review);
  reactor->Finish(ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* GovernanceService::SetLegalHold(
    grpc::CallbackServerContext* ctx, const icr::v1::SetLegalHoldRequest* request,
    icr::v1::SetLegalHoldResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (!Admit(access_, ctx, reactor, "retention", &caller)) return reactor;
  const std::string nhs = NormaliseNhsNumber(request->nhs_number());
  if (auto p = NhsNumberProblem(nhs); !p.empty()) {
    reactor->Finish(Invalid("nhs_number: " + p));
    return reactor;
  }
  if (request->hold() && request->reason().empty()) {
    reactor->Finish(Invalid("reason: is required to place a legal hold (say why, e.g. the claim "
                            "or inquiry reference)"));
    return reactor;
  }
  reactor->Finish(ToGrpc(governance::SetLegalHold(store_, nhs, request->hold(), request->reason(),
                                                  access_->Record(caller,
                                                                  icr::v1::LEGAL_HOLD_SET))));
  return reactor;
}

}  // namespace icr::broker
