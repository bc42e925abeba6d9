#include "router/health_watcher.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "common/grpc_stream_reader.h"
#include "spdlog/spdlog.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::router {

HealthWatcher::HealthWatcher(Backend& backend, OnChange on_change)
    : backend_(backend), on_change_(std::move(on_change)) {}

HealthWatcher::~HealthWatcher() { Stop(); }

void HealthWatcher::Start() {
  thread_ = std::thread([this] { Run(); });
}

void HealthWatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (current_ != nullptr) current_->TryCancel();
  }
  stop_requested_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HealthWatcher::Run() {
  auto backoff = std::chrono::milliseconds(100);
  while (true) {
    const bool saw_serving = WatchOnce();
    Report(false);
    if (saw_serving) backoff = std::chrono::milliseconds(100);
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_requested_.wait_for(lock, backoff, [this] { return stopping_; })) return;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
}

bool HealthWatcher::WatchOnce() {
  grpc::ClientContext context;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    current_ = &context;
  }
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(std::string(v1::Inference::service_full_name()));
  bool saw_serving = false;
  const grpc::Status status = ReadServerStream<grpc::health::v1::HealthCheckResponse>(
      [&](grpc::ClientReadReactor<grpc::health::v1::HealthCheckResponse>* reactor) {
        backend_.health().async()->Watch(&context, &request, reactor);
      },
      [&](const grpc::health::v1::HealthCheckResponse& response) {
        const bool serving = response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
        saw_serving = saw_serving || serving;
        Report(serving);
      });
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = nullptr;
  }
  if (saw_serving) {
    spdlog::warn("backend {}: health watch ended: {}", backend_.address(), status.error_message());
  }
  return saw_serving;
}

void HealthWatcher::Report(bool serving) {
  if (reported_ && serving == last_serving_) return;
  reported_ = true;
  last_serving_ = serving;
  backend_.SetHealthy(serving);
  spdlog::info("backend {} is {}", backend_.address(), serving ? "SERVING" : "NOT_SERVING");
  on_change_(serving);
}

}  // namespace strata::router
