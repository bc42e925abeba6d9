#include "router/backend.h"

#include <algorithm>
#include <utility>

#include "prometheus/gauge.h"
#include "router/router_metrics.h"
#include "spdlog/spdlog.h"

namespace strata::router {

Backend::Backend(std::string address, RouterMetrics* metrics, EjectionPolicy ejection, int channels)
    : address_(std::move(address)), ejection_policy_(ejection), metrics_(metrics) {
  grpc::ChannelArguments arguments;
  // Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also takes it as the connect
  // timeout (default 20 s), and a short one fails connects on a busy host.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Prompts may be large (a 220 KB prompt is ~55k token ids).
  arguments.SetMaxSendMessageSize(-1);
  arguments.SetMaxReceiveMessageSize(-1);
  for (int i = 0; i < std::max(1, channels); ++i) {
    // Distinct arguments give distinct connections (gRPC shares equal ones).
    arguments.SetInt("strata.router.connection", i);
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), arguments);
    inference_.push_back(v1::Inference::NewStub(channel));
    generic_.push_back(std::make_unique<grpc::GenericStub>(channel));
    // Health and load ride on the first connection, so health reflects it.
    if (i == 0) {
      health_ = grpc::health::v1::Health::NewStub(channel);
      replica_ = v1::Replica::NewStub(channel);
    }
  }
  if (metrics_ != nullptr) {
    healthy_gauge_ = &metrics_->BackendHealthy(address_);
    in_flight_gauge_ = &metrics_->BackendInFlight(address_);
    healthy_gauge_->Set(0.0);
  }
}

Backend::~Backend() {
  if (metrics_ != nullptr) metrics_->RemoveBackend(address_);
}

void Backend::SetHealthy(bool healthy) {
  std::lock_guard<std::mutex> lock(mu_);
  healthy_.store(healthy);
  if (healthy_gauge_ != nullptr) healthy_gauge_->Set(healthy ? 1.0 : 0.0);
  if (!draining_) return;
  if (!healthy) {
    down_since_drain_ = true;
  } else if (down_since_drain_) {
    draining_ = false;
    down_since_drain_ = false;
    spdlog::info("backend {}: SERVING again after its drain; taking new calls", address_);
  }
}

bool Backend::StartDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return true;
  draining_ = true;
  down_since_drain_ = !healthy_.load();
  return false;
}

bool Backend::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

bool Backend::Available(Clock::time_point now) const {
  if (!healthy_.load()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return false;
  if (ejections_ == 0) return true;
  // Ejected until ejected_until_, then half-open: one probe call at a time.
  return now >= ejected_until_ && !half_open_probe_in_flight_;
}

bool Backend::ejected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ejections_ > 0;
}

bool Backend::CallStarted() {
  in_flight_.fetch_add(1);
  if (in_flight_gauge_ != nullptr) in_flight_gauge_->Increment();
  std::lock_guard<std::mutex> lock(mu_);
  if (ejections_ == 0) return false;
  half_open_probe_in_flight_ = true;
  return true;
}

void Backend::CallFinished(bool backend_failed, bool was_probe) {
  in_flight_.fetch_sub(1);
  if (in_flight_gauge_ != nullptr) in_flight_gauge_->Decrement();
  std::lock_guard<std::mutex> lock(mu_);
  if (was_probe) half_open_probe_in_flight_ = false;
  if (backend_failed && ejections_ > 0 && !was_probe) return;
  if (!backend_failed) {
    if (ejections_ > 0) spdlog::info("backend {}: re-admitted after a successful call", address_);
    consecutive_failures_ = 0;
    ejections_ = 0;
    return;
  }
  ++consecutive_failures_;
  // A failed half-open probe ejects again at once; otherwise eject_after in a row.
  if (ejections_ == 0 && consecutive_failures_ < ejection_policy_.eject_after) return;
  ++ejections_;
  const int shift = std::min(ejections_ - 1, 16);
  const auto duration = std::min(ejection_policy_.base_ejection * (int64_t{1} << shift),
                                 ejection_policy_.max_ejection);
  ejected_until_ = Clock::now() + duration;
  consecutive_failures_ = 0;
  spdlog::warn("backend {}: ejected for {} ms after failed calls", address_, duration.count());
}

void Backend::SetLoad(BackendLoad load) {
  std::lock_guard<std::mutex> lock(mu_);
  load_ = std::move(load);
}

BackendLoad Backend::Load() const {
  std::lock_guard<std::mutex> lock(mu_);
  return load_;
}

}  // namespace strata::router
