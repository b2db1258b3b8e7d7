#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>

#include "broker/access.h"
#include "broker/broker.h"
#include "broker/governance_service.h"
#include "broker/escalation_timer.h"
#include "broker/hub.h"
#include "broker/ingest.h"
#include "broker/service.h"
#include "broker/tls.h"
#include "broker/workflow/state_machine.h"
#include "broker/workflow_service.h"
#include "icr/v1/state.pb.h"

namespace icr::broker {
namespace {

class BrokerServerImpl final : public BrokerServer {
 public:
  BrokerServerImpl(const BrokerOptions& options, std::unique_ptr<store::EventStore> store,
                   std::shared_ptr<governance::PolicyHolder> policy, bool allow_development)
      : options_(options),
        store_(std::move(store)),
        hub_(store_.get()),
        ingest_(store_.get(), options_.validation),
        access_(store_.get(), std::move(policy), allow_development),
        workflow_service_(store_.get(), &access_),
        governance_service_(store_.get(), &access_,
                            [this](uint64_t position) { hub_.Refresh(position); }),
        escalations_(store_.get(), &ingest_, options_.escalation) {}

  store::Status Init(std::shared_ptr<grpc::ServerCredentials> credentials) {
    store_->SetCommitListener([this](const std::vector<store::EventPtr>& committed) {
      hub_.OnCommit(committed);
    });
    hub_.Start();
    ServiceConfig config;
    config.store = store_.get();
    config.hub = &hub_;
    config.ingest = &ingest_;
    config.access = &access_;
    ingest_.SetAccessControl(&access_);
    config.data_dir = options_.data_dir;
    config.durability = options_.durability == store::Durability::kSync ? "sync" : "relaxed";
    config.started_at_micros = NowMicros();
    config.write_timeout_ms = options_.subscriber_write_timeout_ms;
    service_ = std::make_unique<BrokerService>(std::move(config));

    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen_address, credentials, &port_);
    builder.RegisterService(service_.get());
    builder.RegisterService(&workflow_service_);
    builder.RegisterService(&governance_service_);
    builder.SetMaxReceiveMessageSize(options_.max_receive_message_bytes);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                               options_.max_streams_per_connection);
    grpc::ResourceQuota quota("icr-broker");
    quota.Resize(options_.grpc_memory_bytes);
    builder.SetResourceQuota(quota);
    // gRPC sets SO_REUSEPORT by default: a second broker on the same port
    // would then share it silently. Refuse instead.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    // Detect dead peers on long-lived subscriber streams.
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                               options_.min_client_ping_interval_ms);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 5);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      hub_.Stop();
      store_->Close();
      stopping_ = stopped_ = true;  // nothing left for Shutdown to stop
      return store::Status::Unavailable("cannot listen on " + options_.listen_address +
                                        ": the address is in use or not valid (set "
                                        "--listen to another host:port)");
    }
    server_->GetHealthCheckService()->SetServingStatus("icr.v1.Broker", true);
    server_->GetHealthCheckService()->SetServingStatus("icr.v1.Workflow", true);
    server_->GetHealthCheckService()->SetServingStatus("icr.v1.Governance", true);
    escalations_.Start();
    return {};
  }

  int port() const override { return port_; }
  Ingest* ingest() override { return &ingest_; }
  store::EventStore* store() override { return store_.get(); }
  Hub* hub() override { return &hub_; }
  store::Status ReloadPolicy() override { return access_.policy()->Reload(); }
  EscalationTimer* escalation_timer() { return &escalations_; }

  void Wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return stopped_; });
  }

  void Shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        return;
      }
      stopping_ = true;
    }
    using Clock = std::chrono::steady_clock;
    auto ms = [](Clock::time_point a, Clock::time_point b) {
      return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
    };
    const auto t0 = Clock::now();
    server_->GetHealthCheckService()->Shutdown();
    // Close subscriber streams first (they would hold Shutdown for the whole
    // grace period), then let unary calls and publish streams drain.
    hub_.Stop();
    escalations_.Stop();
    const auto t1 = Clock::now();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(options_.shutdown_grace_ms));
    server_->Wait();
    const auto t2 = Clock::now();
    store_->Close();
    const auto t3 = Clock::now();
    std::fprintf(stderr,
                 "icr-broker: shutdown: streams closed in %ld ms, calls drained in %ld ms, "
                 "store closed in %ld ms\n",
                 ms(t0, t1), ms(t1, t2), ms(t2, t3));
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }

  ~BrokerServerImpl() override { Shutdown(); }

 private:
  BrokerOptions options_;
  std::unique_ptr<store::EventStore> store_;
  Hub hub_;
  Ingest ingest_;
  AccessControl access_;
  std::unique_ptr<BrokerService> service_;
  WorkflowService workflow_service_;
  GovernanceService governance_service_;
  EscalationTimer escalations_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool stopped_ = false;
};

}  // namespace

