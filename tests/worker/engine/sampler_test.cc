#include "worker/engine/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;

// log of a known distribution: p = [0.5, 0.3, 0.15, 0.05].
std::vector<float> KnownLogits() {
  return {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
}

SamplingParams Greedy() {
  SamplingParams params;
  params.temperature = 0.0f;
  return params;
}

SamplingParams Seeded(uint64_t seed) {
  SamplingParams params;
  params.seed = seed;
  return params;
}

std::vector<int32_t> SampleMany(Sampler& sampler, const std::vector<float>& logits, int count) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < count; ++i) {
    std::vector<float> row = logits;
    tokens.push_back(sampler.Sample(row).token_id);
  }
  return tokens;
}

std::vector<float> UniformLogits(int vocab) { return std::vector<float>(vocab, 0.0f); }

TEST(SamplerTest, GreedyPicksTheFirstIndexOnTies) {
  Sampler sampler(Greedy(), {}, false, 0);
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, 0.0f};
  EXPECT_EQ(sampler.Sample(logits).token_id, 1);
}

TEST(SamplerTest, VeryLowTemperatureIsGreedy) {
  SamplingParams params = Seeded(7);
  params.temperature = 1e-7f;
  Sampler sampler(params, {}, false, 0);
  EXPECT_THAT(SampleMany(sampler, KnownLogits(), 5), ElementsAre(0, 0, 0, 0, 0));
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f, 4.0f};
  sampling::ApplyRepetitionPenalty(logits, {0, 1}, 2.0f);
  EXPECT_THAT(logits, ElementsAre(1.0f, -4.0f, 1.0f, 4.0f));
}

TEST(SamplerTest, RepetitionPenaltyCoversPromptAndOutputTokens) {
  SamplingParams params = Greedy();
  params.repetition_penalty = 10.0f;
  Sampler sampler(params, /*prompt_ids=*/std::vector<int32_t>{0}, false, 0);
  // Token 0 is in the prompt: 5 / 10 = 0.5 loses to 4. Then token 1 is in the
  // output: 4 / 10 = 0.4 loses to 0.5.
  EXPECT_THAT(SampleMany(sampler, {5.0f, 4.0f, 0.1f}, 2), ElementsAre(1, 0));
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesSubtractPerOutputCount) {
  std::vector<float> logits = {1.0f, 1.0f, 1.0f};
  sampling::ApplyPresenceFrequencyPenalties(logits, {{1, 3}, {2, 1}}, 0.5f, 0.25f);
  EXPECT_THAT(logits, ElementsAre(1.0f, 1.0f - 0.5f - 0.75f, 1.0f - 0.5f - 0.25f));
}

TEST(SamplerTest, PresencePenaltyIgnoresPromptTokensAndDoesNotGrow) {
  SamplingParams params = Greedy();
  params.presence_penalty = 1.0f;
  Sampler sampler(params, /*prompt_ids=*/std::vector<int32_t>{0}, false, 0);
  // 0 (prompt only: unpenalised), then 3-1=2 < 2.5 gives 1, then 2.5-1=1.5 < 2
  // gives 0, and 0 stays at 2: presence does not grow with the count.
  EXPECT_THAT(SampleMany(sampler, {3.0f, 2.5f, 0.0f}, 4), ElementsAre(0, 1, 0, 0));
}

TEST(SamplerTest, FrequencyPenaltyGrowsWithTheCount) {
  SamplingParams params = Greedy();
  params.frequency_penalty = 1.0f;
  Sampler sampler(params, {}, false, 0);
  EXPECT_THAT(SampleMany(sampler, {3.0f, 2.5f, 0.0f}, 5), ElementsAre(0, 1, 0, 1, 0));
}

TEST(SamplerTest, TopKKeepsTheKMostLikelyLowerIdFirstOnTies) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 0.0f};
  EXPECT_THAT(sampling::KeptTokens(logits, 3, 1.0f, 0.0f), ElementsAre(1, 3, 2));
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingTheMass) {
  const std::vector<float> logits = KnownLogits();
  EXPECT_THAT(sampling::KeptTokens(logits, 0, 0.4f, 0.0f), ElementsAre(0));
  EXPECT_THAT(sampling::KeptTokens(logits, 0, 0.75f, 0.0f), ElementsAre(0, 1));
  EXPECT_THAT(sampling::KeptTokens(logits, 0, 0.85f, 0.0f), ElementsAre(0, 1, 2));
  EXPECT_THAT(sampling::KeptTokens(logits, 0, 1.0f, 0.0f), ElementsAre(0, 1, 2, 3));
}

TEST(SamplerTest, MinPKeepsTokensAboveAFractionOfTheMostLikely) {
  const std::vector<float> logits = KnownLogits();
  // Thresholds 0.25 * 0.5 = 0.125 and 0.7 * 0.5 = 0.35.
  EXPECT_THAT(sampling::KeptTokens(logits, 0, 1.0f, 0.25f), ElementsAre(0, 1, 2));
  EXPECT_THAT(sampling::KeptTokens(logits, 0, 1.0f, 0.7f), ElementsAre(0));
}

TEST(SamplerTest, DrawsFollowTheFilteredDistribution) {
  SamplingParams params = Seeded(1234);
  params.top_p = 0.75f;  // keeps {0: 0.5, 1: 0.3}, renormalised to 0.625 / 0.375
  Sampler sampler(params, {}, false, 0);
  std::map<int32_t, int> counts;
  const int draws = 4000;
  for (int32_t token : SampleMany(sampler, KnownLogits(), draws)) ++counts[token];
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts[0] / static_cast<double>(draws), 0.625, 0.03);
  EXPECT_NEAR(counts[1] / static_cast<double>(draws), 0.375, 0.03);
}

