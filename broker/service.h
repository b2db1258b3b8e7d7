// BrokerService: the icr.v1.Broker gRPC service (callback API). It converts
// between protos and the broker's parts (validation, store, hub, delivery
// engine) and holds no business rules of its own.
//
// Thread-safety: gRPC calls its methods from its own threads; store
// completions arrive on the store's writer thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "broker/hub.h"
#include "icr/v1/broker.grpc.pb.h"
#include "store/store.h"

namespace icr::broker {

class Ingest;
class AccessControl;

struct ServiceConfig {
  store::EventStore* store = nullptr;
  Hub* hub = nullptr;
  Ingest* ingest = nullptr;
  // Who callers are and what they may see (docs/governance.md); every call
  // goes through it.
  AccessControl* access = nullptr;
  std::string data_dir;
  std::string durability;
  int64_t started_at_micros = 0;
  // A subscriber whose stream takes no write for this long (it stopped
  // reading and flow control is full) is cut off; 0: never.
  uint32_t write_timeout_ms = 30000;
  // Counts cut-off subscribers (shared, outlives the service).
  std::shared_ptr<std::atomic<uint64_t>> subscribers_cut_off =
      std::make_shared<std::atomic<uint64_t>>(0);
};

// Every method of icr.v1.Broker uses the callback API. Subscribe is
// registered raw (grpc::ByteBuffer) so that every subscriber is sent an
// event's stored bytes instead of a re-serialised copy. Publish, PublishBatch
// and PublishStream are raw too, so that the service parses their requests
// itself: a request gRPC could not parse (e.g. a string field that is not
// UTF-8) gets INVALID_ARGUMENT naming the field instead of gRPC's
// UNIMPLEMENTED with an empty message, and the events are moved out of the
// request rather than copied. (Broker::CallbackService cannot be the base: its
// typed PublishStream(ctx) differs from the raw one only in its return type.)
// An rpc added to broker.proto must be added here.
using BrokerServiceBase = icr::v1::Broker::WithRawCallbackMethod_Publish<
    icr::v1::Broker::WithRawCallbackMethod_PublishBatch<
        icr::v1::Broker::WithRawCallbackMethod_PublishStream<
            icr::v1::Broker::WithRawCallbackMethod_Subscribe<
                icr::v1::Broker::WithCallbackMethod_Ack<
                    icr::v1::Broker::WithCallbackMethod_ListParked<
                        icr::v1::Broker::WithCallbackMethod_ReplayParked<
                            icr::v1::Broker::WithCallbackMethod_DeleteSubscription<
                                icr::v1::Broker::WithCallbackMethod_ListSubscriptions<
                                    icr::v1::Broker::WithCallbackMethod_GetPatientHistory<
                                        icr::v1::Broker::WithCallbackMethod_GetStatus<
                                            icr::v1::Broker::Service>>>>>>>>>>>;

class BrokerService final : public BrokerServiceBase {
 public:
  explicit BrokerService(ServiceConfig config) : config_(std::move(config)) {}

  // Request icr.v1.PublishRequest, response icr.v1.PublishResponse.
  grpc::ServerUnaryReactor* Publish(grpc::CallbackServerContext* ctx,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  // Request icr.v1.PublishBatchRequest, response icr.v1.PublishBatchResponse.
  grpc::ServerUnaryReactor* PublishBatch(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  // Reads icr.v1.PublishStreamRequest, writes icr.v1.PublishStreamResponse.
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PublishStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Subscribe(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx,
                                const icr::v1::AckRequest* request,
                                icr::v1::AckResponse* response) override;
  grpc::ServerUnaryReactor* ListParked(grpc::CallbackServerContext* ctx,
                                       const icr::v1::ListParkedRequest* request,
                                       icr::v1::ListParkedResponse* response) override;
  grpc::ServerUnaryReactor* ReplayParked(grpc::CallbackServerContext* ctx,
                                         const icr::v1::ReplayParkedRequest* request,
                                         icr::v1::ReplayParkedResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSubscription(
      grpc::CallbackServerContext* ctx, const icr::v1::DeleteSubscriptionRequest* request,
      icr::v1::DeleteSubscriptionResponse* response) override;
  grpc::ServerUnaryReactor* ListSubscriptions(
      grpc::CallbackServerContext* ctx, const icr::v1::ListSubscriptionsRequest* request,
      icr::v1::ListSubscriptionsResponse* response) override;
  grpc::ServerUnaryReactor* GetPatientHistory(
      grpc::CallbackServerContext* ctx, const icr::v1::GetPatientHistoryRequest* request,
      icr::v1::GetPatientHistoryResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const icr::v1::GetStatusRequest* request,
                                      icr::v1::GetStatusResponse* response) override;

  const ServiceConfig& config() const { return config_; }

 private:
  ServiceConfig config_;
};

}  // namespace icr::broker
