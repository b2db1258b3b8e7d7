#include "broker/access.h"

#include <grpcpp/grpcpp.h>

#include <google/protobuf/util/time_util.h>

#include "broker/governance/minimise.h"
#include "broker/governance/scope.h"
#include "broker/workflow_reader.h"

namespace icr::broker {
namespace {

constexpr char kUnknownPrincipal[] = "(unauthenticated)";

}  // namespace

AccessControl::AccessControl(store::EventStore* store,
                             std::shared_ptr<governance::PolicyHolder> policy,
                             bool allow_development)
    : store_(store),
      policy_(std::move(policy)),
      development_(governance::Policy::Development()),
      allow_development_(allow_development) {}

store::Status AccessControl::Identify(const PeerIdentity& identity, Caller* out) {
  out->identity = identity;
  out->principal = nullptr;
  if (!identity.authenticated) {
    if (allow_development_) {
      out->policy = development_;
      out->principal = development_->Find("local-developer");
      if (out->principal != nullptr) return {};
    }
    return Deny(*out, "",
                store::Status::Unauthenticated(
                    "no client certificate: connect with mutual TLS using a certificate issued "
                    "for your principal (CN = principal id, O = ODS code)"));
  }
  out->policy = policy_->Get();
  const governance::Principal* p = out->policy->Find(identity.common_name);
  if (p == nullptr) {
    return Deny(*out, "",
                store::Status::Unauthenticated(
                    "certificate CN '" + identity.common_name +
                    "' is not a principal of the policy in force; ask the broker's operator to "
                    "add it (docs/governance.md, \"Policy file\")"));
  }
  if (identity.organisation != p->organisation) {
    return Deny(*out, "",
                store::Status::Unauthenticated(
                    "certificate for '" + identity.common_name + "' names organisation '" +
                    identity.organisation + "' (subject O), but the policy says principal '" +
                    p->id + "' belongs to '" + p->organisation +
                    "'; the certificate must be reissued for the right organisation"));
  }
  out->principal = p;
  return {};
}

store::Status AccessControl::Identify(const grpc::ServerContextBase& ctx, Caller* out) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  PeerIdentity identity;
  if (auth) {
    identity = IdentityFromAuthContext(*auth, ctx.peer());
  } else {
    identity.peer = ctx.peer();
  }
  identity.channel = "grpc";
  return Identify(identity, out);
}

icr::v1::AuditRecord AccessControl::Record(const Caller& caller,
                                           icr::v1::AuditAction action) const {
  icr::v1::AuditRecord r;
  if (caller.principal != nullptr) {
    r.set_principal(caller.principal->id);
    r.set_role(caller.principal->role);
    r.set_organisation(caller.principal->organisation);
  } else {
    r.set_principal(caller.identity.common_name.empty() ? kUnknownPrincipal
                                                        : caller.identity.common_name);
    r.set_organisation(caller.identity.organisation);
  }
  r.set_channel(caller.identity.channel);
  r.set_action(action);
  return r;
}

store::Status AccessControl::Audit(std::vector<icr::v1::AuditRecord> records) {
  if (records.empty()) return {};
  store::Status s = store_->AppendAudit(&records);
  if (!s.ok()) {
    return store::Status::Unavailable("the audit trail cannot be written (" + s.message() +
                                      "); nothing was disclosed, retry later");
  }
  return {};
}

store::Status AccessControl::Deny(const Caller& caller, const std::string& nhs_number,
                                  store::Status status) {
  icr::v1::AuditRecord r = Record(caller, icr::v1::DENIED);
  r.set_nhs_number(nhs_number);
  r.set_detail(status.message().substr(0, 500));
  if (!caller.identity.peer.empty()) r.set_detail(r.detail() + " [peer " + caller.identity.peer + "]");
  std::vector<icr::v1::AuditRecord> records{std::move(r)};
  // A denial discloses nothing, so a failed audit write does not change the
  // answer; it is still refused.
  (void)store_->AppendAudit(&records);
  return status;
}

store::Status AccessControl::RequireQuery(const Caller& caller, std::string_view query,
                                          const std::string& nhs_number) {
  if (caller.principal->HasQuery(query)) return {};
  return Deny(caller, nhs_number,
              store::Status::PermissionDenied("principal '" + caller.principal->id +
                                              "' may not run '" + std::string(query) +
                                              "' queries (the policy's queries list)"));
}

store::Status AccessControl::CheckPurpose(const Caller& caller, icr::v1::Purpose* purpose,
                                          std::string* legal_basis,
                                          const std::string& nhs_number) {
  if (*purpose == icr::v1::PURPOSE_UNSPECIFIED) *purpose = icr::v1::DIRECT_CARE;
  if (legal_basis->empty()) *legal_basis = caller.principal->default_legal_basis;
  if (legal_basis->size() > 200) {
    return store::Status::InvalidArgument("legal_basis: at most 200 characters, got " +
                                          std::to_string(legal_basis->size()));
  }
  if (caller.principal->purposes.count(*purpose) != 0) return {};
  std::string allowed;
  for (int p : caller.principal->purposes) {
    if (!allowed.empty()) allowed += ", ";
    allowed += icr::v1::Purpose_Name(static_cast<icr::v1::Purpose>(p));
  }
  return Deny(caller, nhs_number,
              store::Status::PermissionDenied(
                  "principal '" + caller.principal->id + "' may not declare purpose " +
                  icr::v1::Purpose_Name(*purpose) + " (the policy allows: " +
                  (allowed.empty() ? "none" : allowed) + ")"));
}

