// The engine's paged KV cache with a fake model: on-demand blocks and
// preemption under pressure, prefix caching, deadlines, and block accounting
// over many random requests. The fake model checks every batch's block tables
// and computes logits from the tokens it reads back through them, so a wrong
// table, a shared block written, or a reused block overwritten changes the
// output.
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/engine/fake_engine_setup.h"
#include "tests/worker/engine/output_collector.h"

namespace strata::engine {
namespace {

using ::testing::HasSubstr;

TEST(BatchingEngineKvTest, KvPressurePreemptsAndTheOutputStaysTheSame) {
  fakes::FakeModel* model = nullptr;
  fakes::FakeModelOptions options;
  options.kv_block_size = 4;
  options.kv_num_blocks = 8;  // 32 positions; each request grows to 20
  SchedulerOptions scheduler;
  scheduler.admission_watermark = 0.0;
  std::unique_ptr<Engine> engine = MakeEngine(options, scheduler, &model);
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (int i = 0; i < 3; ++i) {
    outs.push_back(std::make_unique<OutputCollector>());
    ASSERT_TRUE(engine->Submit(GreedyRequest({1, 10 + i}, 19), outs.back()->Callback()).ok());
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(outs[i]->WaitFinished());
    EXPECT_EQ(outs[i]->token_ids(), ExpectedGreedy({1, 10 + i}, 19)) << "request " << i;
    EXPECT_EQ(outs[i]->last().finish_reason, FinishReason::kLength);
    // Nothing is streamed twice: one output per token.
    EXPECT_EQ(outs[i]->outputs().size(), 19u);
  }
  EXPECT_GT(model->max_sequences_per_step(), 1);  // blocks were not reserved up front
  const EngineStats stats = engine->Stats();
  EXPECT_GT(stats.preemptions, 0u);
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.kv_blocks_free, 8);
}

TEST(BatchingEngineKvTest, UsedBlocksGrowWithTheContext) {
  fakes::FakeModelOptions options;
  options.kv_block_size = 4;
  options.kv_num_blocks = 64;
  std::unique_ptr<Engine> engine = MakeEngine(options);
  Engine* engine_ptr = engine.get();
  std::vector<int32_t> used_blocks;
  OutputCollector out;
  ASSERT_TRUE(engine
                  ->Submit(GreedyRequest({1, 5, 6}, 12),
                           [&](GenerationOutput output) {
                             const EngineStats stats = engine_ptr->Stats();
                             EXPECT_EQ(stats.kv_blocks_used + stats.kv_blocks_free, 64);
                             used_blocks.push_back(stats.kv_blocks_used);
                             out.Callback()(std::move(output));
                           })
                  .ok());
  ASSERT_TRUE(out.WaitFinished());
  ASSERT_EQ(used_blocks.size(), 12u);
  // After the prefill (3 positions): 1 block; each later step writes one more position.
  // Output k (from 2 on) follows the step that wrote positions 0..k+1.
  EXPECT_EQ(used_blocks[0], 1);
  EXPECT_EQ(used_blocks[1], 1);
  EXPECT_EQ(used_blocks[2], 2);
  EXPECT_EQ(used_blocks[5], 2);
  EXPECT_EQ(used_blocks[6], 3);
  EXPECT_EQ(used_blocks[10], 4);
  EXPECT_EQ(used_blocks.back(), 0);  // the last output comes after the release
}

// Steps run before a request's first token, read from its first output.
struct FirstTokenProbe {
  std::unique_ptr<OutputCollector> out = std::make_unique<OutputCollector>();
  std::atomic<uint64_t> steps_at_first_token{0};
  std::atomic<uint64_t> prompt_tokens_at_first_token{0};
};

void SubmitAndProbe(Engine& engine, const GenerationRequest& request, FirstTokenProbe& probe) {
  Engine* engine_ptr = &engine;
  const EngineStats before = engine.Stats();
  auto collect = probe.out->Callback();
  bool first = true;
  ASSERT_TRUE(
      engine
          .Submit(request,
                  [&probe, engine_ptr, before, collect, first](GenerationOutput output) mutable {
                    if (first) {
                      const EngineStats now = engine_ptr->Stats();
                      probe.steps_at_first_token = now.steps - before.steps;
                      probe.prompt_tokens_at_first_token = now.prompt_tokens - before.prompt_tokens;
                      first = false;
                    }
                    collect(std::move(output));
                  })
          .ok());
  ASSERT_TRUE(probe.out->WaitFinished());
}

class PrefixCacheTest : public ::testing::TestWithParam<bool> {};

TEST_P(PrefixCacheTest, SecondRequestWithTheSame256TokenPrefixSkipsItsPrefill) {
  const bool caching = GetParam();
  fakes::FakeModelOptions options;
  options.max_position_embeddings = 1024;
  options.kv_block_size = 16;
  options.kv_num_blocks = 128;
  SchedulerOptions scheduler;
  scheduler.max_batched_tokens = 64;
  scheduler.enable_prefix_caching = caching;
  std::unique_ptr<Engine> engine = MakeEngine(options, scheduler);
  std::mt19937 random(5);
  std::vector<int32_t> prefix(256);
  for (int32_t& id : prefix) id = 3 + static_cast<int32_t>(random() % 60);
  std::vector<int32_t> first_prompt = prefix;
  first_prompt.push_back(7);
  std::vector<int32_t> second_prompt = prefix;
  second_prompt.push_back(9);

  FirstTokenProbe first, second, exact;
  SubmitAndProbe(*engine, GreedyRequest(first_prompt, 8), first);
  SubmitAndProbe(*engine, GreedyRequest(second_prompt, 8), second);
  SubmitAndProbe(*engine, GreedyRequest(prefix, 8), exact);
  EXPECT_EQ(first.out->token_ids(), ExpectedGreedy(first_prompt, 8));
  EXPECT_EQ(second.out->token_ids(), ExpectedGreedy(second_prompt, 8));
  EXPECT_EQ(exact.out->token_ids(), ExpectedGreedy(prefix, 8));
  EXPECT_EQ(first.out->last().usage.cached_tokens, 0);
  EXPECT_EQ(first.steps_at_first_token, 5u);  // ceil(257 / 64)
  const EngineStats stats = engine->Stats();
  if (caching) {
    EXPECT_EQ(second.out->last().usage.cached_tokens, 256);
    // All 256 prompt tokens are blocks of 16, but the last one must run: 240.
    EXPECT_EQ(exact.out->last().usage.cached_tokens, 240);
    EXPECT_GE(second.out->last().usage.cached_tokens, 240);
    EXPECT_EQ(second.steps_at_first_token, 1u);
    EXPECT_EQ(second.prompt_tokens_at_first_token, 1u);
    EXPECT_LT(second.steps_at_first_token, first.steps_at_first_token);
    EXPECT_EQ(stats.prefix_cache_queries, 257u + 257u + 256u);
    EXPECT_EQ(stats.prefix_cache_hits, 256u + 240u);
    EXPECT_EQ(stats.cached_tokens, 256u + 240u);
    EXPECT_GT(stats.kv_blocks_cached, 0);
  } else {
    EXPECT_EQ(second.out->last().usage.cached_tokens, 0);
    EXPECT_EQ(second.steps_at_first_token, first.steps_at_first_token);
    EXPECT_EQ(stats.prefix_cache_hits, 0u);
    EXPECT_EQ(stats.kv_blocks_cached, 0);
  }
  EXPECT_EQ(stats.kv_blocks_used, 0);
}

INSTANTIATE_TEST_SUITE_P(CachingOnAndOff, PrefixCacheTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("On") : std::string("Off");
                         });

