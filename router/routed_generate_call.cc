#include "router/routed_generate_call.h"

#include <cstdlib>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/metrics_catalogue.h"
#include "spdlog/spdlog.h"

namespace strata::router {
namespace {

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

// strata.v1.Inference/Generate, called by name on the backends' generic stubs.
const std::string kGenerateMethod = "/strata.v1.Inference/Generate";

double SecondsBetween(std::chrono::steady_clock::time_point from,
                      std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

absl::StatusOr<grpc::ByteBuffer> MergeGenerateResponses(
    const std::vector<grpc::ByteBuffer>& parts) {
  v1::GenerateResponse merged;
  std::string text;
  for (const grpc::ByteBuffer& bytes : parts) {
    grpc::ByteBuffer copy = bytes;  // Deserialize clears its input
    v1::GenerateResponse response;
    if (!grpc::SerializationTraits<v1::GenerateResponse>::Deserialize(&copy, &response).ok()) {
      return absl::InvalidArgumentError("a backend response does not parse as GenerateResponse");
    }
    text += response.text();
    merged.MergeFrom(response);  // appends ids and logprobs; the last's finish and usage
  }
  merged.set_text(std::move(text));
  grpc::ByteBuffer out;
  bool own_buffer = false;
  const grpc::Status status =
      grpc::SerializationTraits<v1::GenerateResponse>::Serialize(merged, &out, &own_buffer);
  if (!status.ok()) return absl::InternalError(status.error_message());
  return out;
}

RoutedGenerateCall* RoutedGenerateCall::Start(grpc::CallbackServerContext* server_context,
                                              const grpc::ByteBuffer& request_bytes,
                                              v1::GenerateRequest request, std::string request_id,
                                              std::string session_key, RequestRouter& router,
                                              std::atomic<int32_t>* calls_in_flight) {
  auto* call = new RoutedGenerateCall(server_context, request_bytes, std::move(request),
                                      std::move(request_id), std::move(session_key), router,
                                      calls_in_flight);
  if (router.metrics() != nullptr) router.metrics()->RequestStarted();
  if (ClientRateLimiter* limiter = router.rate_limiter(); limiter != nullptr) {
    const auto& metadata = server_context->client_metadata();
    if (auto it = metadata.find(router.options().client_key); it != metadata.end()) {
      const std::string client(it->second.data(), it->second.size());
      std::chrono::milliseconds retry_after{0};
      if (!limiter->Allow(client, Clock::now(), &retry_after)) {
        if (router.metrics() != nullptr) router.metrics()->RecordRejection("rate_limited");
        server_context->AddTrailingMetadata("grpc-retry-pushback-ms",
                                            std::to_string(retry_after.count()));
        call->SetFinalStatus(
            grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                         absl::StrCat("client \"", client, "\" is over its rate limit (",
                                      limiter->rate(), " calls/s, bursts of ", limiter->burst(),
                                      "); retry in ", retry_after.count(), " ms")));
        return call;
      }
    }
  }
  AdmissionController& admission = router.admission();
  switch (admission.TryAdmit(call)) {
    case AdmissionController::Outcome::kAdmitted:
      call->Admitted();
      break;
    case AdmissionController::Outcome::kQueued:
      break;  // Admitted() or OnCancel() comes later
    case AdmissionController::Outcome::kQueueFull: {
      if (router.metrics() != nullptr) router.metrics()->RecordRejection("overloaded");
      const auto hint = router.options().overload_retry_hint;
      server_context->AddTrailingMetadata("grpc-retry-pushback-ms", std::to_string(hint.count()));
      call->SetFinalStatus(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("router overloaded: ", admission.max_in_flight(), " calls in flight and ",
                       admission.max_queued(), " queued (--max-inflight); retry in ", hint.count(),
                       " ms or at another router")));
      break;
    }
    case AdmissionController::Outcome::kDraining:
      if (router.metrics() != nullptr) router.metrics()->RecordRejection("draining");
      call->SetFinalStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                        "router is draining; retry at another router"));
      break;
  }
  return call;
}

