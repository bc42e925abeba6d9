#include "router/generate_relay.h"

#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "common/logging.h"
#include "common/metrics_catalogue.h"
#include "router/inference_proxy.h"
#include "router/router_metrics.h"
#include "spdlog/spdlog.h"

namespace strata::router {

GenerateRelay::GenerateRelay(grpc::CallbackServerContext* server_context,
                             const v1::GenerateRequest& request, std::string request_id,
                             Backend& backend, RouterMetrics* metrics,
                             std::atomic<int32_t>& calls_in_flight)
    : backend_(backend),
      metrics_(metrics),
      calls_in_flight_(calls_in_flight),
      request_id_(std::move(request_id)),
      request_(request) {
  calls_in_flight_.fetch_add(1);
  {
    const ScopedRequestId log_scope(request_id_);
    spdlog::debug("generate: relaying to backend {}", backend_.address());
  }
  if (metrics_ != nullptr) metrics_->RequestStarted();
  backend_.CallStarted();
  // An infinite deadline stays infinite.
  backend_context_.set_deadline(server_context->deadline());
  backend_context_.AddMetadata(metrics::kRequestIdMetadataKey, request_id_);
  backend_call_time_ = Clock::now();
  backend_.inference().async()->Generate(&backend_context_, &request_, &reader_);
  // Reads are started from server-side reactions too (OnWriteDone), so a hold
  // keeps the backend side from finishing until we stop reading.
  reader_.AddHold();
  reader_.StartRead(&response_);
  reader_.StartCall();
}

void GenerateRelay::OnBackendRead(bool ok) {
  if (!ok) {
    // The stream ended; OnBackendDone brings the status.
    reader_.RemoveHold();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!first_response_seen_) {
      first_response_seen_ = true;
      if (metrics_ != nullptr) {
        metrics_->RecordFirstResponse(
            std::chrono::duration<double>(Clock::now() - start_time_).count());
      }
    }
    write_in_flight_ = true;
  }
  StartWrite(&response_);
}

void GenerateRelay::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    write_in_flight_ = false;
  }
  if (ok) {
    reader_.StartRead(&response_);
    return;
  }
  // The client is gone: stop the backend now instead of reading on.
  backend_context_.TryCancel();
  reader_.RemoveHold();
  MaybeFinish();
}

void GenerateRelay::OnCancel() { backend_context_.TryCancel(); }

void GenerateRelay::OnBackendDone(const grpc::Status& status) {
  const grpc::Status relayed = RelayedStatus(backend_, status);
  backend_.CallFinished();
  double backend_seconds = 0.0;
  const auto& trailers = backend_context_.GetServerTrailingMetadata();
  if (auto it = trailers.find(metrics::kWorkerSecondsMetadataKey); it != trailers.end()) {
    const std::string text(it->second.data(), it->second.size());
    char* end = nullptr;
    const double parsed = std::strtod(text.c_str(), &end);
    if (end != text.c_str() && parsed >= 0.0) backend_seconds = parsed;
  }
  if (!status.ok()) {
    const ScopedRequestId log_scope(request_id_);
    spdlog::debug("generate: backend {} ended with {}: {}", backend_.address(),
                  absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                  status.error_message());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    backend_status_ = relayed;
    backend_seconds_ = backend_seconds;
  }
  MaybeFinish();
  std::unique_lock<std::mutex> lock(mu_);
  backend_done_ = true;
  MaybeDelete(lock);
}

void GenerateRelay::MaybeFinish() {
  grpc::Status status;
  RouterRequestTimes times;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finish_called_ || write_in_flight_ || !backend_status_) return;
    finish_called_ = true;
    status = *backend_status_;
    times.backend = backend_seconds_;
  }
  const Clock::time_point end = Clock::now();
  times.total = std::chrono::duration<double>(end - start_time_).count();
  times.router_queue = std::chrono::duration<double>(backend_call_time_ - start_time_).count();
  const std::string code_name =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  {
    const ScopedRequestId log_scope(request_id_);
    spdlog::debug("generate: finished {} in {:.6f} s (backend {:.6f} s)", code_name, times.total,
                  times.backend);
  }
  if (metrics_ != nullptr) metrics_->RequestFinished(code_name, times);
  Finish(status);
}

void GenerateRelay::OnDone() {
  calls_in_flight_.fetch_sub(1);
  std::unique_lock<std::mutex> lock(mu_);
  server_done_ = true;
  MaybeDelete(lock);
}

void GenerateRelay::MaybeDelete(std::unique_lock<std::mutex>& lock) {
  const bool delete_now = server_done_ && backend_done_;
  lock.unlock();
  if (delete_now) delete this;
}

}  // namespace strata::router
