// The engine's per-step histograms in EngineStats (exported as
// strata_engine_step_duration_seconds, strata_engine_batch_tokens and
// strata_engine_batch_sequences): one observation per step run, sizes that
// add up to what the model was fed, and durations that cover the model's time
// without exceeding the wall clock.
#include <chrono>
#include <memory>
#include <numeric>
#include <span>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics_catalogue.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_model.h"
#include "tests/worker/engine/fake_engine_setup.h"
#include "tests/worker/engine/output_collector.h"
#include "worker/engine/engine.h"

namespace strata::engine {
namespace {

uint64_t Total(const std::vector<uint64_t>& counts) {
  return std::accumulate(counts.begin(), counts.end(), uint64_t{0});
}

// The bucket `value` belongs to, by its bound.
size_t BucketOf(const HistogramCounts& histogram, double value) {
  for (size_t i = 0; i < histogram.upper_bounds.size(); ++i) {
    if (value <= histogram.upper_bounds[i]) return i;
  }
  return histogram.upper_bounds.size();
}

TEST(HistogramCountsTest, AValueOnABoundCountsInThatBucketAndLargerOnesInTheLast) {
  HistogramCounts histogram({1.0, 2.0, 4.0});
  ASSERT_EQ(histogram.bucket_counts.size(), 4u);
  for (double value : {0.5, 1.0, 1.5, 2.0, 4.0, 4.5, 100.0}) histogram.Observe(value);
  EXPECT_EQ(histogram.bucket_counts, (std::vector<uint64_t>{2, 2, 1, 2}));
  EXPECT_EQ(histogram.count, 7u);
  EXPECT_DOUBLE_EQ(histogram.sum, 113.5);
}

TEST(BatchingEngineStepMetricsTest, StatsUseTheCataloguesBucketsBeforeAnyStep) {
  std::unique_ptr<Engine> engine = MakeEngine();
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.step_seconds.upper_bounds, metrics::StepDurationBuckets());
  EXPECT_EQ(stats.step_tokens.upper_bounds, metrics::BatchSizeBuckets());
  EXPECT_EQ(stats.step_sequences.upper_bounds, metrics::BatchSizeBuckets());
  for (const HistogramCounts* histogram :
       {&stats.step_seconds, &stats.step_tokens, &stats.step_sequences}) {
    EXPECT_EQ(histogram->count, 0u);
    EXPECT_EQ(histogram->bucket_counts.size(), histogram->upper_bounds.size() + 1);
    EXPECT_EQ(Total(histogram->bucket_counts), 0u);
  }
}

TEST(BatchingEngineStepMetricsTest, OneRequestCountsAPrefillStepAndOneDecodeStepPerLaterToken) {
  fakes::FakeModel* model = nullptr;
  std::unique_ptr<Engine> engine = MakeEngine({}, {}, &model);
  OutputCollector out;
  // 3 prompt tokens in one step (the first token), then 4 decode steps.
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5, 6}, 5), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.steps, 5u);
  EXPECT_EQ(model->forward_calls(), 5);
  EXPECT_EQ(stats.step_seconds.count, 5u);
  EXPECT_EQ(stats.step_tokens.count, 5u);
  EXPECT_EQ(stats.step_sequences.count, 5u);
  EXPECT_DOUBLE_EQ(stats.step_tokens.sum, 3 + 4);
  EXPECT_DOUBLE_EQ(stats.step_sequences.sum, 5);
  // Tokens: four steps of 1 (le=1) and one of 3 (le=4).
  std::vector<uint64_t> tokens(stats.step_tokens.bucket_counts.size(), 0);
  tokens[BucketOf(stats.step_tokens, 1)] = 4;
  tokens[BucketOf(stats.step_tokens, 3)] = 1;
  EXPECT_EQ(stats.step_tokens.bucket_counts, tokens);
  std::vector<uint64_t> sequences(stats.step_sequences.bucket_counts.size(), 0);
  sequences[BucketOf(stats.step_sequences, 1)] = 5;
  EXPECT_EQ(stats.step_sequences.bucket_counts, sequences);
  EXPECT_EQ(Total(stats.step_seconds.bucket_counts), 5u);
}

