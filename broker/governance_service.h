// GovernanceService: the icr.v1.Governance gRPC service (callback API):
// WhoAmI, policy reload, the audit trail (verify, who-saw) and retention
// (review, purge, legal hold). Operator calls need the policy's "policy",
// "audit" or "retention" query (docs/governance.md).
//
// Thread-safety: gRPC calls its methods from its own threads.
#pragma once

#include <functional>

#include "icr/v1/governance.grpc.pb.h"
#include "store/store.h"

namespace icr::broker {

class AccessControl;
class Hub;

class GovernanceService final : public icr::v1::Governance::CallbackService {
 public:
  // `refresh`: called with each purged position (the hub's recent-events
  // ring drops its copy).
  GovernanceService(store::EventStore* store, AccessControl* access,
                    std::function<void(uint64_t)> refresh)
      : store_(store), access_(access), refresh_(std::move(refresh)) {}

  grpc::ServerUnaryReactor* WhoAmI(grpc::CallbackServerContext* ctx,
                                   const icr::v1::WhoAmIRequest* request,
                                   icr::v1::WhoAmIResponse* response) override;
  grpc::ServerUnaryReactor* ReloadPolicy(grpc::CallbackServerContext* ctx,
                                         const icr::v1::ReloadPolicyRequest* request,
                                         icr::v1::ReloadPolicyResponse* response) override;
  grpc::ServerWriteReactor<icr::v1::VerifyAuditProgress>* VerifyAudit(
      grpc::CallbackServerContext* ctx, const icr::v1::VerifyAuditRequest* request) override;
  grpc::ServerUnaryReactor* WhoSaw(grpc::CallbackServerContext* ctx,
                                   const icr::v1::WhoSawRequest* request,
                                   icr::v1::WhoSawResponse* response) override;
  grpc::ServerUnaryReactor* ReviewRetention(grpc::CallbackServerContext* ctx,
                                            const icr::v1::ReviewRetentionRequest* request,
                                            icr::v1::ReviewRetentionResponse* response) override;
  grpc::ServerUnaryReactor* PurgeRetention(grpc::CallbackServerContext* ctx,
                                           const icr::v1::PurgeRetentionRequest* request,
                                           icr::v1::PurgeRetentionResponse* response) override;
  grpc::ServerUnaryReactor* SetLegalHold(grpc::CallbackServerContext* ctx,
                                         const icr::v1::SetLegalHoldRequest* request,
                                         icr::v1::SetLegalHoldResponse* response) override;

 private:
  store::EventStore* const store_;
  AccessControl* const access_;
  const std::function<void(uint64_t)> refresh_;
};

}  // namespace icr::broker
