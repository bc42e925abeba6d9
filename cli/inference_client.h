// A small synchronous client for strata.v1.Inference and grpc.health.v1, for
// the `strata` CLI, benchmarks and tests. gRPC errors come back as
// absl::Status with the same code and message.
//
// Thread-safety: one client may be used from several threads.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::cli {

class InferenceClient {
 public:
  // `address` is HOST:PORT. Calls fail after `timeout` when one is given.
  explicit InferenceClient(const std::string& address,
                           std::optional<std::chrono::milliseconds> timeout = std::nullopt);

  const std::string& address() const { return address_; }

  // Calls `on_response` for each streamed response, in order, on this thread.
  absl::Status Generate(const v1::GenerateRequest& request,
                        const std::function<void(const v1::GenerateResponse&)>& on_response);
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request);
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(const v1::DetokenizeRequest& request);
  absl::StatusOr<v1::ModelInfo> GetModelInfo();
  // grpc.health.v1 Check of `service` ("" for the whole server).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
      const std::string& service);

 private:
  void PrepareContext(grpc::ClientContext& context) const;
  // Same code; the message names the server when the server was not reached.
  absl::Status ToStatus(const grpc::Status& status) const;

  const std::string address_;
  const std::optional<std::chrono::milliseconds> timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace strata::cli