TEST(BatchingEngineKvTest, RequestsSharingAPrefixAtOnceGiveTheirOwnOutputs) {
  fakes::FakeModelOptions options;
  options.kv_block_size = 4;
  options.kv_num_blocks = 64;
  std::unique_ptr<Engine> engine =
      MakeEngine(options, {.max_running_sequences = 8, .max_batched_tokens = 16});
  const std::vector<int32_t> prefix = {1, 9, 8, 7, 6, 5, 4, 3, 9, 8, 7, 6, 5};
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 6; ++i) {
      std::vector<int32_t> prompt(prefix.begin(), prefix.begin() + 6 + i);
      prompt.push_back(20 + i);
      prompts.push_back(prompt);
      outs.push_back(std::make_unique<OutputCollector>());
      ASSERT_TRUE(engine->Submit(GreedyRequest(prompt, 10), outs.back()->Callback()).ok());
    }
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    ASSERT_TRUE(outs[i]->WaitFinished());
    EXPECT_TRUE(outs[i]->last().error.ok()) << outs[i]->last().error;
    EXPECT_EQ(outs[i]->token_ids(), ExpectedGreedy(prompts[i], 10)) << "request " << i;
  }
  EXPECT_GT(engine->Stats().prefix_cache_hits, 0u);
}