namespace {

// A durable subscription's cursor past the end of the log (the log lost its
// tail: a recovery with --accept-wal-damage, or a restored older backup)
// would skip the events stored next at those positions. At start-up, before
// any publish, such cursors are moved back to the end, and acknowledgements
// ahead of it are forgotten.
store::Status PullBackCursorsPastTheEnd(store::EventStore* store) {
  std::vector<std::pair<std::string, std::string>> subscriptions;
  store::Status s = store->ListSubscriptions(&subscriptions);
  if (!s.ok()) {
    // Damaged cursor records must not keep the broker down: the damaged
    // subscriptions answer DATA_LOSS (with the next step) when used.
    std::fprintf(stderr,
                 "icr-broker: ALERT: cannot check subscriptions' cursors at start-up (%s); "
                 "starting anyway\n",
                 s.ToString().c_str());
    return {};
  }
  const uint64_t last = store->LastPosition();
  for (const auto& [name, bytes] : subscriptions) {
    // Records under "resthook:" belong to FHIR rest-hooks, not to Subscribe.
    if (name.rfind("resthook:", 0) == 0) continue;
    icr::v1::internal::SubscriptionState state;
    if (!state.ParseFromString(bytes)) continue;  // Subscribe reports it (DATA_LOSS)
    const bool ahead_past = std::any_of(state.acked_ahead().begin(), state.acked_ahead().end(),
                                        [last](uint64_t p) { return p > last; });
    if (state.cursor() <= last && !ahead_past) continue;
    if (state.cursor() > last) {
      std::fprintf(stderr,
                 "icr-broker: ALERT: subscription '%s' had cursor %llu past the last stored "
                 "position %llu; moved back to %llu so later events are not skipped\n",
                 name.c_str(), static_cast<unsigned long long>(state.cursor()),
                 static_cast<unsigned long long>(last), static_cast<unsigned long long>(last));
    }
    state.set_cursor(std::min<uint64_t>(state.cursor(), last));
    auto* ahead = state.mutable_acked_ahead();
    ahead->erase(std::remove_if(ahead->begin(), ahead->end(),
                                [last](uint64_t p) { return p > last; }),
                 ahead->end());
    s = store->PutSubscription(name, state.SerializeAsString(), /*sync=*/true);
    if (!s.ok()) return s;
  }
  return {};
}

}  // namespace

store::Status BrokerServer::Start(const BrokerOptions& options,
                                  std::unique_ptr<BrokerServer>* out) {
  // TLS files are checked before the store is opened: a bad file is a
  // start-up error naming it.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  store::Status s = BuildServerCredentials(options.tls, &credentials);
  if (!s.ok()) return s;
  // The policy too: a policy that does not load is a start-up error naming
  // the file, line and key. Client certificates need a policy to map them
  // to principals.
  std::shared_ptr<const governance::Policy> policy;
  if (!options.policy_file.empty()) {
    s = governance::Policy::Load(options.policy_file, &policy);
    if (!s.ok()) return s;
  } else if (!options.tls.client_ca_file.empty()) {
    return store::Status::InvalidArgument(
        "client certificates (--tls-client-ca) identify principals of a policy: give --policy "
        "FILE (docs/governance.md has a sample)");
  } else {
    policy = governance::Policy::Development();
  }
  auto holder = std::make_shared<governance::PolicyHolder>(policy, options.policy_file);
  // Callers without a certificate act as the development principal only in
  // the development profile without client certificates.
  const bool allow_development = !options.production && options.tls.client_ca_file.empty();
  store::StoreOptions store_options;
  store_options.data_dir = options.data_dir;
  if (options.store_env != nullptr) store_options.env = options.store_env;
  store_options.durability = options.durability;
  store_options.accept_wal_damage = options.accept_wal_damage;
  store_options.bulk_share = options.bulk_share;
  store_options.max_routine_batch_events = options.routine_batch_events;
  // The state machine tells the escalation timer of new deadlines; the timer
  // exists only once the store is open, so the link is set after.
  auto timer = std::make_shared<std::atomic<EscalationTimer*>>(nullptr);
  workflow::WorkflowOptions workflow_options = options.workflow;
  workflow_options.on_deadline_armed = [timer](int64_t due) {
    if (EscalationTimer* t = timer->load(std::memory_order_acquire)) t->Notify(due);
  };
  store_options.state_machine = workflow::NewWorkflowStateMachine(workflow_options);
  std::unique_ptr<store::EventStore> store;
  s = store::OpenRocksDbStore(store_options, &store);
  if (!s.ok()) return s;
  s = PullBackCursorsPastTheEnd(store.get());
  if (!s.ok()) return s;
  auto server = std::make_unique<BrokerServerImpl>(options, std::move(store), std::move(holder),
                                                   allow_development);
  // The timer outlives every call: Shutdown closes the store (the writer
  // thread, the only caller) before the server and its timer are destroyed.
  timer->store(server->escalation_timer(), std::memory_order_release);
  s = server->Init(std::move(credentials));
  if (!s.ok()) return s;
  *out = std::move(server);
  return {};
}

}  // namespace icr::broker