TEST(BatchingEngineStepMetricsTest, ConcurrentRequestsAddUpToTheTokensAndSequencesTheModelRan) {
  fakes::FakeModel* model = nullptr;
  std::unique_ptr<Engine> engine = MakeEngine({}, {}, &model);
  // Prompts differ from their first token, so no prefix is shared, and all
  // fit the step budget: each sequence is in one prefill step, then in one
  // decode step per token after the first.
  constexpr int kRequests = 8;
  std::vector<std::unique_ptr<OutputCollector>> outs;
  int64_t expected_tokens = 0;
  int64_t expected_sequences = 0;
  for (int i = 0; i < kRequests; ++i) {
    std::vector<int32_t> prompt = {10 + i};
    for (int j = 0; j < 2 + 3 * i; ++j) prompt.push_back(3 + (i + j) % 40);
    const int32_t max_tokens = 4 + 2 * i;
    expected_tokens += static_cast<int64_t>(prompt.size()) + max_tokens - 1;
    expected_sequences += max_tokens;
    outs.push_back(std::make_unique<OutputCollector>());
    ASSERT_TRUE(
        engine->Submit(GreedyRequest(std::move(prompt), max_tokens), outs.back()->Callback()).ok());
  }
  for (auto& out : outs) ASSERT_TRUE(out->WaitFinished());
  const EngineStats stats = engine->Stats();
  ASSERT_EQ(stats.preemptions, 0u);
  ASSERT_EQ(stats.prefix_cache_hits, 0u);
  EXPECT_EQ(stats.steps, static_cast<uint64_t>(model->forward_calls()));
  EXPECT_EQ(stats.step_tokens.count, stats.steps);
  EXPECT_EQ(stats.step_sequences.count, stats.steps);
  EXPECT_EQ(stats.step_seconds.count, stats.steps);
  EXPECT_DOUBLE_EQ(stats.step_tokens.sum, static_cast<double>(expected_tokens));
  EXPECT_DOUBLE_EQ(stats.step_sequences.sum, static_cast<double>(expected_sequences));
  // Nothing above the largest step the model saw.
  const size_t largest = BucketOf(stats.step_sequences, model->max_sequences_per_step());
  EXPECT_GT(stats.step_sequences.bucket_counts[largest], 0u);
  for (size_t i = largest + 1; i < stats.step_sequences.bucket_counts.size(); ++i) {
    EXPECT_EQ(stats.step_sequences.bucket_counts[i], 0u) << "bucket " << i;
  }
  EXPECT_LE(model->max_sequences_per_step(), kRequests);
}

TEST(BatchingEngineStepMetricsTest, StepDurationsCoverTheModelsTimeAndFitTheWallClock) {
  constexpr auto kModelTime = std::chrono::milliseconds(3);
  fakes::FakeModelOptions options;
  options.next_token = [kModelTime](std::span<const int32_t> history) {
    std::this_thread::sleep_for(kModelTime);  // once per logits row: once per step here
    return fakes::FakeModel::DefaultNextToken(history, 64);
  };
  std::unique_ptr<Engine> engine = MakeEngine(options);
  OutputCollector out;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 7, 8, 9}, 6), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const EngineStats stats = engine->Stats();
  ASSERT_EQ(stats.step_seconds.count, 6u);
  const double model_seconds = std::chrono::duration<double>(kModelTime).count();
  EXPECT_GE(stats.step_seconds.sum, 6 * model_seconds);
  EXPECT_LE(stats.step_seconds.sum, wall);  // one step at a time: they never overlap
  // Every step took at least the model's time: no observation below it.
  for (size_t i = 0; i < stats.step_seconds.upper_bounds.size(); ++i) {
    if (stats.step_seconds.upper_bounds[i] < model_seconds) {
      EXPECT_EQ(stats.step_seconds.bucket_counts[i], 0u)
          << "le=" << stats.step_seconds.upper_bounds[i];
    }
  }
}

TEST(BatchingEngineStepMetricsTest, PipelinedStepsAreEachObservedOnce) {
  fakes::FakeModel* model = nullptr;
  fakes::FakeModelOptions options;
  options.batches_in_flight = 2;
  std::unique_ptr<Engine> engine = MakeEngine(options, {}, &model);
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (int i = 0; i < 4; ++i) {
    outs.push_back(std::make_unique<OutputCollector>());
    ASSERT_TRUE(engine->Submit(GreedyRequest({20 + i, 5, 6}, 6), outs.back()->Callback()).ok());
  }
  for (auto& out : outs) ASSERT_TRUE(out->WaitFinished());
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.steps, static_cast<uint64_t>(model->forward_calls()));
  EXPECT_EQ(stats.step_seconds.count, stats.steps);
  EXPECT_EQ(stats.step_tokens.count, stats.steps);
  EXPECT_EQ(stats.step_sequences.count, stats.steps);
  EXPECT_DOUBLE_EQ(stats.step_tokens.sum, 4 * (3 + 6 - 1));
  EXPECT_DOUBLE_EQ(stats.step_sequences.sum, 4 * 6);
}

TEST(BatchingEngineStepMetricsTest, AFailedStepIsObservedLikeAnyOther) {
  fakes::FakeModel* model = nullptr;
  fakes::FakeModelOptions options;
  options.fail_on_call = 2;
  std::unique_ptr<Engine> engine = MakeEngine(options, {}, &model);
  OutputCollector failed;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 10), failed.Callback()).ok());
  ASSERT_TRUE(failed.WaitFinished());
  ASSERT_FALSE(failed.last().error.ok());
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.steps, 2u);
  EXPECT_EQ(stats.step_seconds.count, 2u);
  EXPECT_EQ(stats.step_tokens.count, 2u);
  EXPECT_DOUBLE_EQ(stats.step_tokens.sum, 2 + 1);
}

}  // namespace
}  // namespace strata::engine
