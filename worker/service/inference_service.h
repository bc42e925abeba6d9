// The worker's gRPC face: strata.v1.Inference served from an engine::Engine.
// A thin adapter: it converts protobuf to engine types and back, maps
// absl::Status to grpc::Status, and turns client cancellation and deadlines
// into Engine::Cancel. The worker starts serving before its model is loaded;
// until AttachEngine every call returns UNAVAILABLE "model is still loading".
//
// Thread-safety: gRPC calls the RPC methods from its threads; AttachEngine may
// run concurrently with them.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"
#include "worker/engine/engine.h"

namespace strata::service {

class WorkerMetrics;

// What GetModelInfo reports beyond the engine's ModelConfig.
struct ModelDescription {
  std::string model_name;    // e.g. the model folder's name
  std::string weight_dtype;  // as kept in memory: "F32", "F16" or "BF16"
  int64_t parameter_count = 0;
  int32_t tensor_parallel_size = 1;
  int32_t pipeline_parallel_size = 1;
};

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // `metrics` may be null; when set it outlives the service.
  explicit InferenceService(WorkerMetrics* metrics);

  // Starts serving `engine`.
  // REQUIRES: called at most once; `engine` outlives every call (shut the
  // gRPC server down before the engine).
  void AttachEngine(engine::Engine* engine, ModelDescription description);

  // Generate calls accepted and not yet done (for draining at shutdown).
  int32_t GenerateCallsInFlight() const { return generate_calls_in_flight_.load(); }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  // nullptr while the model loads.
  engine::Engine* engine() const { return engine_.load(std::memory_order_acquire); }
  // The call's request id: the request's request_id field, else the
  // x-request-id metadata a router sends, else a new one.
  std::string RequestIdOf(const grpc::CallbackServerContext& context,
                          const v1::GenerateRequest& request);
  // A request id for requests that come without one.
  std::string NewRequestId();

  WorkerMetrics* const metrics_;
  // Written once by AttachEngine, before engine_ is published.
  ModelDescription description_;
  std::atomic<engine::Engine*> engine_{nullptr};
  const std::string request_id_prefix_;
  std::atomic<uint64_t> next_request_number_{1};
  std::atomic<int32_t> generate_calls_in_flight_{0};
};

}  // namespace strata::service
