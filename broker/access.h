// AccessControl: who a caller is, what the policy lets it do, and the audit
// records of what it was shown or refused (docs/governance.md).
//
//  - Identify maps a connection's PeerIdentity (its verified client
//    certificate: CN = principal id, O = ODS code) to a principal of the
//    policy in force. A caller without a certificate is the development
//    principal when the broker runs in the development profile (plaintext on
//    loopback), and UNAUTHENTICATED otherwise. A certificate whose CN is not
//    in the policy, or whose O is not the principal's organisation, is
//    UNAUTHENTICATED. Every refusal leaves a DENIED audit record.
//  - The checks (Require..., CheckPublish, purposes) return
//    kPermissionDenied with the reason and audit the denial.
//  - Audit writes records through the store's hash-chained trail. A caller
//    that discloses must write its record first and disclose nothing when
//    that fails.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "broker/filter.h"
#include "broker/governance/policy.h"
#include "broker/identity.h"
#include "icr/v1/events.pb.h"
#include "icr/v1/governance_types.pb.h"
#include "store/store.h"

namespace grpc {
class ServerContextBase;
}

namespace icr::broker {

struct Caller {
  PeerIdentity identity;
  // The policy snapshot the principal belongs to (keeps it alive).
  std::shared_ptr<const governance::Policy> policy;
  const governance::Principal* principal = nullptr;  // set once identified
};

class AccessControl {
 public:
  // `allow_development`: callers without a client certificate act as the
  // development principal (governance::Policy::Development()).
  AccessControl(store::EventStore* store, std::shared_ptr<governance::PolicyHolder> policy,
                bool allow_development);

  store::Status Identify(const PeerIdentity& identity, Caller* out);
  // From a gRPC call (its auth context and peer address).
  store::Status Identify(const grpc::ServerContextBase& ctx, Caller* out);

  // kPermissionDenied (audited) unless the principal has `query`
  // (governance::Principal::queries). `nhs_number` is recorded, if any.
  store::Status RequireQuery(const Caller& caller, std::string_view query,
                             const std::string& nhs_number = "");
  // kPermissionDenied (audited) unless the principal may declare `purpose`.
  // Fills in the purpose (unset -> DIRECT_CARE) and the legal basis (empty
  // -> the principal's default).
  // `nhs_number`: the person the call is about, recorded with a denial.
  store::Status CheckPurpose(const Caller& caller, icr::v1::Purpose* purpose,
                             std::string* legal_basis, const std::string& nhs_number = "");
  // OK when the principal may publish every event (validated, normalised);
  // else kPermissionDenied naming the event and the rule, audited.
  store::Status CheckPublish(const Caller& caller, const std::vector<icr::v1::CareEvent>& events,
                             bool batch);

  // A read about one person (`what`: "history", "summary"): the principal
  // has `query`, may declare the purpose (filled in as CheckPurpose does),
  // and, for a purpose beyond direct care, the person neither objected nor
  // opted out. Every refusal is kPermissionDenied with the reason, audited.
  store::Status CheckPersonRead(const Caller& caller, std::string_view query,
                                const std::string& nhs_number, std::string_view what,
                                icr::v1::Purpose* purpose, std::string* legal_basis);

  // Whether output for `purpose` may include the person: always for
  // DIRECT_CARE; otherwise not when the person objected to sharing or has a
  // national data opt-out (their care summary's flags).
  bool MayDiscloseFor(icr::v1::Purpose purpose, const std::string& nhs_number) const;

  // A record stamped with the caller (principal, role, organisation,
  // channel) and `action`.
  icr::v1::AuditRecord Record(const Caller& caller, icr::v1::AuditAction action) const;
  // Writes `records` (atomically, in the hash chain). Not OK: disclose
  // nothing; the status says the audit trail could not be written.
  store::Status Audit(std::vector<icr::v1::AuditRecord> records);
  // Audits a DENIED record and returns `status` (kPermissionDenied or
  // kUnauthenticated) unchanged.
  store::Status Deny(const Caller& caller, const std::string& nhs_number, store::Status status);

  // The principal `id` of the policy in force now (nullptr if it is no
  // longer in it), with the snapshot that owns it. For long-lived streams,
  // so that a reloaded policy applies at once.
  const governance::Principal* Current(const std::string& id,
                                       std::shared_ptr<const governance::Policy>* keep) const;

  // The access scope of a long-lived subscription (a gRPC Subscribe stream,
  // a FHIR rest-hook) of principal `principal_id` declaring `purpose`: an
  // event is in it when the principal of the policy in force when the event
  // is matched (a reloaded policy applies at once) may receive it
  // (governance::InSubscribeScope, care relationships read from the store)
  // and, for a purpose beyond direct care, the person has neither objected
  // to sharing nor opted out (MayDiscloseFor). Nothing is in the scope of a
  // principal no longer in the policy. The function may be called from any
  // thread while this AccessControl lives.
  CompiledFilter::ScopeFn SubscribeScope(const std::string& principal_id,
                                         icr::v1::Purpose purpose);

  // Connections per principal: a gRPC stream (Subscribe, PublishStream) from
  // a connection (peer address) enters the principal's set of connections;
  // a principal with max_connections connections holding streams gets
  // kResourceExhausted for a stream from a further connection. Leave when
  // the stream ends.
  store::Status EnterConnection(const Caller& caller);
  void LeaveConnection(const Caller& caller);

  governance::PolicyHolder* policy() const { return policy_.get(); }
  store::EventStore* store() const { return store_; }
  bool allow_development() const { return allow_development_; }

 private:
  store::EventStore* const store_;
  const std::shared_ptr<governance::PolicyHolder> policy_;
  const std::shared_ptr<const governance::Policy> development_;
  const bool allow_development_;

  std::mutex connections_mu_;
  // principal id -> peer address -> streams open from it
  std::map<std::string, std::map<std::string, int>> connections_;
};

// `event` as `principal` may see it: the stored event itself when its
// profile removes nothing (or there is no principal: no policy), else a copy
// minimised to the profile (governance::MinimiseEvent) and serialised for it
// alone.
store::EventPtr MinimisedFor(const governance::Principal* principal, const store::EventPtr& event);

}  // namespace icr::broker
