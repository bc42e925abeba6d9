#include "router/backend.h"

#include <utility>

#include "prometheus/gauge.h"
#include "router/router_metrics.h"

namespace strata::router {

Backend::Backend(std::string address, RouterMetrics* metrics) : address_(std::move(address)) {
  grpc::ChannelArguments arguments;
  // Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also takes it as the connect
  // timeout (default 20 s), and a short one fails connects on a busy host.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), arguments);
  inference_ = v1::Inference::NewStub(channel_);
  health_ = grpc::health::v1::Health::NewStub(channel_);
  if (metrics != nullptr) {
    healthy_gauge_ = &metrics->BackendHealthy(address_);
    in_flight_gauge_ = &metrics->BackendInFlight(address_);
  }
}

void Backend::SetHealthy(bool healthy) {
  healthy_.store(healthy);
  if (healthy_gauge_ != nullptr) healthy_gauge_->Set(healthy ? 1.0 : 0.0);
}

void Backend::CallStarted() {
  if (in_flight_gauge_ != nullptr) in_flight_gauge_->Increment();
}

void Backend::CallFinished() {
  if (in_flight_gauge_ != nullptr) in_flight_gauge_->Decrement();
}

}  // namespace strata::router
