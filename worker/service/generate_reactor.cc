#include "worker/service/generate_reactor.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/metrics_catalogue.h"
#include "spdlog/spdlog.h"
#include "worker/service/request_conversion.h"
#include "worker/service/worker_metrics.h"

namespace strata::service {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point from,
                      std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

GenerateReactor::GenerateReactor(grpc::CallbackServerContext* context, engine::Engine& engine,
                                 WorkerMetrics* metrics,
                                 std::chrono::system_clock::time_point deadline,
                                 std::atomic<int32_t>& calls_in_flight)
    : context_(context),
      engine_(engine),
      metrics_(metrics),
      deadline_(deadline),
      calls_in_flight_(calls_in_flight) {
  calls_in_flight_.fetch_add(1);
}

void GenerateReactor::Start(const v1::GenerateRequest& request, std::string request_id) {
  request_id_ = std::move(request_id);
  const ScopedRequestId log_scope(request_id_);
  spdlog::debug("generate: call accepted");
  return_token_ids_ = request.options().return_token_ids();
  absl::StatusOr<engine::GenerationRequest> converted = ToEngineRequest(request);
  absl::Status submitted = converted.status();
  if (converted.ok()) {
    converted->request_id = request_id_;
    // gRPC's "no deadline" is the far future; only a real one reaches the
    // engine, which then frees the request's blocks when it passes.
    if (deadline_ != std::chrono::system_clock::time_point::max()) {
      converted->deadline = deadline_;
    }
    {
      // Before Submit: the first output may arrive before Submit returns.
      std::lock_guard<std::mutex> lock(mu_);
      accepted_time_ = Clock::now();
    }
    submitted = engine_.Submit(std::move(*converted), [this](engine::GenerationOutput output) {
      OnEngineOutput(std::move(output));
    });
  }
  if (!submitted.ok()) {
    spdlog::debug("generate: refused: {}", std::string(submitted.message()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      accepted_time_.reset();
      final_status_ = ToGrpcStatus(submitted);
    }
    Pump();
    ReleaseEngineSide();
  }
}

void GenerateReactor::OnEngineOutput(engine::GenerationOutput output) {
  const Clock::time_point now = Clock::now();
  if (metrics_ != nullptr && !output.token_ids.empty()) {
    metrics_->AddGeneratedTokens(output.token_ids.size());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (output.first_scheduled.has_value()) scheduled_time_ = *output.first_scheduled;
    if (!output.token_ids.empty()) {
      if (metrics_ != nullptr) {
        if (!last_token_time_) {
          first_token_time_ = now;
          metrics_->RecordFirstToken(SecondsBetween(start_time_, now));
        } else {
          metrics_->RecordInterTokenLatency(SecondsBetween(*last_token_time_, now) /
                                            static_cast<double>(output.token_ids.size()));
        }
      }
      last_token_time_ = now;
    }
    if (!cancelled_) {
      AppendOutput(output, return_token_ids_, engine_.tokenizer(), pending_);
      pending_.set_request_id(request_id_);
      // The last response is written even when it carries no new text.
      has_pending_ = has_pending_ || !output.text.empty() || !output.token_ids.empty() ||
                     (output.finished && output.error.ok());
    }
    if (output.finished) {
      if (metrics_ != nullptr && output.error.ok()) {
        metrics_->AddPromptTokens(static_cast<size_t>(output.usage.prompt_tokens));
      }
      if (!final_status_) final_status_ = ToGrpcStatus(output.error);
      if (!output.error.ok()) {
        const ScopedRequestId log_scope(request_id_);
        spdlog::warn("generate: failed: {}", std::string(output.error.message()));
      }
    }
  }
  Pump();
  if (output.finished) ReleaseEngineSide();
}

void GenerateReactor::Pump() {
  grpc::Status finish_status;
  bool finish = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (write_in_flight_ || finish_called_) return;
    if (has_pending_ && !cancelled_) {
      in_flight_.Swap(&pending_);
      pending_.Clear();
      has_pending_ = false;
      write_in_flight_ = true;
    } else if (final_status_) {
      finish_called_ = true;
      finish = true;
      finish_status = *final_status_;
    } else {
      return;
    }
  }
  if (finish) {
    RecordFinished(finish_status);
    Finish(finish_status);
  } else {
    StartWrite(&in_flight_);
  }
}

void GenerateReactor::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    write_in_flight_ = false;
    if (!ok && !cancelled_) {
      // The stream broke under us; OnCancel follows, this makes it certain
      // that nothing more is written.
      cancelled_ = true;
      if (!final_status_) final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
    }
  }
  if (!ok) CancelEngineRequest();
  Pump();
}

void GenerateReactor::OnCancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    pending_.Clear();
    has_pending_ = false;
    if (!final_status_) {
      final_status_ = std::chrono::system_clock::now() >= deadline_
                          ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded")
                          : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
  }
  {
    const ScopedRequestId log_scope(request_id_);
    spdlog::debug("generate: cancelled by the client or its deadline");
  }
  CancelEngineRequest();
  Pump();
}

void GenerateReactor::CancelEngineRequest() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (engine_cancel_sent_ || engine_done_) return;
    engine_cancel_sent_ = true;
  }
  // Never under mu_: the engine may call back from inside Cancel.
  engine_.Cancel(request_id_);
}

void GenerateReactor::OnDone() {
  calls_in_flight_.fetch_sub(1);
  bool delete_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rpc_done_ = true;
    delete_now = engine_done_;
  }
  if (delete_now) delete this;
}

void GenerateReactor::ReleaseEngineSide() {
  bool delete_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    engine_done_ = true;
    delete_now = rpc_done_;
  }
  if (delete_now) delete this;
}

void GenerateReactor::RecordFinished(const grpc::Status& status) {
  // Stage split: replica_queue until a step first included the request (or,
  // when it never ran, until the engine accepted the call), prefill until the
  // first token, decode until now. A call the engine refused (or that got no
  // token) puts its time in the stages it reached.
  const Clock::time_point end = Clock::now();
  WorkerRequestTimes times;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Clock::time_point accepted = scheduled_time_.has_value() ? std::min(*scheduled_time_, end)
                                                                   : accepted_time_.value_or(end);
    const Clock::time_point first_token = first_token_time_.value_or(end);
    times.replica_queue = SecondsBetween(start_time_, accepted);
    times.prefill = SecondsBetween(accepted, std::max(accepted, first_token));
    times.decode = SecondsBetween(std::max(accepted, first_token), end);
  }
  context_->AddTrailingMetadata(metrics::kWorkerSecondsMetadataKey,
                                absl::StrFormat("%.9f", times.total()));
  const std::string code_name =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  {
    const ScopedRequestId log_scope(request_id_);
    spdlog::debug("generate: finished {} in {:.6f} s (queue {:.6f}, prefill {:.6f}, decode {:.6f})",
                  code_name, times.total(), times.replica_queue, times.prefill, times.decode);
  }
  if (metrics_ != nullptr) metrics_->RecordRequestFinished(code_name, times);
}

}  // namespace strata::service
