// WorkflowService: the icr.v1.Workflow gRPC service. Reads the workflow
// state the store keeps (referrals, summaries, teams) and registers teams.
// State itself changes only through events (icr.v1.Broker/Publish).
//
// Thread-safety: gRPC calls its methods from its own threads; it keeps no
// state of its own.
#pragma once

#include "icr/v1/workflow.grpc.pb.h"
#include "store/store.h"

namespace icr::broker {

class AccessControl;

// Reads that disclose a person's information (referrals, care summaries)
// need the policy's query ("referrals", "care_summary"), are audited before
// they are answered and minimised to the caller's profile; RegisterTeam
// needs "teams" and GetFlowMetrics "flow_metrics" (docs/governance.md).
class WorkflowService final : public icr::v1::Workflow::CallbackService {
 public:
  // `access` null: no policy (every caller may do everything, nothing is
  // audited), for tests of the workflow alone.
  explicit WorkflowService(store::EventStore* store, AccessControl* access = nullptr)
      : store_(store), access_(access) {}

  grpc::ServerUnaryReactor* RegisterTeam(grpc::CallbackServerContext* ctx,
                                         const icr::v1::RegisterTeamRequest* request,
                                         icr::v1::Team* response) override;
  grpc::ServerUnaryReactor* ListTeams(grpc::CallbackServerContext* ctx,
                                      const icr::v1::ListTeamsRequest* request,
                                      icr::v1::ListTeamsResponse* response) override;
  grpc::ServerUnaryReactor* GetReferral(grpc::CallbackServerContext* ctx,
                                        const icr::v1::GetReferralRequest* request,
                                        icr::v1::Referral* response) override;
  grpc::ServerUnaryReactor* ListReferrals(grpc::CallbackServerContext* ctx,
                                          const icr::v1::ListReferralsRequest* request,
                                          icr::v1::ListReferralsResponse* response) override;
  grpc::ServerUnaryReactor* GetCareSummary(grpc::CallbackServerContext* ctx,
                                           const icr::v1::GetCareSummaryRequest* request,
                                           icr::v1::CareSummary* response) override;
  grpc::ServerUnaryReactor* GetFlowMetrics(grpc::CallbackServerContext* ctx,
                                           const icr::v1::GetFlowMetricsRequest* request,
                                           icr::v1::FlowMetrics* response) override;

 private:
  store::EventStore* store_;
  AccessControl* access_;
};

}  // namespace icr::broker
