// LoadTarget over strata.v1.Inference: one channel (HTTP/2 streams multiplex
// the concurrent requests), a server-streaming Generate per request with
// prompt token ids, ignore_eos and return_token_ids (tokens are counted from
// the ids, since text may be held back).
//
// Thread-safety: Run() may be called from many threads at once.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "bench/load/load_target.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"

namespace strata::bench {

class GrpcTarget final : public LoadTarget {
 public:
  // Waits up to `connect_timeout` for the server and reads its ModelInfo.
  // UNAVAILABLE naming the address when it cannot be reached.
  static absl::StatusOr<std::unique_ptr<GrpcTarget>> Connect(
      const std::string& address, std::chrono::milliseconds connect_timeout);

  const v1::ModelInfo& model_info() const { return model_info_; }

  // Sampling temperature of every request (default 0: greedy).
  void set_temperature(float temperature) { temperature_ = temperature; }
  // Deadline of every request (unset: none).
  void set_request_timeout(std::optional<std::chrono::milliseconds> timeout) {
    request_timeout_ = timeout;
  }

  RequestResult Run(const BenchRequest& request) override;

 private:
  explicit GrpcTarget(std::shared_ptr<grpc::Channel> channel);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  v1::ModelInfo model_info_;
  float temperature_ = 0.0f;
  std::optional<std::chrono::milliseconds> request_timeout_;
};

}  // namespace strata::bench