RoutedGenerateCall::RoutedGenerateCall(grpc::CallbackServerContext* server_context,
                                       const grpc::ByteBuffer& request_bytes,
                                       v1::GenerateRequest request, std::string request_id,
                                       std::string session_key, RequestRouter& router,
                                       std::atomic<int32_t>* calls_in_flight)
    : server_context_(server_context),
      router_(router),
      calls_in_flight_(calls_in_flight),
      request_bytes_(request_bytes),
      request_(std::move(request)),
      request_id_(std::move(request_id)),
      route_{&request_, std::move(session_key)} {
  if (calls_in_flight_ != nullptr) calls_in_flight_->fetch_add(1);
}

void RoutedGenerateCall::Admitted() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    holds_slot_ = true;
    if (!cancelled_) stage_ = Stage::kRouting;
  }
  // A call cancelled while queued was finished by OnCancel unless it had
  // already been handed its slot; then it ends here.
  Route();
}

void RoutedGenerateCall::Route() {
  Attempt* attempt = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (final_status_ || stage_ == Stage::kDone) return;
    if (cancelled_) {
      lock.unlock();
      SetFinalStatus(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
      return;
    }
    const RequestRouter::Choice choice = router_.Pick(route_, tried_);
    if (choice.backend == nullptr) {
      const Clock::time_point now = Clock::now();
      if (!wait_for_backend_until_) {
        wait_for_backend_until_ = now + router_.options().no_backend_wait;
      }
      if (now < *wait_for_backend_until_ && DeadlineLeft()) {
        ArmTimerLocked(std::chrono::milliseconds(50));
        return;
      }
      lock.unlock();
      if (router_.metrics() != nullptr) router_.metrics()->RecordRejection("no_backend");
      SetFinalStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                  absl::StrCat("no backend available: ", choice.known_backends,
                                               " known, none healthy and accepting calls")));
      return;
    }
    wait_for_backend_until_.reset();
    if (!tried_.empty() && router_.metrics() != nullptr) router_.metrics()->RecordRetry();
    tried_.push_back(choice.backend->address());
    attempts_.push_back(std::make_unique<Attempt>(*this, choice.backend));
    attempt = attempts_.back().get();
    attempt->read_outstanding_ = true;  // the first read, started below
    current_ = attempt;
    ++attempts_outstanding_;
    if (!first_call_time_) first_call_time_ = Clock::now();
    {
      const ScopedRequestId log_scope(request_id_);
      spdlog::debug("generate: attempt {} on backend {} ({})", tried_.size(),
                    choice.backend->address(), PickReasonName(choice.reason));
    }
  }
  attempt->probe_ = attempt->backend_->CallStarted();
  // An infinite deadline stays infinite; a finite one travels as the time left.
  attempt->context_.set_deadline(server_context_->deadline());
  attempt->context_.AddMetadata(metrics::kRequestIdMetadataKey, request_id_);
  attempt->request_ = request_bytes_;
  attempt->backend_->generic().PrepareBidiStreamingCall(&attempt->context_, kGenerateMethod,
                                                        grpc::StubOptions(), attempt);
  // Reads are also started from server-side reactions (OnWriteDone, after
  // a pause), so a hold keeps the attempt from finishing until reading stops.
  attempt->AddHold();
  attempt->StartWriteLast(&attempt->request_, grpc::WriteOptions());
  attempt->StartRead(&attempt->response_);
  attempt->StartCall();
}

