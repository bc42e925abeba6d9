// The engine on the bundled stories260k model with the real tokenizer and
// CPU model: greedy generation must reproduce reference.json (outputs of an
// independent implementation) token for token, alone and batched; sampling,
// stop conditions and cancellation are checked on real outputs.
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker/engine/output_collector.h"
#include "worker/engine/engine_factory.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::engine {
namespace {

struct ReferencePrompt {
  std::string prompt;
  int32_t steps = 0;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::string completion_text;

  // run.c samples at most steps - len(prompt_ids) + 1 ids.
  int32_t max_tokens() const { return steps - static_cast<int32_t>(prompt_ids.size()) + 1; }
};

std::vector<ReferencePrompt> LoadReference() {
  std::ifstream file(std::string(STRATA_MODEL_DIR) + "/reference.json");
  std::stringstream text;
  text << file.rdbuf();
  const nlohmann::json json = nlohmann::json::parse(text.str());
  std::vector<ReferencePrompt> prompts;
  for (const auto& entry : json.at("prompts")) {
    ReferencePrompt prompt;
    prompt.prompt = entry.at("prompt").get<std::string>();
    prompt.steps = entry.at("steps").get<int32_t>();
    prompt.prompt_ids = entry.at("prompt_ids").get<std::vector<int32_t>>();
    prompt.generated_ids = entry.at("generated_ids").get<std::vector<int32_t>>();
    prompt.completion_text = entry.at("completion_text").get<std::string>();
    prompts.push_back(std::move(prompt));
  }
  return prompts;
}

class EngineReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    reference_ = LoadReference();
    ASSERT_FALSE(reference_.empty());
    EngineOptions options;
    options.model.model_dir = STRATA_MODEL_DIR;
    options.model.num_threads = 1;
    absl::StatusOr<std::unique_ptr<Engine>> engine = CreateEngine(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  GenerationRequest Greedy(const ReferencePrompt& prompt, bool use_text) const {
    GenerationRequest request;
    if (use_text) {
      request.prompt_text = prompt.prompt;
    } else {
      request.prompt_ids = prompt.prompt_ids;
    }
    request.sampling.temperature = 0.0f;
    request.stopping.max_tokens = prompt.max_tokens();
    return request;
  }

  // Runs `request` alone to the end.
  std::unique_ptr<OutputCollector> Run(const GenerationRequest& request) {
    auto out = std::make_unique<OutputCollector>();
    absl::Status status = engine_->Submit(request, out->Callback());
    EXPECT_TRUE(status.ok()) << status;
    if (status.ok()) {
      EXPECT_TRUE(out->WaitFinished());
    }
    return out;
  }

  FinishReason ExpectedFinish(const ReferencePrompt& prompt) const {
    const std::vector<int32_t>& eos = engine_->model_config().eos_token_ids;
    const bool ended_on_eos =
        std::find(eos.begin(), eos.end(), prompt.generated_ids.back()) != eos.end();
    return ended_on_eos ? FinishReason::kEos : FinishReason::kLength;
  }

  void ExpectMatchesReference(const OutputCollector& out, const ReferencePrompt& prompt) const {
    EXPECT_EQ(out.token_ids(), prompt.generated_ids) << "prompt \"" << prompt.prompt << "\"";
    EXPECT_EQ(out.text(), prompt.completion_text) << "prompt \"" << prompt.prompt << "\"";
    const GenerationOutput last = out.last();
    EXPECT_TRUE(last.error.ok()) << last.error;
    EXPECT_EQ(last.finish_reason, ExpectedFinish(prompt));
    EXPECT_EQ(last.usage.prompt_tokens, static_cast<int32_t>(prompt.prompt_ids.size()));
    EXPECT_EQ(last.usage.completion_tokens, static_cast<int32_t>(prompt.generated_ids.size()));
  }

  std::vector<ReferencePrompt> reference_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineReferenceTest, EosListComesFromGenerationConfig) {
  EXPECT_THAT(engine_->model_config().eos_token_ids, ::testing::UnorderedElementsAre(1, 2));
}

TEST_F(EngineReferenceTest, GreedyFromPromptIdsMatchesTheReference) {
  for (const ReferencePrompt& prompt : reference_) {
    ExpectMatchesReference(*Run(Greedy(prompt, /*use_text=*/false)), prompt);
  }
}

TEST_F(EngineReferenceTest, GreedyFromPromptTextMatchesTheReference) {
  int checked = 0;
  for (const ReferencePrompt& prompt : reference_) {
    if (prompt.prompt.empty()) continue;  // an empty prompt_text is refused; ids cover it
    ExpectMatchesReference(*Run(Greedy(prompt, /*use_text=*/true)), prompt);
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

TEST_F(EngineReferenceTest, AllPromptsAtOnceMatchTheReference) {
  std::vector<std::pair<const ReferencePrompt*, std::unique_ptr<OutputCollector>>> runs;
  for (int round = 0; round < 2; ++round) {
    for (const ReferencePrompt& prompt : reference_) {
      auto out = std::make_unique<OutputCollector>();
      const bool use_text = round == 1 && !prompt.prompt.empty();
      ASSERT_TRUE(engine_->Submit(Greedy(prompt, use_text), out->Callback()).ok());
      runs.emplace_back(&prompt, std::move(out));
    }
  }
  for (auto& [prompt, out] : runs) {
    ASSERT_TRUE(out->WaitFinished());
    ExpectMatchesReference(*out, *prompt);
  }
  EngineStats stats = engine_->Stats();
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
  // They really ran side by side: far fewer steps than tokens.
  EXPECT_LT(stats.steps * 2, stats.generated_tokens);
}

GenerationRequest Sampled(const ReferencePrompt& prompt, std::optional<uint64_t> seed) {
  GenerationRequest request;
  request.prompt_ids = prompt.prompt_ids;
  request.sampling.temperature = 1.0f;
  request.sampling.seed = seed;
  request.stopping.max_tokens = 48;
  request.stopping.ignore_eos = true;
  return request;
}

TEST_F(EngineReferenceTest, SeededSamplingReproducesAlsoWhenBatched) {
  const ReferencePrompt& prompt = reference_[1];
  GenerationRequest request = Sampled(prompt, 1234);
  request.sampling.top_p = 0.9f;
  request.sampling.repetition_penalty = 1.1f;
  const std::vector<int32_t> first = Run(request)->token_ids();
  EXPECT_EQ(Run(request)->token_ids(), first);
  // Again, next to other requests.
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (int i = 0; i < 4; ++i) {
    outs.push_back(std::make_unique<OutputCollector>());
    GenerationRequest other = i == 2 ? request : Sampled(reference_[i % reference_.size()], i);
    ASSERT_TRUE(engine_->Submit(other, outs.back()->Callback()).ok());
  }
  for (auto& out : outs) ASSERT_TRUE(out->WaitFinished());
  EXPECT_EQ(outs[2]->token_ids(), first);
  EXPECT_NE(first, prompt.generated_ids);  // it really sampled
}

TEST_F(EngineReferenceTest, DifferentSeedsGiveDifferentOutputs) {
  const ReferencePrompt& prompt = reference_[1];
  EXPECT_NE(Run(Sampled(prompt, 1))->token_ids(), Run(Sampled(prompt, 2))->token_ids());
}

TEST_F(EngineReferenceTest, TopKOfOneEqualsGreedyAtTemperatureOne) {
  for (const ReferencePrompt& prompt : reference_) {
    GenerationRequest request = Greedy(prompt, /*use_text=*/false);
    request.sampling.temperature = 1.0f;
    request.sampling.top_k = 1;
    request.sampling.seed = 77;
    EXPECT_EQ(Run(request)->token_ids(), prompt.generated_ids);
  }
}

TEST_F(EngineReferenceTest, StopStringAcrossTokenBoundariesIsNeverStreamed) {
  const ReferencePrompt& prompt = reference_[1];  // "Once upon a time"
  const tokenizer::Tokenizer& tokenizer = engine_->tokenizer();
  // Byte offsets in completion_text where each generated token's text ends.
  std::vector<size_t> token_ends;
  const size_t prompt_text_size = tokenizer.Decode(prompt.prompt_ids, true).size();
  std::vector<int32_t> ids = prompt.prompt_ids;
  for (int32_t id : prompt.generated_ids) {
    ids.push_back(id);
    token_ends.push_back(tokenizer.Decode(ids, true).size() - prompt_text_size);
  }
  const std::string stop = "girl named";
  const size_t at = prompt.completion_text.find(stop);
  ASSERT_NE(at, std::string::npos);
  // The stop string spans at least two tokens: a token boundary falls inside it.
  const bool spans_tokens = std::any_of(token_ends.begin(), token_ends.end(), [&](size_t end) {
    return end > at && end < at + stop.size();
  });
  ASSERT_TRUE(spans_tokens);
  // The request ends with the token that completes the stop string.
  const size_t last_token = std::find_if(token_ends.begin(), token_ends.end(),
                                         [&](size_t end) { return end >= at + stop.size(); }) -
                            token_ends.begin();

  GenerationRequest request = Greedy(prompt, /*use_text=*/true);
  request.stopping.stop = {stop, "never appears"};
  std::unique_ptr<OutputCollector> out = Run(request);
  EXPECT_EQ(out->text(), prompt.completion_text.substr(0, at));
  EXPECT_EQ(out->last().finish_reason, FinishReason::kStop);
  EXPECT_EQ(out->token_ids(), std::vector<int32_t>(prompt.generated_ids.begin(),
                                                   prompt.generated_ids.begin() + last_token + 1));
  for (const GenerationOutput& output : out->outputs()) {
    EXPECT_EQ(output.text.find("girl"), std::string::npos) << output.text;
  }
}

TEST_F(EngineReferenceTest, StopTokenIdStopsAtItsFirstOccurrence) {
  const ReferencePrompt& prompt = reference_[2];
  const int32_t stop_id = prompt.generated_ids[6];
  const size_t first =
      std::find(prompt.generated_ids.begin(), prompt.generated_ids.end(), stop_id) -
      prompt.generated_ids.begin();
  GenerationRequest request = Greedy(prompt, /*use_text=*/false);
  request.stopping.stop_token_ids = {stop_id};
  std::unique_ptr<OutputCollector> out = Run(request);
  const std::vector<int32_t> expected(prompt.generated_ids.begin(),
                                      prompt.generated_ids.begin() + first + 1);
  EXPECT_EQ(out->token_ids(), expected);
  EXPECT_EQ(out->last().finish_reason, FinishReason::kStop);
  // Its text is not emitted: the stream is the decode of the tokens before it.
  std::vector<int32_t> before = prompt.prompt_ids;
  before.insert(before.end(), expected.begin(), expected.end() - 1);
  const tokenizer::Tokenizer& tokenizer = engine_->tokenizer();
  EXPECT_EQ(
      out->text(),
      tokenizer.Decode(before, true).substr(tokenizer.Decode(prompt.prompt_ids, true).size()));
}

TEST_F(EngineReferenceTest, MaxTokensEndsWithLength) {
  const ReferencePrompt& prompt = reference_[3];
  GenerationRequest request = Greedy(prompt, /*use_text=*/true);
  request.stopping.max_tokens = 7;
  std::unique_ptr<OutputCollector> out = Run(request);
  EXPECT_EQ(out->token_ids(),
            std::vector<int32_t>(prompt.generated_ids.begin(), prompt.generated_ids.begin() + 7));
  EXPECT_EQ(out->last().finish_reason, FinishReason::kLength);
  EXPECT_EQ(out->last().usage.completion_tokens, 7);
}

TEST_F(EngineReferenceTest, EosEndsTheStoryAndIgnoreEosRunsToTheEndOfTheContext) {
  // From BOS alone the model ends its story with BOS (id 1, in the EOS list)
  // well within the context; the reference's 256 ids are the start of it.
  const ReferencePrompt& prompt = reference_[0];
  ASSERT_EQ(prompt.prompt_ids, std::vector<int32_t>{1});
  GenerationRequest request;
  request.prompt_ids = {1};
  request.sampling.temperature = 0.0f;
  std::unique_ptr<OutputCollector> story = Run(request);
  const std::vector<int32_t> ids = story->token_ids();
  EXPECT_EQ(story->last().finish_reason, FinishReason::kEos);
  ASSERT_GT(ids.size(), prompt.generated_ids.size());
  EXPECT_EQ(ids.back(), 1);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + prompt.generated_ids.size()),
            prompt.generated_ids);
  EXPECT_EQ(story->text(), engine_->tokenizer().Decode(ids, true));
  EXPECT_EQ(story->last().usage.completion_tokens, static_cast<int32_t>(ids.size()));

  request.stopping.ignore_eos = true;
  std::unique_ptr<OutputCollector> whole = Run(request);
  const std::vector<int32_t> all_ids = whole->token_ids();
  const int32_t context = engine_->model_config().max_position_embeddings;
  EXPECT_EQ(whole->last().finish_reason, FinishReason::kLength);
  ASSERT_EQ(static_cast<int32_t>(all_ids.size()), context - 1);
  EXPECT_EQ(std::vector<int32_t>(all_ids.begin(), all_ids.begin() + ids.size()), ids);
}

TEST_F(EngineReferenceTest, CancelMidStreamFreesEverything) {
  const ReferencePrompt& prompt = reference_[0];
  GenerationRequest request = Greedy(prompt, /*use_text=*/false);
  request.request_id = "story";
  Engine* engine = engine_.get();
  OutputCollector out;
  absl::Notification done;
  EngineStats stats_at_end;
  int outputs = 0;
  ASSERT_TRUE(engine_
                  ->Submit(request,
                           [&](GenerationOutput output) {
                             if (++outputs == 5) engine->Cancel("story");
                             const bool last = output.finished;
                             out.Callback()(std::move(output));
                             if (last) {
                               stats_at_end = engine->Stats();
                               done.Notify();
                             }
                           })
                  .ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(out.last().finish_reason, FinishReason::kCancelled);
  const std::vector<int32_t> ids = out.token_ids();
  EXPECT_LT(ids.size(), prompt.generated_ids.size());
  EXPECT_EQ(ids, std::vector<int32_t>(prompt.generated_ids.begin(),
                                      prompt.generated_ids.begin() + ids.size()));
  EXPECT_EQ(stats_at_end.running, 0);
  EXPECT_EQ(stats_at_end.waiting, 0);
  EXPECT_EQ(stats_at_end.kv_blocks_free, stats_at_end.kv_blocks_total);
}

}  // namespace
}  // namespace strata::engine
