// The router's strata.v1.Inference. Generate calls are routed as streams
// (RoutedGenerateCall: admission, balancing, retries before the first
// response); Tokenize, Detokenize and GetModelInfo are forwarded as unary
// calls to an available backend, retried on another one when a backend
// answers UNAVAILABLE. Deadlines go to the backend with every call; backend
// errors come back with their code and message, UNAVAILABLE ones prefixed
// with the backend's address.
//
// Thread-safety: gRPC calls the methods from its threads; the mutable state
// is atomic.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "grpcpp/grpcpp.h"
#include "router/backend.h"
#include "router/request_router.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::router {

// Generate is a raw method: the request arrives as bytes, is parsed for
// routing, and the same bytes go to the backend.
class InferenceProxy final
    : public v1::Inference::WithRawCallbackMethod_Generate<v1::Inference::CallbackService> {
 public:
  // `router` outlives the proxy.
  explicit InferenceProxy(RequestRouter& router);

  // Generate calls accepted and not yet done (for draining at shutdown).
  int32_t GenerateCallsInFlight() const { return generate_calls_in_flight_.load(); }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
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
  // The call's request id: the request's request_id field, else the client's
  // x-request-id metadata, else a new "rtr-..." id.
  std::string RequestIdOf(const grpc::CallbackServerContext& context,
                          const v1::GenerateRequest& request);

  RequestRouter& router_;
  std::atomic<int32_t> generate_calls_in_flight_{0};
  const std::string request_id_prefix_;
  std::atomic<uint64_t> next_request_number_{1};
};

// The status a client sees for a backend's `status`: the same, except that
// UNAVAILABLE names the backend ("backend HOST:PORT: <message>").
grpc::Status RelayedStatus(const Backend& backend, const grpc::Status& status);

}  // namespace strata::router