void RoutedGenerateCall::OnAttemptRead(Attempt& attempt, bool ok) {
  bool start_write = false;
  bool read_again = false;
  bool remove_hold = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    attempt.read_outstanding_ = false;
    if (!ok || client_gone_) {
      // The stream ended (OnAttemptDone brings the status), or nobody is
      // left to write to.
      remove_hold = StopReadingLocked(attempt);
    } else {
      if (!first_response_seen_) {
        first_response_seen_ = true;
        if (router_.metrics() != nullptr) {
          router_.metrics()->RecordFirstResponse(SecondsBetween(start_time_, Clock::now()));
        }
      }
      if (write_in_flight_) {
        held_.push_back(attempt.response_);  // shares the slices
      } else {
        write_in_flight_ = true;
        out_.Swap(&attempt.response_);
        start_write = true;
      }
      attempt.response_.Clear();
      if (held_.size() < kMaxHeldResponses) {
        attempt.read_outstanding_ = true;
        read_again = true;
      } else {
        reading_paused_ = true;
      }
    }
  }
  if (start_write) StartWrite(&out_);
  if (read_again) attempt.StartRead(&attempt.response_);
  if (remove_hold) attempt.RemoveHold();
}

bool RoutedGenerateCall::StopReadingLocked(Attempt& attempt) {
  if (attempt.hold_removed_) return false;
  attempt.hold_removed_ = true;
  return true;
}

void RoutedGenerateCall::TakeHeldLocked() {
  if (held_.size() > 1) {
    absl::StatusOr<grpc::ByteBuffer> merged = MergeGenerateResponses(held_);
    if (merged.ok()) {
      out_ = *std::move(merged);
      held_.clear();
      return;
    }
    // Not ours to judge: relay them one at a time, as they came.
  }
  out_ = held_.front();
  held_.erase(held_.begin());
}

void RoutedGenerateCall::OnWriteDone(bool ok) {
  Attempt* attempt = nullptr;
  bool write_next = false;
  bool resume_reading = false;
  bool remove_hold = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    attempt = current_;
    if (!ok) {
      client_gone_ = true;
      write_in_flight_ = false;
      held_.clear();
      reading_paused_ = false;
      // An outstanding read stops the reading when it completes.
      if (!attempt->read_outstanding_) remove_hold = StopReadingLocked(*attempt);
    } else if (!held_.empty()) {
      TakeHeldLocked();
      write_next = true;
      if (reading_paused_) {
        reading_paused_ = false;
        attempt->read_outstanding_ = true;
        resume_reading = true;
      }
    } else {
      write_in_flight_ = false;
    }
  }
  if (!ok) {
    // The client is gone: stop the backend now instead of reading on.
    attempt->context_.TryCancel();
    if (remove_hold) attempt->RemoveHold();
    MaybeFinish();
    return;
  }
  if (write_next) {
    StartWrite(&out_);
    if (resume_reading) attempt->StartRead(&attempt->response_);
    return;
  }
  MaybeFinish();
}

void RoutedGenerateCall::OnAttemptDone(Attempt& attempt, const grpc::Status& status) {
  const bool unavailable = status.error_code() == grpc::StatusCode::UNAVAILABLE;
  bool retry = false;
  bool cancelled = false;
  bool first_response_seen = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled = cancelled_;
    first_response_seen = first_response_seen_;
    if (unavailable && !cancelled && !first_response_seen &&
        static_cast<int32_t>(tried_.size()) < router_.options().max_attempts && DeadlineLeft()) {
      retry = true;
    }
    const auto& trailers = attempt.context_.GetServerTrailingMetadata();
    if (auto it = trailers.find(metrics::kWorkerSecondsMetadataKey); it != trailers.end()) {
      const std::string text(it->second.data(), it->second.size());
      char* end = nullptr;
      const double parsed = std::strtod(text.c_str(), &end);
      if (end != text.c_str() && parsed >= 0.0) backend_seconds_ = parsed;
    }
  }
  // Client cancels and deadlines are not the backend's fault.
  attempt.backend_->CallFinished(/*backend_failed=*/unavailable && !cancelled, attempt.probe_);
  const std::string& address = attempt.backend_->address();
  if (!status.ok()) {
    const ScopedRequestId log_scope(request_id_);
    spdlog::debug("generate: backend {} ended with {}: {}{}", address,
                  CodeName(status.error_code()), status.error_message(),
                  retry ? "; retrying elsewhere" : "");
  }
  if (retry) {
    std::unique_lock<std::mutex> lock(mu_);
    --attempts_outstanding_;
    ArmTimerLocked(router_.RetryBackoff(static_cast<int32_t>(tried_.size())));
    return;
  }
  if (unavailable && first_response_seen && !cancelled) {
    SetFinalStatus(grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat(kLostMidStream, " (backend ", address, "): ", status.error_message())));
  } else if (unavailable && !cancelled) {
    SetFinalStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                absl::StrCat("backend ", address, ": ", status.error_message())));
  } else {
    SetFinalStatus(status);
  }
  std::unique_lock<std::mutex> lock(mu_);
  --attempts_outstanding_;
  MaybeDelete(lock);
}

