// Test helpers: an engine over the fake model and tokenizer, greedy requests,
// and the tokens the fake model's default rule makes greedy decoding produce.
#pragma once

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fakes/fake_model.h"
#include "tests/fakes/fake_tokenizer.h"
#include "worker/engine/engine_factory.h"

namespace strata::engine {

inline std::unique_ptr<Engine> MakeEngine(fakes::FakeModelOptions model_options = {},
                                          SchedulerOptions scheduler = {},
                                          fakes::FakeModel** model_out = nullptr) {
  auto model = std::make_unique<fakes::FakeModel>(std::move(model_options));
  if (model_out != nullptr) *model_out = model.get();
  EngineOptions options;
  options.scheduler = scheduler;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      CreateEngine(options, std::move(model), std::make_unique<fakes::FakeTokenizer>());
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

inline GenerationRequest GreedyRequest(std::vector<int32_t> prompt_ids, int32_t max_tokens) {
  GenerationRequest request;
  request.prompt_ids = std::move(prompt_ids);
  request.sampling.temperature = 0.0f;
  request.stopping.max_tokens = max_tokens;
  return request;
}

// The tokens greedy decoding gives with the fake model's default rule.
inline std::vector<int32_t> ExpectedGreedy(std::vector<int32_t> history, int32_t count,
                                           int32_t vocab = 64) {
  std::vector<int32_t> generated;
  for (int32_t i = 0; i < count; ++i) {
    generated.push_back(fakes::FakeModel::DefaultNextToken(history, vocab));
    history.push_back(generated.back());
  }
  return generated;
}

}  // namespace strata::engine
