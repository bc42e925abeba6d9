// Conversions between the public protobuf API (strata.v1) and the engine's
// plain value types, and absl::Status -> grpc::Status. Only the service
// adapter uses these; the engine never sees protobuf.
//
// Thread-safety: pure functions.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "strata/v1/inference.pb.h"
#include "worker/engine/request.h"

namespace strata::tokenizer {
class Tokenizer;
}

namespace strata::service {

// The engine request for `request`. Optional proto fields override the engine
// defaults only when set (the defaults are those the .proto documents).
// Errors: INVALID_ARGUMENT naming the field for a request with no prompt, an
// empty text or an empty token id list. Value ranges are the engine's to check.
absl::StatusOr<engine::GenerationRequest> ToEngineRequest(const v1::GenerateRequest& request);

v1::FinishReason ToProto(engine::FinishReason reason);

// Appends one engine output to `response` (text, and token ids and logprobs
// when asked for). Token strings for logprobs come from `tokenizer`. When the
// output is the last one, sets finish_reason and usage.
void AppendOutput(const engine::GenerationOutput& output, bool return_token_ids,
                  const tokenizer::Tokenizer& tokenizer, v1::GenerateResponse& response);

// Same code (absl and gRPC share code numbers), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace strata::service
