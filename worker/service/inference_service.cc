#include "worker/service/inference_service.h"

#include <random>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics_catalogue.h"
#include "worker/model/model_config.h"
#include "worker/service/generate_reactor.h"
#include "worker/service/request_conversion.h"
#include "worker/service/worker_metrics.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::service {
namespace {

const grpc::Status& StillLoading() {
  static const grpc::Status* const kStatus =
      new grpc::Status(grpc::StatusCode::UNAVAILABLE, "model is still loading");
  return *kStatus;
}

std::string RandomPrefix() {
  std::random_device device;
  return absl::StrFormat("%08x", device());
}

}  // namespace

InferenceService::InferenceService(WorkerMetrics* metrics)
    : metrics_(metrics), request_id_prefix_(RandomPrefix()) {}

void InferenceService::AttachEngine(engine::Engine* engine, ModelDescription description) {
  description_ = std::move(description);
  engine_.store(engine, std::memory_order_release);
}

std::string InferenceService::RequestIdOf(const grpc::CallbackServerContext& context,
                                          const v1::GenerateRequest& request) {
  if (!request.request_id().empty()) return request.request_id();
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find(metrics::kRequestIdMetadataKey); it != metadata.end()) {
    if (!it->second.empty()) return std::string(it->second.data(), it->second.size());
  }
  return NewRequestId();
}

std::string InferenceService::NewRequestId() {
  return absl::StrCat("req-", request_id_prefix_, "-", next_request_number_.fetch_add(1));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  engine::Engine* const engine = this->engine();
  if (engine == nullptr) {
    // A reactor that only finishes: the smallest one gRPC accepts for a stream.
    class Refusal final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
     public:
      explicit Refusal(const grpc::Status& status) { Finish(status); }
      void OnDone() override { delete this; }
    };
    if (metrics_ != nullptr) metrics_->RecordRequestFinished("UNAVAILABLE", {});
    return new Refusal(StillLoading());
  }
  auto* reactor = new GenerateReactor(context, *engine, metrics_, context->deadline(),
                                      generate_calls_in_flight_);
  reactor->Start(*request, RequestIdOf(*context, *request));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine::Engine* const engine = this->engine();
  if (engine == nullptr) {
    reactor->Finish(StillLoading());
    return reactor;
  }
  const tokenizer::Tokenizer& tokenizer = engine->tokenizer();
  const bool add_special_tokens =
      request->has_add_special_tokens() ? request->add_special_tokens() : true;
  const std::vector<int32_t> ids = tokenizer.Encode(request->text(), add_special_tokens);
  response->mutable_ids()->Add(ids.begin(), ids.end());
  for (int32_t id : ids) response->add_tokens(tokenizer.IdToToken(id));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const v1::DetokenizeRequest* request,
                                                       v1::DetokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine::Engine* const engine = this->engine();
  if (engine == nullptr) {
    reactor->Finish(StillLoading());
    return reactor;
  }
  const tokenizer::Tokenizer& tokenizer = engine->tokenizer();
  const int32_t vocab_size = tokenizer.vocab_size();
  for (int i = 0; i < request->ids_size(); ++i) {
    const int32_t id = request->ids(i);
    if (id < 0 || id >= vocab_size) {
      reactor->Finish(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                       absl::StrFormat("ids[%d]: token id %d is outside the vocabulary [0, %d)", i,
                                       id, vocab_size)));
      return reactor;
    }
  }
  const bool skip_special_tokens =
      request->has_skip_special_tokens() ? request->skip_special_tokens() : true;
  response->set_text(tokenizer.Decode(
      std::span<const int32_t>(request->ids().data(), request->ids().size()), skip_special_tokens));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest* /*request*/,
                                                         v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine::Engine* const engine = this->engine();
  if (engine == nullptr) {
    reactor->Finish(StillLoading());
    return reactor;
  }
  const model::ModelConfig& config = engine->model_config();
  response->set_model_name(description_.model_name);
  response->set_architecture(config.architecture);
  response->set_max_context_length(config.max_position_embeddings);
  response->set_vocab_size(config.vocab_size);
  response->mutable_eos_token_ids()->Add(config.eos_token_ids.begin(), config.eos_token_ids.end());
  if (config.bos_token_id) response->set_bos_token_id(*config.bos_token_id);
  response->set_dtype(description_.weight_dtype);
  response->set_parameter_count(description_.parameter_count);
  response->set_tensor_parallel_size(description_.tensor_parallel_size);
  response->set_pipeline_parallel_size(description_.pipeline_parallel_size);
  response->set_build_version(STRATA_VERSION);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace strata::service