TEST(SamplerTest, TemperatureFlattensTheDistribution) {
  SamplingParams params = Seeded(99);
  params.temperature = 100.0f;  // nearly uniform over 4 tokens
  Sampler sampler(params, {}, false, 0);
  std::map<int32_t, int> counts;
  for (int32_t token : SampleMany(sampler, KnownLogits(), 4000)) ++counts[token];
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& [token, count] : counts) EXPECT_NEAR(count / 4000.0, 0.25, 0.04) << token;
}

TEST(SamplerTest, SameSeedGivesTheSameTokens) {
  Sampler first(Seeded(42), {}, false, 0);
  Sampler second(Seeded(42), {}, false, 0);
  EXPECT_EQ(SampleMany(first, UniformLogits(64), 32), SampleMany(second, UniformLogits(64), 32));
}

TEST(SamplerTest, DifferentSeedsGiveDifferentTokens) {
  Sampler first(Seeded(1), {}, false, 0);
  Sampler second(Seeded(2), {}, false, 0);
  EXPECT_NE(SampleMany(first, UniformLogits(64), 32), SampleMany(second, UniformLogits(64), 32));
}

TEST(SamplerTest, UnsetSeedIsRandom) {
  Sampler first(SamplingParams{}, {}, false, 0);
  Sampler second(SamplingParams{}, {}, false, 0);
  EXPECT_NE(first.seed(), second.seed());
  EXPECT_NE(SampleMany(first, UniformLogits(64), 32), SampleMany(second, UniformLogits(64), 32));
}

TEST(SamplerTest, TopKOfOneIsGreedy) {
  SamplingParams params = Seeded(5);
  params.top_k = 1;
  Sampler sampler(params, {}, false, 0);
  std::vector<float> logits = {0.5f, 2.0f, 2.0f, 1.9f};
  EXPECT_THAT(SampleMany(sampler, logits, 6), ElementsAre(1, 1, 1, 1, 1, 1));
}

TEST(SamplerTest, LogprobsAreTheLogSoftmaxOfTheFilteredDistribution) {
  SamplingParams params = Seeded(3);
  params.top_p = 0.75f;
  Sampler sampler(params, {}, /*want_logprobs=*/true, /*top_logprobs=*/5);
  std::vector<float> logits = KnownLogits();
  SampleResult result = sampler.Sample(logits);
  ASSERT_TRUE(result.logprobs.has_value());
  const TokenLogprobs& logprobs = *result.logprobs;
  // Filtered tokens have probability 0 and are not listed.
  ASSERT_EQ(logprobs.top.size(), 2u);
  EXPECT_EQ(logprobs.top[0].id, 0);
  EXPECT_THAT(logprobs.top[0].logprob, FloatNear(std::log(0.625f), 1e-5f));
  EXPECT_EQ(logprobs.top[1].id, 1);
  EXPECT_THAT(logprobs.top[1].logprob, FloatNear(std::log(0.375f), 1e-5f));
  EXPECT_EQ(logprobs.chosen.id, result.token_id);
  EXPECT_EQ(logprobs.chosen.logprob, logprobs.top[result.token_id].logprob);
}

TEST(SamplerTest, GreedyLogprobsAreTheLogSoftmaxOfThePenalisedLogits) {
  SamplingParams params = Greedy();
  params.repetition_penalty = 2.0f;
  // Prompt token 0 has logit 2 -> 1, the same as token 1.
  Sampler sampler(params, std::vector<int32_t>{0}, /*want_logprobs=*/true, /*top_logprobs=*/2);
  std::vector<float> logits = {2.0f, 1.0f, 0.0f};
  SampleResult result = sampler.Sample(logits);
  const double log_z = std::log(std::exp(1.0) + std::exp(1.0) + std::exp(0.0));
  EXPECT_EQ(result.token_id, 0);
  ASSERT_TRUE(result.logprobs.has_value());
  EXPECT_THAT(result.logprobs->chosen.logprob, FloatNear(1.0 - log_z, 1e-6f));
  ASSERT_EQ(result.logprobs->top.size(), 2u);
  EXPECT_EQ(result.logprobs->top[0].id, 0);
  EXPECT_EQ(result.logprobs->top[1].id, 1);
  EXPECT_THAT(result.logprobs->top[1].logprob, FloatNear(1.0 - log_z, 1e-6f));
}

TEST(SamplerTest, TemperatureScalesTheReportedLogprobs) {
  SamplingParams params = Seeded(11);
  params.temperature = 2.0f;
  Sampler sampler(params, {}, /*want_logprobs=*/true, /*top_logprobs=*/1);
  std::vector<float> logits = {2.0f, 0.0f};
  SampleResult result = sampler.Sample(logits);
  const double log_z = std::log(std::exp(1.0) + std::exp(0.0));
  ASSERT_EQ(result.logprobs->top.size(), 1u);
  EXPECT_THAT(result.logprobs->top[0].logprob, FloatNear(1.0 - log_z, 1e-6f));
}

TEST(SamplerTest, NoLogprobsUnlessAsked) {
  Sampler sampler(Seeded(1), {}, false, 0);
  std::vector<float> logits = KnownLogits();
  EXPECT_FALSE(sampler.Sample(logits).logprobs.has_value());
}

}  // namespace
}  // namespace strata::engine