TEST(BatchingEngineKvTest, DeadlineEndsTheRequestAndFreesItsBlocks) {
  fakes::FakeModelOptions options;
  options.next_token = [](std::span<const int32_t> history) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return fakes::FakeModel::DefaultNextToken(history, 64);
  };
  std::unique_ptr<Engine> engine = MakeEngine(options);
  Engine* engine_ptr = engine.get();
  GenerationRequest request = GreedyRequest({1, 5}, 200);
  request.deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(60);
  OutputCollector out;
  EngineStats stats_at_end;
  ASSERT_TRUE(engine
                  ->Submit(request,
                           [&](GenerationOutput output) {
                             if (output.finished) stats_at_end = engine_ptr->Stats();
                             out.Callback()(std::move(output));
                           })
                  .ok());
  ASSERT_TRUE(out.WaitFinished());
  const GenerationOutput last = out.last();
  EXPECT_EQ(last.error.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(last.error.message()), HasSubstr("deadline"));
  EXPECT_GT(out.token_ids().size(), 0u);
  EXPECT_LT(out.token_ids().size(), 200u);
  EXPECT_EQ(out.token_ids(), ExpectedGreedy({1, 5}, static_cast<int32_t>(out.token_ids().size())));
  EXPECT_EQ(stats_at_end.kv_blocks_used, 0);
  EXPECT_EQ(stats_at_end.running, 0);

  // One already past its deadline never runs.
  request.deadline = std::chrono::system_clock::now() - std::chrono::seconds(1);
  OutputCollector late;
  ASSERT_TRUE(engine->Submit(request, late.Callback()).ok());
  ASSERT_TRUE(late.WaitFinished());
  EXPECT_EQ(late.last().error.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(late.token_ids().empty());
}

// 1,000 random requests (shared prefixes, random lengths), some cancelled at
// once, some mid-stream, through a pool small enough to preempt: every
// uncancelled request gets exactly its greedy tokens, every cancelled one a
// prefix of them, and at the end no block is used.
TEST(BatchingEngineKvTest, ThousandRandomRequestsWithCancellationsLeaveNoBlockUsed) {
  fakes::FakeModelOptions options;
  options.kv_block_size = 4;
  options.kv_num_blocks = 40;  // 160 positions for up to 8 sequences of up to 70
  std::unique_ptr<Engine> engine =
      MakeEngine(options, {.max_running_sequences = 8, .max_batched_tokens = 24});
  Engine* engine_ptr = engine.get();
  std::mt19937 random(99);
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 5; ++i) {
    std::vector<int32_t> prefix(4 + random() % 16);
    for (int32_t& id : prefix) id = 3 + static_cast<int32_t>(random() % 60);
    prefixes.push_back(prefix);
  }
  struct Run {
    std::vector<int32_t> prompt;
    int32_t max_tokens = 0;
    bool cancelled = false;
    std::unique_ptr<OutputCollector> out = std::make_unique<OutputCollector>();
  };
  constexpr int kRequests = 1000;
  std::vector<Run> runs(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    Run& run = runs[i];
    run.prompt = prefixes[random() % prefixes.size()];
    const int32_t suffix = 1 + static_cast<int32_t>(random() % 20);
    for (int32_t k = 0; k < suffix; ++k) run.prompt.push_back(3 + random() % 60);
    run.max_tokens = 1 + static_cast<int32_t>(random() % 30);
    const std::string id = absl::StrCat("r", i);
    const int kind = static_cast<int>(random() % 10);  // 0: cancel at once, 1: mid-stream
    const int cancel_after = 1 + static_cast<int>(random() % 5);
    run.cancelled = kind <= 1;
    GenerationRequest request = GreedyRequest(run.prompt, run.max_tokens);
    request.request_id = id;
    auto collect = run.out->Callback();
    int outputs = 0;
    ASSERT_TRUE(engine
                    ->Submit(request,
                             [=](GenerationOutput output) mutable {
                               if (kind == 1 && ++outputs == cancel_after) engine_ptr->Cancel(id);
                               collect(std::move(output));
                             })
                    .ok());
    if (kind == 0) engine->Cancel(id);
    if (i % 100 == 99) {  // let the queue drain now and then
      ASSERT_TRUE(runs[i - 50].out->WaitFinished());
    }
  }
  int cancelled = 0;
  for (int i = 0; i < kRequests; ++i) {
    Run& run = runs[i];
    ASSERT_TRUE(run.out->WaitFinished()) << "request " << i;
    const GenerationOutput last = run.out->last();
    ASSERT_TRUE(last.error.ok()) << "request " << i << ": " << last.error;
    const std::vector<int32_t> expected = ExpectedGreedy(run.prompt, run.max_tokens);
    const std::vector<int32_t> got = run.out->token_ids();
    if (last.finish_reason == FinishReason::kCancelled) {
      ++cancelled;
      ASSERT_LE(got.size(), expected.size());
      EXPECT_EQ(got, std::vector<int32_t>(expected.begin(), expected.begin() + got.size()))
          << "request " << i;
    } else {
      EXPECT_EQ(got, expected) << "request " << i;
    }
  }
  EXPECT_GT(cancelled, 100);
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.requests_finished, static_cast<uint64_t>(kRequests));
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
  EXPECT_LE(stats.kv_blocks_cached, stats.kv_blocks_total);
  EXPECT_GT(stats.preemptions, 0u);
  EXPECT_GT(stats.prefix_cache_hits, 0u);
}

}  // namespace
}  // namespace strata::engine
