// One backend (a worker, later a replica leader) as the router sees it: its
// address, a channel that reconnects quickly, stubs, health and load.
//
// The channel's reconnect backoff is capped at one second (gRPC's default
// grows to two minutes), so a worker that starts after the router, or
// restarts, is used within a second of serving.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"

namespace prometheus {
class Gauge;
}

namespace strata::router {

class RouterMetrics;

class Backend {
 public:
  // `metrics` may be null; when set it outlives the backend.
  Backend(std::string address, RouterMetrics* metrics);

  const std::string& address() const { return address_; }
  v1::Inference::Stub& inference() { return *inference_; }
  grpc::health::v1::Health::Stub& health() { return *health_; }

  bool healthy() const { return healthy_.load(); }
  void SetHealthy(bool healthy);

  // Calls relayed to this backend now.
  void CallStarted();
  void CallFinished();

 private:
  const std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::atomic<bool> healthy_{false};
  prometheus::Gauge* healthy_gauge_ = nullptr;
  prometheus::Gauge* in_flight_gauge_ = nullptr;
};

}  // namespace strata::router
