// Batching never changes results, on the bundled stories260k model: greedy
// outputs of 32 concurrent requests (mixed lengths, some sharing prefixes,
// some cancelled) equal the same requests run one at a time, token for token,
// with chunked prefill, under a KV pool small enough to force preemption,
// with and without prefix caching, and with whole-prompt prefills. Also the
// prefix cache on the real model: a second request with the same 256-token
// prefix reuses at least 240 tokens and reaches its first token in fewer steps.
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker/engine/output_collector.h"
#include "worker/engine/engine_factory.h"

namespace strata::engine {
namespace {

struct ReferenceIds {
  std::vector<std::vector<int32_t>> prompts;  // prompt_ids of every reference prompt
  std::vector<int32_t> story;                 // greedy ids from BOS: material for prompts
};

ReferenceIds LoadReferenceIds() {
  std::ifstream file(std::string(STRATA_MODEL_DIR) + "/reference.json");
  std::stringstream text;
  text << file.rdbuf();
  const nlohmann::json json = nlohmann::json::parse(text.str());
  ReferenceIds ids;
  for (const auto& entry : json.at("prompts")) {
    ids.prompts.push_back(entry.at("prompt_ids").get<std::vector<int32_t>>());
    if (ids.prompts.back() == std::vector<int32_t>{1}) {
      ids.story = entry.at("generated_ids").get<std::vector<int32_t>>();
    }
  }
  return ids;
}

struct TestRequest {
  GenerationRequest request;
  int cancel_after = 0;  // outputs before Cancel; 0: never
};

// 32 greedy requests: a quarter share a 101-token prefix, a quarter share a
// reference prompt plus 40 story tokens, the rest are reference prompts with
// 0..59 story tokens; max_tokens 8..127; every seventh is cancelled mid-stream.
std::vector<TestRequest> MixedRequests(const ReferenceIds& ids) {
  std::vector<TestRequest> requests;
  for (int i = 0; i < 32; ++i) {
    std::vector<int32_t> prompt;
    if (i % 4 == 0) {
      prompt.push_back(1);
      prompt.insert(prompt.end(), ids.story.begin(), ids.story.begin() + 100);
      prompt.insert(prompt.end(), ids.story.begin() + 100 + i, ids.story.begin() + 103 + i);
    } else if (i % 4 == 1) {
      prompt = ids.prompts[1];
      prompt.insert(prompt.end(), ids.story.begin() + 10, ids.story.begin() + 50);
      prompt.push_back(ids.story[60 + i]);
    } else {
      prompt = ids.prompts[i % ids.prompts.size()];
      const int extra = (i * 17) % 60;
      prompt.insert(prompt.end(), ids.story.begin() + i, ids.story.begin() + i + extra);
    }
    TestRequest test;
    test.request.request_id = absl::StrCat("mixed-", i);
    test.request.prompt_ids = prompt;
    test.request.sampling.temperature = 0.0f;
    test.request.stopping.max_tokens = 8 + (i * 37) % 120;
    test.cancel_after = i % 7 == 3 ? 2 + i % 5 : 0;
    requests.push_back(std::move(test));
  }
  return requests;
}

std::unique_ptr<Engine> MakeRealEngine(const SchedulerOptions& scheduler, int32_t kv_blocks = 0) {
  EngineOptions options;
  options.model.model_dir = STRATA_MODEL_DIR;
  options.model.num_threads = 1;
  options.model.kv_num_blocks = kv_blocks;
  options.scheduler = scheduler;
  absl::StatusOr<std::unique_ptr<Engine>> engine = CreateEngine(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

struct BatchingCase {
  std::string name;
  SchedulerOptions scheduler;
  int32_t kv_blocks = 0;  // 0: the model's default
  bool expect_preemption = false;
  int min_tokens_per_step = 4;  // generated tokens per step, on average, at least
};

class BatchingReferenceTest : public ::testing::TestWithParam<BatchingCase> {
 protected:
  static void SetUpTestSuite() {
    ids_ = new ReferenceIds(LoadReferenceIds());
    ASSERT_EQ(ids_->story.size(), 256u);
    // One at a time, no prefix cache: the results batching must not change.
    SchedulerOptions plain;
    plain.enable_prefix_caching = false;
    std::unique_ptr<Engine> engine = MakeRealEngine(plain);
    ASSERT_NE(engine, nullptr);
    alone_ = new std::vector<GenerationOutput>();
    alone_ids_ = new std::vector<std::vector<int32_t>>();
    for (const TestRequest& test : MixedRequests(*ids_)) {
      OutputCollector out;
      ASSERT_TRUE(engine->Submit(test.request, out.Callback()).ok());
      ASSERT_TRUE(out.WaitFinished());
      GenerationOutput whole;
      whole.text = out.text();
      whole.finish_reason = out.last().finish_reason;
      alone_->push_back(whole);
      alone_ids_->push_back(out.token_ids());
    }
  }
  static void TearDownTestSuite() {
    delete ids_;
    delete alone_;
    delete alone_ids_;
  }

  static ReferenceIds* ids_;
  static std::vector<GenerationOutput>* alone_;
  static std::vector<std::vector<int32_t>>* alone_ids_;
};

ReferenceIds* BatchingReferenceTest::ids_ = nullptr;
std::vector<GenerationOutput>* BatchingReferenceTest::alone_ = nullptr;
std::vector<std::vector<int32_t>>* BatchingReferenceTest::alone_ids_ = nullptr;

TEST_P(BatchingReferenceTest, ConcurrentGreedyOutputsEqualOneAtATime) {
  const BatchingCase& test_case = GetParam();
  std::unique_ptr<Engine> engine = MakeRealEngine(test_case.scheduler, test_case.kv_blocks);
  ASSERT_NE(engine, nullptr);
  Engine* engine_ptr = engine.get();
  const std::vector<TestRequest> requests = MixedRequests(*ids_);
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (const TestRequest& test : requests) {
    outs.push_back(std::make_unique<OutputCollector>());
    auto collect = outs.back()->Callback();
    int outputs = 0;
    const std::string id = test.request.request_id;
    const int cancel_after = test.cancel_after;
    ASSERT_TRUE(engine
                    ->Submit(test.request,
                             [=](GenerationOutput output) mutable {
                               if (++outputs == cancel_after) engine_ptr->Cancel(id);
                               collect(std::move(output));
                             })
                    .ok());
  }
  int cancelled = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(outs[i]->WaitFinished());
    const GenerationOutput last = outs[i]->last();
    ASSERT_TRUE(last.error.ok()) << last.error;
    const std::vector<int32_t>& expected = (*alone_ids_)[i];
    const std::vector<int32_t> got = outs[i]->token_ids();
    if (last.finish_reason == FinishReason::kCancelled) {
      ++cancelled;
      ASSERT_LE(got.size(), expected.size()) << "request " << i;
      EXPECT_EQ(got, std::vector<int32_t>(expected.begin(), expected.begin() + got.size()))
          << "request " << i;
    } else {
      EXPECT_EQ(got, expected) << "request " << i;
      EXPECT_EQ(outs[i]->text(), (*alone_)[i].text) << "request " << i;
      EXPECT_EQ(last.finish_reason, (*alone_)[i].finish_reason) << "request " << i;
    }
  }
  EXPECT_GE(cancelled, 3);
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.running + stats.waiting, 0);
  // They really ran side by side.
  EXPECT_LT(stats.steps * test_case.min_tokens_per_step, stats.generated_tokens)
      << stats.steps << " steps";
  if (test_case.expect_preemption) {
    EXPECT_GT(stats.preemptions, 0u);
  }
  if (test_case.scheduler.enable_prefix_caching) {
    EXPECT_GT(stats.prefix_cache_hits, 0u);
  } else {
    EXPECT_EQ(stats.prefix_cache_hits, 0u);
  }
}

SchedulerOptions Scheduling(int32_t max_batched_tokens, bool prefix_caching, bool chunked = true) {
  SchedulerOptions options;
  options.max_running_sequences = 32;
  options.max_batched_tokens = max_batched_tokens;
  options.enable_prefix_caching = prefix_caching;
  options.chunked_prefill = chunked;
  return options;
}

INSTANTIATE_TEST_SUITE_P(Schedules, BatchingReferenceTest,
                         ::testing::ValuesIn(std::vector<BatchingCase>{
                             {"ChunkedPrefillWithPrefixCache", Scheduling(48, true)},
                             {"ChunkedPrefillWithoutPrefixCache", Scheduling(48, false)},
                             // 24 blocks of 16: the largest request fits alone, 32 at once cannot.
                             {"SmallPoolForcesPreemption", Scheduling(64, true), 24, true, 2},
                             {"SmallPoolWithoutPrefixCache", Scheduling(64, false), 24, true, 2},
                             {"WholePromptPrefills", Scheduling(512, true, /*chunked=*/false)},
                         }),
                         [](const ::testing::TestParamInfo<BatchingCase>& info) {
                           return info.param.name;
                         });

TEST(PrefixCacheReferenceTest, SecondRequestWithTheSame256TokenPrefixReusesItAndRunsFewerSteps) {
  const ReferenceIds ids = LoadReferenceIds();
  SchedulerOptions scheduler;
  scheduler.max_batched_tokens = 64;
  std::unique_ptr<Engine> engine = MakeRealEngine(scheduler);
  ASSERT_NE(engine, nullptr);
  Engine* engine_ptr = engine.get();
  std::vector<int32_t> prefix = {1};
  prefix.insert(prefix.end(), ids.story.begin(), ids.story.begin() + 255);

  // Steps run from submission to the first token, and the request's usage.
  auto run = [&](std::vector<int32_t> prompt, uint64_t& steps_to_first_token,
                 std::vector<int32_t>& tokens) {
    GenerationRequest request;
    request.prompt_ids = std::move(prompt);
    request.sampling.temperature = 0.0f;
    request.stopping.max_tokens = 16;
    const uint64_t steps_before = engine_ptr->Stats().steps;
    OutputCollector out;
    auto collect = out.Callback();
    bool first = true;
    EXPECT_TRUE(engine_ptr
                    ->Submit(request,
                             [&, collect](GenerationOutput output) mutable {
                               if (first) {
                                 steps_to_first_token = engine_ptr->Stats().steps - steps_before;
                                 first = false;
                               }
                               collect(std::move(output));
                             })
                    .ok());
    EXPECT_TRUE(out.WaitFinished());
    tokens = out.token_ids();
    return out.last().usage;
  };
  std::vector<int32_t> first_prompt = prefix;
  first_prompt.push_back(ids.story[255]);
  std::vector<int32_t> second_prompt = prefix;
  second_prompt.push_back(ids.story[10]);
  uint64_t first_steps = 0, second_steps = 0, exact_steps = 0;
  std::vector<int32_t> first_tokens, second_tokens, exact_tokens;
  const Usage first_usage = run(first_prompt, first_steps, first_tokens);
  const Usage second_usage = run(second_prompt, second_steps, second_tokens);
  const Usage exact_usage = run(prefix, exact_steps, exact_tokens);
  EXPECT_EQ(first_usage.cached_tokens, 0);
  EXPECT_EQ(first_steps, 5u);  // ceil(257 / 64)
  EXPECT_GE(second_usage.cached_tokens, 240);
  EXPECT_EQ(second_usage.cached_tokens, 256);
  EXPECT_EQ(second_steps, 1u);
  EXPECT_EQ(exact_usage.cached_tokens, 240);  // the last prompt token always runs
  EXPECT_EQ(exact_steps, 1u);
  // Served from the cache, the prefix still continues the story as the reference does.
  ASSERT_FALSE(exact_tokens.empty());
  EXPECT_EQ(exact_tokens[0], ids.story[255]);

  // The same requests without the cache give the same tokens.
  SchedulerOptions no_cache = scheduler;
  no_cache.enable_prefix_caching = false;
  engine = MakeRealEngine(no_cache);
  engine_ptr = engine.get();
  uint64_t steps = 0;
  std::vector<int32_t> tokens;
  EXPECT_EQ(run(second_prompt, steps, tokens).cached_tokens, 0);
  EXPECT_EQ(steps, 5u);
  EXPECT_EQ(tokens, second_tokens);
  EXPECT_EQ(run(prefix, steps, tokens).cached_tokens, 0);
  EXPECT_EQ(tokens, exact_tokens);
}

}  // namespace
}  // namespace strata::engine
