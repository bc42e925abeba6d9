#include "worker/service/request_conversion.h"

#include <string>

#include "worker/tokenizer/tokenizer.h"

namespace strata::service {
namespace {

void ApplySampling(const v1::SamplingParams& proto, engine::SamplingParams& params) {
  if (proto.has_temperature()) params.temperature = proto.temperature();
  if (proto.has_top_k()) params.top_k = proto.top_k();
  if (proto.has_top_p()) params.top_p = proto.top_p();
  if (proto.has_min_p()) params.min_p = proto.min_p();
  if (proto.has_repetition_penalty()) params.repetition_penalty = proto.repetition_penalty();
  if (proto.has_presence_penalty()) params.presence_penalty = proto.presence_penalty();
  if (proto.has_frequency_penalty()) params.frequency_penalty = proto.frequency_penalty();
  if (proto.has_seed()) params.seed = proto.seed();
}

void ApplyStopping(const v1::StoppingCriteria& proto, engine::StoppingCriteria& stopping) {
  if (proto.has_max_tokens()) stopping.max_tokens = proto.max_tokens();
  stopping.stop.assign(proto.stop().begin(), proto.stop().end());
  stopping.stop_token_ids.assign(proto.stop_token_ids().begin(), proto.stop_token_ids().end());
  stopping.ignore_eos = proto.ignore_eos();
}

v1::TokenLogprob ToProto(const engine::TokenLogprob& logprob,
                         const tokenizer::Tokenizer& tokenizer) {
  v1::TokenLogprob proto;
  proto.set_id(logprob.id);
  proto.set_token(tokenizer.IdToToken(logprob.id));
  proto.set_logprob(logprob.logprob);
  return proto;
}

}  // namespace

absl::StatusOr<engine::GenerationRequest> ToEngineRequest(const v1::GenerateRequest& request) {
  engine::GenerationRequest converted;
  converted.request_id = request.request_id();
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) {
        return absl::InvalidArgumentError("text: the prompt is empty");
      }
      converted.prompt_text = request.text();
      break;
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids().empty()) {
        return absl::InvalidArgumentError("token_ids: the prompt is empty");
      }
      converted.prompt_ids.assign(request.token_ids().ids().begin(),
                                  request.token_ids().ids().end());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt: the request sets neither text nor token_ids");
  }
  ApplySampling(request.sampling(), converted.sampling);
  ApplyStopping(request.stopping(), converted.stopping);
  converted.top_logprobs = request.options().top_logprobs();
  if (request.options().has_add_special_tokens()) {
    converted.add_special_tokens = request.options().add_special_tokens();
  }
  return converted;
}

v1::FinishReason ToProto(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case engine::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case engine::FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case engine::FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void AppendOutput(const engine::GenerationOutput& output, bool return_token_ids,
                  const tokenizer::Tokenizer& tokenizer, v1::GenerateResponse& response) {
  response.mutable_text()->append(output.text);
  if (return_token_ids) {
    response.mutable_token_ids()->Add(output.token_ids.begin(), output.token_ids.end());
  }
  for (const engine::TokenLogprobs& logprobs : output.logprobs) {
    v1::Logprobs* proto = response.add_logprobs();
    *proto->mutable_chosen() = ToProto(logprobs.chosen, tokenizer);
    for (const engine::TokenLogprob& top : logprobs.top) {
      *proto->add_top() = ToProto(top, tokenizer);
    }
  }
  if (output.finished && output.error.ok()) {
    response.set_finish_reason(ToProto(output.finish_reason));
    v1::Usage* usage = response.mutable_usage();
    usage->set_prompt_tokens(output.usage.prompt_tokens);
    usage->set_completion_tokens(output.usage.completion_tokens);
    usage->set_cached_tokens(output.usage.cached_tokens);
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace strata::service
