// One Generate call relayed to a backend: the server side is a write reactor
// toward the client, the backend side a read reactor on the backend's stream.
// One response is in flight at a time (read one, write it, read the next), so
// a slow client slows the backend stream instead of filling memory.
//
// The client's deadline is passed to the backend call; a client cancel (or
// deadline) cancels the backend call at once. The backend's final status is
// passed through with its code and message; UNAVAILABLE gets the backend's
// address in front, so a person knows which backend could not serve.
//
// The relay deletes itself after both sides are done (server OnDone and
// backend OnDone).
//
// Thread-safety: reactions of both sides may run concurrently; the state that
// decides the next step is guarded by mu_.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "grpcpp/grpcpp.h"
#include "router/backend.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::router {

class RouterMetrics;

// `backend`, `metrics` (may be null) and `calls_in_flight` outlive the relay;
// `calls_in_flight` counts it from construction to OnDone.
class GenerateRelay final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // `request_id` names the call in logs and goes to the backend as
  // x-request-id metadata.
  GenerateRelay(grpc::CallbackServerContext* server_context, const v1::GenerateRequest& request,
                std::string request_id, Backend& backend, RouterMetrics* metrics,
                std::atomic<int32_t>& calls_in_flight);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  class BackendReader final : public grpc::ClientReadReactor<v1::GenerateResponse> {
   public:
    explicit BackendReader(GenerateRelay& relay) : relay_(relay) {}
    void OnReadDone(bool ok) override { relay_.OnBackendRead(ok); }
    void OnDone(const grpc::Status& status) override { relay_.OnBackendDone(status); }

   private:
    GenerateRelay& relay_;
  };
  using Clock = std::chrono::steady_clock;

  void OnBackendRead(bool ok);
  void OnBackendDone(const grpc::Status& status);
  // Finishes the client call once the backend is done and no write is in flight.
  void MaybeFinish();
  void MaybeDelete(std::unique_lock<std::mutex>& lock);

  Backend& backend_;
  RouterMetrics* const metrics_;
  std::atomic<int32_t>& calls_in_flight_;
  const Clock::time_point start_time_ = Clock::now();
  Clock::time_point backend_call_time_;  // when the backend call was issued
  const std::string request_id_;
  const v1::GenerateRequest request_;
  grpc::ClientContext backend_context_;
  BackendReader reader_{*this};
  // Read into by the backend side, then written from by the server side;
  // never both at once (one response in flight).
  v1::GenerateResponse response_;

  std::mutex mu_;
  bool first_response_seen_ = false;
  bool write_in_flight_ = false;
  std::optional<grpc::Status> backend_status_;
  double backend_seconds_ = 0.0;  // the backend's own time on the call, as it reported it
  bool finish_called_ = false;
  bool server_done_ = false;
  bool backend_done_ = false;
};

}  // namespace strata::router
