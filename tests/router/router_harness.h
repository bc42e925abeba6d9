// In-process pieces for router tests: a scripted strata.v1.Inference backend
// (with health) served on 127.0.0.1 port 0, and a router (pool, policy,
// admission, proxy) served the same way.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "router/admission_controller.h"
#include "router/backend_pool.h"
#include "router/balancer.h"
#include "router/inference_proxy.h"
#include "router/request_router.h"
#include "router/router_metrics.h"
#include "strata/v1/inference.grpc.pb.h"
#include "strata/v1/replica.grpc.pb.h"

namespace strata::router::testing {

template <typename Condition>
bool Eventually(Condition condition, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

// A port nothing listens on (bound, then released).
int UnusedPort();

// Streams `responses` responses ("r0", "r1", ...) `interval` apart, or fails
// with `error` when set (after `error_after` responses); records what it saw.
class ScriptedBackend final : public v1::Inference::Service {
 public:
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                            v1::ModelInfo* response) override;

  std::string name_ = "scripted";
  int responses_ = 5;
  std::chrono::milliseconds interval_{0};
  grpc::Status error_ = grpc::Status::OK;
  int error_after_ = 0;
  std::atomic<bool> cancelled_{false};
  std::atomic<int> calls_{0};
  std::atomic<int> active_{0};
  std::mutex mu_;
  v1::GenerateRequest last_request_;
  std::chrono::system_clock::time_point last_deadline_;
  std::vector<std::vector<int32_t>> token_prompts_;  // every token-id prompt seen
};

// A replica's load reports for a ScriptedBackend, as a worker would send
// them: running = calls in progress, and the prefix hashes (block_size 16) of
// every token-id prompt it has served, as if its KV cache kept them all.
class ScriptedReplicaLoad final : public v1::Replica::Service {
 public:
  static constexpr int32_t kBlockSize = 16;
  explicit ScriptedReplicaLoad(ScriptedBackend& backend) : backend_(backend) {}
  grpc::Status WatchLoad(grpc::ServerContext* context, const v1::WatchLoadRequest* request,
                         grpc::ServerWriter<v1::LoadReport>* writer) override;

 private:
  ScriptedBackend& backend_;
};

// Serves `service` (and health, SERVING for Inference) on 127.0.0.1:0.
struct ServedBackend {
  std::unique_ptr<grpc::Server> server;
  std::string address;
  void SetServing(bool serving);
};
ServedBackend ServeBackend(grpc::Service* service, grpc::Service* extra = nullptr);

struct InProcessRouterOptions {
  std::string policy = "least_load";
  int32_t max_in_flight = 0;
  int32_t max_queued = 0;
  RoutingOptions routing;
  BackendPool::Options pool;
  BalancerOptions balancing;
};

class InProcessRouter {
 public:
  InProcessRouter(const std::vector<std::string>& backends, InProcessRouterOptions options = {});
  ~InProcessRouter();

  v1::Inference::Stub& stub() { return *stub_; }
  const std::string& address() const { return address_; }  // 127.0.0.1:PORT
  RouterMetrics& metrics() { return metrics_; }
  BackendPool& pool() { return *pool_; }
  AdmissionController& admission() { return *admission_; }
  InferenceProxy& proxy() { return *proxy_; }
  std::string ScrapeMetrics();
  // Waits until `count` backends are healthy.
  bool WaitForHealthy(size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  RouterMetrics metrics_;
  std::unique_ptr<BackendPool> pool_;
  std::unique_ptr<Balancer> balancer_;
  std::unique_ptr<AdmissionController> admission_;
  std::unique_ptr<RequestRouter> router_;
  std::unique_ptr<InferenceProxy> proxy_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  std::string address_;
};

// Runs one Generate call to the end: its status and the responses it got.
struct GenerateOutcome {
  grpc::Status status;
  std::vector<v1::GenerateResponse> responses;
  // The stream's text and token ids, whichever responses carried them (the
  // router merges responses that queue behind a write).
  std::string text() const;
  std::vector<int32_t> token_ids() const;
};
GenerateOutcome RunGenerate(v1::Inference::Stub& stub, const v1::GenerateRequest& request,
                            std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace strata::router::testing
