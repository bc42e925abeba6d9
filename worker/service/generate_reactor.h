// One Generate call: submits the request to the engine and streams its
// outputs back, one write in flight at a time.
//
// The engine calls back on its step thread; gRPC calls the reactions on its
// own threads. Outputs that arrive while a write is in flight are coalesced
// into the next response. The reactor deletes itself once both gRPC (OnDone)
// and the engine (its last output, or a refused Submit) are done with it, so
// neither side can call into freed memory.
//
// Thread-safety: all state is guarded by mu_; StartWrite and Finish are never
// called with mu_ held and never concurrently (write_in_flight_ and
// finish_called_ hand the right to call them to exactly one thread).
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"
#include "worker/engine/engine.h"

namespace strata::service {

class WorkerMetrics;

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // `metrics` may be null. `engine`, `metrics` and `calls_in_flight` outlive
  // the reactor. `deadline` is the call's deadline (time_point::max() if none);
  // a cancellation after it counts as DEADLINE_EXCEEDED in the metrics.
  // `calls_in_flight` is incremented now and decremented when gRPC is done.
  // `context` is the call's; the reactor adds the worker's time on the call
  // to its trailing metadata (metrics::kWorkerSecondsMetadataKey) so that a
  // router can tell its own share of the request's time.
  GenerateReactor(grpc::CallbackServerContext* context, engine::Engine& engine,
                  WorkerMetrics* metrics, std::chrono::system_clock::time_point deadline,
                  std::atomic<int32_t>& calls_in_flight);

  // Converts and submits `request` (with `request_id`, which must be unique
  // among requests in flight). A refused request finishes the call with the
  // engine's status. Call once, right after construction.
  void Start(const v1::GenerateRequest& request, std::string request_id);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Clock = std::chrono::steady_clock;

  // Engine step thread.
  void OnEngineOutput(engine::GenerationOutput output);
  // Starts the next write or the Finish when nothing is in flight.
  void Pump();
  // Engine::Cancel, once, unless the engine is already done with the request.
  void CancelEngineRequest();
  // Marks one side done; deletes `this` when both are.
  void ReleaseEngineSide();
  void RecordFinished(const grpc::Status& status);

  grpc::CallbackServerContext* const context_;
  engine::Engine& engine_;
  WorkerMetrics* const metrics_;
  const std::chrono::system_clock::time_point deadline_;
  std::atomic<int32_t>& calls_in_flight_;
  const Clock::time_point start_time_ = Clock::now();
  std::string request_id_;
  bool return_token_ids_ = false;

  std::mutex mu_;
  v1::GenerateResponse pending_;  // outputs not yet handed to gRPC
  bool has_pending_ = false;
  std::optional<grpc::Status> final_status_;  // set once the stream must end
  bool cancelled_ = false;                    // client gone: drop pending output
  bool write_in_flight_ = false;
  bool finish_called_ = false;
  bool rpc_done_ = false;     // OnDone ran
  bool engine_done_ = false;  // the engine will not call back again
  bool engine_cancel_sent_ = false;
  std::optional<Clock::time_point> last_token_time_;
  std::optional<Clock::time_point> scheduled_time_;  // first in an engine step
  // When the engine accepted the request (Submit returned) and when its first
  // token arrived; unset until then.
  std::optional<Clock::time_point> accepted_time_;
  std::optional<Clock::time_point> first_token_time_;

  // Owned by whichever thread set write_in_flight_; gRPC reads it until OnWriteDone.
  v1::GenerateResponse in_flight_;
};

}  // namespace strata::service