void RoutedGenerateCall::ArmTimerLocked(std::chrono::milliseconds delay) {
  ++timers_outstanding_;
  timers_.push_back(std::make_unique<grpc::Alarm>());
  timers_.back()->Set(std::chrono::system_clock::now() + delay,
                      [this](bool fired) { OnTimer(fired); });
}

void RoutedGenerateCall::OnTimer(bool fired) {
  if (fired) {
    Route();
  } else {
    SetFinalStatus(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }
  std::unique_lock<std::mutex> lock(mu_);
  --timers_outstanding_;
  MaybeDelete(lock);
}

void RoutedGenerateCall::OnCancel() {
  Attempt* attempt = nullptr;
  bool withdrawn = false;
  grpc::Alarm* timer = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    attempt = current_;
    if (timers_outstanding_ > 0) timer = timers_.back().get();
    if (stage_ == Stage::kAdmission && !holds_slot_) {
      withdrawn = router_.admission().Withdraw(this);
    }
  }
  if (attempt != nullptr) attempt->context_.TryCancel();
  if (timer != nullptr) timer->Cancel();
  if (withdrawn) {
    SetFinalStatus(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while queued"));
  }
}

bool RoutedGenerateCall::DeadlineLeft() const {
  return server_context_->deadline() > std::chrono::system_clock::now();
}

void RoutedGenerateCall::SetFinalStatus(grpc::Status status) {
  // The call may be deleted once it is finished; keep what is needed after.
  RequestRouter& router = router_;
  bool release = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_status_) return;
    final_status_ = std::move(status);
    stage_ = Stage::kDone;
    release = holds_slot_;
    holds_slot_ = false;
  }
  MaybeFinish();
  // Last: the slot may pass to a queued call on this thread.
  if (release) router.admission().Release();
}

void RoutedGenerateCall::MaybeFinish() {
  grpc::Status status;
  RouterRequestTimes times;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finish_called_ || write_in_flight_ || !held_.empty() || !final_status_) return;
    // A relayed attempt may still be reading: its OnDone sets the status.
    finish_called_ = true;
    status = *final_status_;
    times.backend = backend_seconds_;
    const Clock::time_point end = Clock::now();
    times.total = SecondsBetween(start_time_, end);
    times.router_queue = SecondsBetween(start_time_, first_call_time_.value_or(end));
  }
  const std::string code_name = CodeName(status.error_code());
  {
    const ScopedRequestId log_scope(request_id_);
    spdlog::debug("generate: finished {} in {:.6f} s (backend {:.6f} s)", code_name, times.total,
                  times.backend);
  }
  if (router_.metrics() != nullptr) router_.metrics()->RequestFinished(code_name, times);
  Finish(status);
}

void RoutedGenerateCall::OnDone() {
  if (calls_in_flight_ != nullptr) calls_in_flight_->fetch_sub(1);
  std::unique_lock<std::mutex> lock(mu_);
  server_done_ = true;
  MaybeDelete(lock);
}

void RoutedGenerateCall::MaybeDelete(std::unique_lock<std::mutex>& lock) {
  const bool delete_now = server_done_ && attempts_outstanding_ == 0 && timers_outstanding_ == 0 &&
                          stage_ == Stage::kDone;
  lock.unlock();
  if (delete_now) delete this;
}

}  // namespace strata::router