store::Status AccessControl::CheckPublish(const Caller& caller,
                                          const std::vector<icr::v1::CareEvent>& events,
                                          bool batch) {
  for (size_t i = 0; i < events.size(); ++i) {
    std::string reason = governance::CheckPublish(*caller.principal, events[i]);
    if (reason.empty()) continue;
    std::string where = batch ? "events[" + std::to_string(i) + "]: " : "event: ";
    return Deny(caller, events[i].nhs_number(),
                store::Status::PermissionDenied(where + reason + " (nothing was stored)"));
  }
  return {};
}

store::Status AccessControl::CheckPersonRead(const Caller& caller, std::string_view query,
                                             const std::string& nhs_number,
                                             std::string_view what, icr::v1::Purpose* purpose,
                                             std::string* legal_basis) {
  store::Status s = RequireQuery(caller, query, nhs_number);
  if (s.ok()) s = CheckPurpose(caller, purpose, legal_basis, nhs_number);
  if (s.ok() && !MayDiscloseFor(*purpose, nhs_number)) {
    s = Deny(caller, nhs_number,
             store::Status::PermissionDenied(
                 "the person objected to sharing beyond their direct care, or has a national "
                 "data opt-out: their " + std::string(what) + " is not disclosed for " +
                 icr::v1::Purpose_Name(*purpose)));
  }
  return s;
}

bool AccessControl::MayDiscloseFor(icr::v1::Purpose purpose,
                                   const std::string& nhs_number) const {
  if (purpose == icr::v1::DIRECT_CARE || purpose == icr::v1::PURPOSE_UNSPECIFIED) return true;
  icr::v1::CareSummary summary;
  store::Status s = ReadCareSummary(store_, nhs_number, &summary);
  if (s.code() == store::StatusCode::kNotFound) return true;  // nothing known, nothing withheld
  if (!s.ok()) return false;  // cannot tell: withhold
  return !summary.flags().sharing_objection() && !summary.flags().national_data_opt_out();
}

const governance::Principal* AccessControl::Current(
    const std::string& id, std::shared_ptr<const governance::Policy>* keep) const {
  if (id == "local-developer" && allow_development_) {
    *keep = development_;
    return development_->Find(id);
  }
  *keep = policy_->Get();
  return (*keep)->Find(id);
}

CompiledFilter::ScopeFn AccessControl::SubscribeScope(const std::string& principal_id,
                                                      icr::v1::Purpose purpose) {
  return [this, id = principal_id, purpose](const icr::v1::CareEvent& event) {
    std::shared_ptr<const governance::Policy> keep;
    const governance::Principal* principal = Current(id, &keep);
    if (principal == nullptr) return false;
    auto related = [this](const std::string& nhs, const std::string& organisation) {
      return HasCareRelationshipWithOrganisation(store_, nhs, organisation);
    };
    if (!governance::InSubscribeScope(*principal, event, related)) return false;
    return MayDiscloseFor(purpose, event.nhs_number());
  };
}

store::EventPtr MinimisedFor(const governance::Principal* principal, const store::EventPtr& event) {
  if (principal == nullptr || principal->profile == nullptr || principal->profile->full()) {
    return event;
  }
  auto copy = std::make_shared<store::StoredEvent>();
  copy->position = event->position;
  copy->event = event->event;
  governance::MinimiseEvent(*principal->profile, &copy->event);
  copy->encoded = copy->event.SerializeAsString();
  return copy;
}

store::Status AccessControl::EnterConnection(const Caller& caller) {
  const uint32_t limit = caller.principal->max_connections;
  std::lock_guard<std::mutex> lock(connections_mu_);
  auto& peers = connections_[caller.principal->id];
  auto it = peers.find(caller.identity.peer);
  if (it == peers.end() && limit != 0 && peers.size() >= limit) {
    return store::Status::ResourceExhausted(
        "principal '" + caller.principal->id + "' already holds streams on " +
        std::to_string(peers.size()) + " connections, its limit (max_connections " +
        std::to_string(limit) +
        " in the policy); open further streams on an existing connection or close one");
  }
  ++peers[caller.identity.peer];
  return {};
}

void AccessControl::LeaveConnection(const Caller& caller) {
  std::lock_guard<std::mutex> lock(connections_mu_);
  auto p = connections_.find(caller.principal->id);
  if (p == connections_.end()) return;
  auto it = p->second.find(caller.identity.peer);
  if (it == p->second.end()) return;
  if (--it->second == 0) p->second.erase(it);
  if (p->second.empty()) connections_.erase(p);
}

}  // namespace icr::broker
