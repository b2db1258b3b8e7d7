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

class WorkflowService final : public icr::v1::Workflow::CallbackService {
 public:
  explicit WorkflowService(store::EventStore* store) : store_(store) {}

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
};

}  // namespace icr::broker
