#include "worker/engine/engine_factory.h"

#include <utility>

#include "worker/engine/batching_engine.h"

namespace strata::engine {

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(const EngineOptions& options) {
  const std::string& tokenizer_path =
      options.tokenizer_path.empty() ? options.model.model_dir : options.tokenizer_path;
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tokenizer =
      tokenizer::Tokenizer::Load(tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<std::unique_ptr<model::Model>> model = model::Model::Load(options.model);
  if (!model.ok()) return model.status();
  return CreateEngine(options, *std::move(model), *std::move(tokenizer));
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const EngineOptions& options, std::unique_ptr<model::Model> model,
    std::unique_ptr<tokenizer::Tokenizer> tokenizer) {
  absl::StatusOr<std::unique_ptr<BatchingEngine>> engine =
      BatchingEngine::Create(std::move(model), std::move(tokenizer), options.scheduler);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(*std::move(engine));
}

}  // namespace strata::engine
