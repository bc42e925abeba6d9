// The engine driven with a fake model and tokenizer: scheduling, stop
// conditions, cancellation, validation and failure handling. KV pressure,
// prefix caching and deadlines are in batching_engine_kv_test.cc.
#include "worker/engine/batching_engine.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_model.h"
#include "tests/fakes/fake_tokenizer.h"
#include "tests/worker/engine/fake_engine_setup.h"
#include "tests/worker/engine/output_collector.h"
#include "worker/engine/engine_factory.h"

namespace strata::engine {
namespace {

using ::testing::HasSubstr;

constexpr int32_t kEos = 2;

// A model rule that writes `script` after the prompt, then repeats its last id.
fakes::FakeModelOptions Scripted(std::vector<int32_t> script, size_t prompt_len) {
  fakes::FakeModelOptions options;
  options.next_token = [script = std::move(script), prompt_len](std::span<const int32_t> history) {
    const size_t generated = history.size() - prompt_len;
    return script[std::min(generated, script.size() - 1)];
  };
  return options;
}

std::vector<int32_t> Encode(const std::string& text) {
  return fakes::FakeTokenizer().Encode(text, false);
}

TEST(BatchingEngineTest, GreedyFollowsTheModel) {
  std::unique_ptr<Engine> engine = MakeEngine();
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5, 6}, 10), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.token_ids(), ExpectedGreedy({1, 5, 6}, 10));
  const GenerationOutput last = out.last();
  EXPECT_EQ(last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(last.usage.prompt_tokens, 3);
  EXPECT_EQ(last.usage.completion_tokens, 10);
  EXPECT_EQ(last.usage.cached_tokens, 0);
  EXPECT_TRUE(last.error.ok());
  EXPECT_EQ(out.text(), fakes::FakeTokenizer().Decode(out.token_ids(), true));
}

TEST(BatchingEngineTest, PromptTextIsEncodedWithBos) {
  fakes::FakeModel* model = nullptr;
  std::unique_ptr<Engine> engine = MakeEngine({}, {}, &model);
  GenerationRequest request;
  request.prompt_text = "the cat";
  request.sampling.temperature = 0.0f;
  request.stopping.max_tokens = 4;
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  std::vector<int32_t> prompt = fakes::FakeTokenizer().Encode("the cat", true);
  ASSERT_EQ(prompt.front(), 1);
  EXPECT_EQ(out.token_ids(), ExpectedGreedy(prompt, 4));
  EXPECT_EQ(out.last().usage.prompt_tokens, static_cast<int32_t>(prompt.size()));
}

TEST(BatchingEngineTest, ConcurrentRequestsGiveTheSameTokensAsOneAtATime) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 12; ++i) {
    GenerationRequest request = GreedyRequest({1, 3 + i, 4 + 2 * i, 7}, 6 + 3 * i);
    if (i % 3 == 1) {  // some sampled, seeded
      request.sampling.temperature = 0.9f;
      request.sampling.top_p = 0.9f;
      request.sampling.seed = 100 + i;
    }
    if (i % 4 == 2) request.sampling.repetition_penalty = 1.3f;
    requests.push_back(request);
  }
  std::vector<std::vector<int32_t>> alone;
  {
    std::unique_ptr<Engine> engine = MakeEngine();
    for (const GenerationRequest& request : requests) {
      OutputCollector out;
      ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
      ASSERT_TRUE(out.WaitFinished());
      alone.push_back(out.token_ids());
    }
  }
  fakes::FakeModel* model = nullptr;
  // Small blocks and a small step budget: sequences interleave in the cache
  // and prefills are chunked.
  fakes::FakeModelOptions options;
  options.kv_block_size = 2;
  std::unique_ptr<Engine> engine =
      MakeEngine(options, {.max_running_sequences = 8, .max_batched_tokens = 10}, &model);
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (const GenerationRequest& request : requests) {
    outs.push_back(std::make_unique<OutputCollector>());
    ASSERT_TRUE(engine->Submit(request, outs.back()->Callback()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(outs[i]->WaitFinished());
    EXPECT_EQ(outs[i]->token_ids(), alone[i]) << "request " << i;
  }
  EXPECT_GT(model->max_sequences_per_step(), 1);
  EXPECT_LE(model->max_sequences_per_step(), 8);
  EXPECT_LE(model->max_tokens_per_step(), 10);
  EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.requests_finished, requests.size());
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
}

TEST(BatchingEngineTest, PipelinedMicroBatchesGiveTheSameTokensAsOneAtATime) {
  // A model that takes two batches in flight (a pp = 2 replica): the engine
  // splits the running sequences over two micro-batches that never share a
  // sequence, and every request's tokens are what it gets alone.
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 10; ++i)
    requests.push_back(GreedyRequest({1, 5 + i, 9, 2 * i + 3}, 5 + 2 * i));
  fakes::FakeModel* model = nullptr;
  fakes::FakeModelOptions options;
  options.kv_block_size = 2;
  options.batches_in_flight = 2;
  std::unique_ptr<Engine> engine =
      MakeEngine(options, {.max_running_sequences = 8, .max_batched_tokens = 16}, &model);
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (const GenerationRequest& request : requests) {
    outs.push_back(std::make_unique<OutputCollector>());
    ASSERT_TRUE(engine->Submit(request, outs.back()->Callback()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(outs[i]->WaitFinished());
    EXPECT_TRUE(outs[i]->last().error.ok()) << outs[i]->last().error;
    EXPECT_EQ(outs[i]->token_ids(),
              ExpectedGreedy(requests[i].prompt_ids, requests[i].stopping.max_tokens.value()))
        << "request " << i;
  }
  EXPECT_EQ(model->max_batches_outstanding(), 2);
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.requests_finished, requests.size());
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
}

TEST(BatchingEngineTest, CancellingPipelinedRequestsMidStreamFreesEverything) {
  // Cancels arrive while the request may be in a micro-batch in flight: it
  // is retired once that batch completes, never while the model still runs it.
  fakes::FakeModel* model = nullptr;
  fakes::FakeModelOptions options;
  options.batches_in_flight = 3;
  // The model stops at a sequence's 6th generated token until the cancels
  // are sent (for at most 10 s), so the cancelled requests are mid-stream
  // however late the test's own thread gets to run on a loaded machine.
  absl::Notification gate_reached;
  absl::Notification cancels_sent;
  const int32_t vocab = options.vocab_size;
  options.next_token = [&gate_reached, &cancels_sent, vocab](std::span<const int32_t> history) {
    if (history.size() >= 3 + 5) {
      if (!gate_reached.HasBeenNotified()) gate_reached.Notify();
      cancels_sent.WaitForNotificationWithTimeout(absl::Seconds(10));
    }
    return fakes::FakeModel::DefaultNextToken(history, vocab);
  };
  std::unique_ptr<Engine> engine = MakeEngine(options, {}, &model);
  std::vector<std::unique_ptr<OutputCollector>> outs;
  for (int i = 0; i < 9; ++i) {
    GenerationRequest request = GreedyRequest({1, 4 + i, 8}, 150);
    request.request_id = absl::StrCat("r", i);
    outs.push_back(std::make_unique<OutputCollector>());
    ASSERT_TRUE(engine->Submit(request, outs.back()->Callback()).ok());
  }
  ASSERT_TRUE(gate_reached.WaitForNotificationWithTimeout(absl::Seconds(10)));
  for (int i = 0; i < 9; i += 2) engine->Cancel(absl::StrCat("r", i));
  cancels_sent.Notify();
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(outs[i]->WaitFinished()) << "request " << i;
    const GenerationOutput last = outs[i]->last();
    EXPECT_TRUE(last.error.ok()) << "request " << i << ": " << last.error;
    if (i % 2 == 1) {
      EXPECT_EQ(outs[i]->token_ids().size(), 150u) << "request " << i;
    } else {
      EXPECT_EQ(last.finish_reason, FinishReason::kCancelled) << "request " << i;
      EXPECT_LT(outs[i]->token_ids().size(), 150u) << "request " << i;
    }
  }
  EXPECT_GT(model->max_batches_outstanding(), 1);
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
}

TEST(BatchingEngineTest, LongPromptIsPrefilledInChunks) {
  std::vector<int32_t> prompt(50);
  for (int i = 0; i < 50; ++i) prompt[i] = 3 + (i * 7) % 60;
  fakes::FakeModel* model = nullptr;
  std::unique_ptr<Engine> engine =
      MakeEngine({}, {.max_running_sequences = 4, .max_batched_tokens = 8}, &model);
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest(prompt, 5), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.token_ids(), ExpectedGreedy(prompt, 5));
  EXPECT_EQ(model->max_tokens_per_step(), 8);
  EXPECT_EQ(model->forward_calls(), 7 + 4);  // ceil(50 / 8) prefill steps, then 4 decodes
  EXPECT_EQ(engine->Stats().prompt_tokens, 50u);
}

TEST(BatchingEngineTest, RequestThatCanNeverFitTheCacheIsRefused) {
  fakes::FakeModelOptions options;
  options.kv_block_size = 4;
  options.kv_num_blocks = 8;
  std::unique_ptr<Engine> engine = MakeEngine(options);
  absl::Status status = engine->Submit(GreedyRequest({1, 5, 6}, 40), [](GenerationOutput) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("max_tokens"));
}

TEST(BatchingEngineTest, UnsetMaxTokensRunsToTheEndOfTheContext) {
  fakes::FakeModelOptions options;
  options.max_position_embeddings = 32;
  std::unique_ptr<Engine> engine = MakeEngine(options);
  GenerationRequest request = GreedyRequest({1, 5, 6, 7}, 0);
  request.stopping.max_tokens.reset();
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.token_ids().size(), 28u);
  EXPECT_EQ(out.last().finish_reason, FinishReason::kLength);
}

TEST(BatchingEngineTest, MaxTokensIsClampedToTheContextLeft) {
  fakes::FakeModelOptions options;
  options.max_position_embeddings = 32;
  std::unique_ptr<Engine> engine = MakeEngine(options);
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5, 6, 7}, 1000), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.token_ids(), ExpectedGreedy({1, 5, 6, 7}, 28));
  EXPECT_EQ(out.last().finish_reason, FinishReason::kLength);
}

TEST(BatchingEngineTest, EosEndsTheRequestWithoutItsText) {
  // "ab", then EOS.
  std::unique_ptr<Engine> engine = MakeEngine(Scripted({3, 4, kEos, 5}, 2));
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 9}, 10), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.token_ids(), (std::vector<int32_t>{3, 4, kEos}));
  EXPECT_EQ(out.text(), "ab");
  EXPECT_EQ(out.last().finish_reason, FinishReason::kEos);
  EXPECT_EQ(out.last().usage.completion_tokens, 3);
}

TEST(BatchingEngineTest, IgnoreEosKeepsGenerating) {
  std::unique_ptr<Engine> engine = MakeEngine(Scripted({3, kEos, 4, 5}, 2));
  GenerationRequest request = GreedyRequest({1, 9}, 4);
  request.stopping.ignore_eos = true;
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.token_ids(), (std::vector<int32_t>{3, kEos, 4, 5}));
  EXPECT_EQ(out.text(), "abc");  // EOS is special: it decodes to nothing
  EXPECT_EQ(out.last().finish_reason, FinishReason::kLength);
}

TEST(BatchingEngineTest, StopTokenIdEndsTheRequestWithoutItsText) {
  std::unique_ptr<Engine> engine = MakeEngine(Scripted({3, 4, 5, 6}, 2));
  GenerationRequest request = GreedyRequest({1, 9}, 10);
  request.stopping.stop_token_ids = {5};
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.token_ids(), (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(out.text(), "ab");
  EXPECT_EQ(out.last().finish_reason, FinishReason::kStop);
  EXPECT_EQ(out.last().usage.completion_tokens, 3);
}

TEST(BatchingEngineTest, StopStringAcrossTokensIsNeverStreamed) {
  const std::vector<int32_t> script = Encode("hello world and more");
  std::unique_ptr<Engine> engine = MakeEngine(Scripted(script, 2));
  GenerationRequest request = GreedyRequest({1, 9}, 30);
  request.stopping.stop = {"lo w"};
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.text(), "hel");
  EXPECT_EQ(out.last().finish_reason, FinishReason::kStop);
  // It stops at the token that completes the stop string, which spans tokens.
  const fakes::FakeTokenizer tokenizer;
  const std::vector<int32_t> ids = out.token_ids();
  ASSERT_GE(ids.size(), 2u);
  EXPECT_NE(tokenizer.Decode(ids, true).find("lo w"), std::string::npos);
  EXPECT_EQ(tokenizer.Decode(std::span(ids).first(ids.size() - 1), true).find("lo w"),
            std::string::npos);
  EXPECT_EQ(tokenizer.IdToToken(ids.back()).find("lo w"), std::string::npos);
}

TEST(BatchingEngineTest, MaxTokensReleasesTextHeldForAStop) {
  // "xa" ends the request by length while "a" could still start "ab".
  std::unique_ptr<Engine> engine = MakeEngine(Scripted(Encode("xa"), 2));
  GenerationRequest request = GreedyRequest({1, 9}, 2);
  request.stopping.stop = {"ab"};
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.text(), "xa");
  EXPECT_EQ(out.last().finish_reason, FinishReason::kLength);
}

TEST(BatchingEngineTest, LogprobsComeWithEveryToken) {
  std::unique_ptr<Engine> engine = MakeEngine();
  GenerationRequest request = GreedyRequest({1, 5}, 5);
  request.top_logprobs = 3;
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  int tokens = 0;
  for (const GenerationOutput& output : out.outputs()) {
    ASSERT_EQ(output.logprobs.size(), output.token_ids.size());
    for (size_t i = 0; i < output.token_ids.size(); ++i, ++tokens) {
      const TokenLogprobs& logprobs = output.logprobs[i];
      EXPECT_EQ(logprobs.chosen.id, output.token_ids[i]);
      ASSERT_EQ(logprobs.top.size(), 3u);
      EXPECT_EQ(logprobs.top[0].id, output.token_ids[i]);  // greedy picks the most likely
      EXPECT_LE(logprobs.chosen.logprob, 0.0f);
      EXPECT_GE(logprobs.top[0].logprob, logprobs.top[1].logprob);
    }
  }
  EXPECT_EQ(tokens, 5);
}

TEST(BatchingEngineTest, CancelMidStreamFreesEverything) {
  std::unique_ptr<Engine> engine = MakeEngine();
  Engine* engine_ptr = engine.get();
  OutputCollector out;
  EngineStats stats_at_last_output;
  absl::Notification finished;
  int outputs = 0;
  GenerationRequest request = GreedyRequest({1, 5}, 200);
  request.request_id = "to-cancel";
  ASSERT_TRUE(engine
                  ->Submit(request,
                           [&](GenerationOutput output) {
                             if (++outputs == 3) engine_ptr->Cancel("to-cancel");
                             const bool last = output.finished;
                             out.Callback()(std::move(output));
                             if (last) {
                               stats_at_last_output = engine_ptr->Stats();
                               finished.Notify();
                             }
                           })
                  .ok());
  ASSERT_TRUE(finished.WaitForNotificationWithTimeout(absl::Seconds(60)));
  const GenerationOutput last = out.last();
  EXPECT_EQ(last.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(out.token_ids().size(), 200u);
  EXPECT_EQ(last.usage.completion_tokens, static_cast<int32_t>(out.token_ids().size()));
  EXPECT_EQ(stats_at_last_output.running, 0);
  EXPECT_EQ(stats_at_last_output.waiting, 0);
  EXPECT_EQ(stats_at_last_output.kv_blocks_free, stats_at_last_output.kv_blocks_total);
  // The id is free again.
  OutputCollector again;
  EXPECT_TRUE(engine->Submit(GreedyRequest({1, 5}, 2), again.Callback()).ok());
  EXPECT_TRUE(again.WaitFinished());
}

TEST(BatchingEngineTest, CancelOfAWaitingRequestFinishesIt) {
  absl::Notification release;
  fakes::FakeModelOptions options;
  options.next_token = [&release](std::span<const int32_t> history) {
    release.WaitForNotification();  // holds the first request in its step
    return fakes::FakeModel::DefaultNextToken(history, 64);
  };
  std::unique_ptr<Engine> engine =
      MakeEngine(options, {.max_running_sequences = 1, .max_batched_tokens = 16});
  OutputCollector first, second;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 3), first.Callback()).ok());
  GenerationRequest waiting = GreedyRequest({1, 6}, 3);
  waiting.request_id = "waiting";
  ASSERT_TRUE(engine->Submit(waiting, second.Callback()).ok());
  engine->Cancel("waiting");
  release.Notify();
  ASSERT_TRUE(second.WaitFinished());
  ASSERT_TRUE(first.WaitFinished());
  EXPECT_EQ(second.last().finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(second.token_ids().empty());
  EXPECT_EQ(first.last().finish_reason, FinishReason::kLength);
  EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.running + stats.waiting, 0);
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
}

TEST(BatchingEngineTest, CancelOfUnknownIdsIsIgnored) {
  std::unique_ptr<Engine> engine = MakeEngine();
  engine->Cancel("nobody");
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 3), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.last().finish_reason, FinishReason::kLength);
}

TEST(BatchingEngineTest, DuplicateRequestIdInFlightIsRefused) {
  absl::Notification release;
  fakes::FakeModelOptions options;
  options.next_token = [&release](std::span<const int32_t> history) {
    release.WaitForNotification();
    return fakes::FakeModel::DefaultNextToken(history, 64);
  };
  std::unique_ptr<Engine> engine = MakeEngine(options);
  GenerationRequest request = GreedyRequest({1, 5}, 2);
  request.request_id = "same";
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(request, out.Callback()).ok());
  absl::Status status = engine->Submit(request, [](GenerationOutput) {});
  release.Notify();
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(status.message()), HasSubstr("same"));
  ASSERT_TRUE(out.WaitFinished());
}

TEST(BatchingEngineTest, EmptyRequestIdGetsOne) {
  std::unique_ptr<Engine> engine = MakeEngine();
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 2), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_FALSE(out.last().request_id.empty());
}

TEST(BatchingEngineTest, ForwardFailureFailsTheRequestAndTheEngineKeepsServing) {
  fakes::FakeModelOptions options;
  options.fail_on_call = 2;
  std::unique_ptr<Engine> engine = MakeEngine(options);
  OutputCollector failed;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 10), failed.Callback()).ok());
  ASSERT_TRUE(failed.WaitFinished());
  EXPECT_FALSE(failed.last().error.ok());
  EXPECT_THAT(std::string(failed.last().error.message()), HasSubstr("injected"));
  EXPECT_EQ(failed.token_ids().size(), 1u);
  OutputCollector next;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 4), next.Callback()).ok());
  ASSERT_TRUE(next.WaitFinished());
  EXPECT_TRUE(next.last().error.ok());
  EXPECT_EQ(next.token_ids(), ExpectedGreedy({1, 5}, 4));
  EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
}

TEST(BatchingEngineTest, ShutdownCancelsRequestsInFlightAndRefusesNewOnes) {
  absl::Notification release;
  fakes::FakeModelOptions options;
  options.next_token = [&release](std::span<const int32_t> history) {
    release.WaitForNotification();
    return fakes::FakeModel::DefaultNextToken(history, 64);
  };
  std::unique_ptr<Engine> engine = MakeEngine(options);
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 100), out.Callback()).ok());
  std::thread releaser([&release] {
    absl::SleepFor(absl::Milliseconds(50));
    release.Notify();
  });
  engine->Shutdown();
  releaser.join();
  ASSERT_TRUE(out.WaitFinished());
  EXPECT_EQ(out.last().finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(engine->Submit(GreedyRequest({1, 5}, 2), [](GenerationOutput) {}).code(),
            absl::StatusCode::kUnavailable);
}

TEST(BatchingEngineTest, StatsCountTokensAndSteps) {
  std::unique_ptr<Engine> engine = MakeEngine();
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5, 6}, 4), out.Callback()).ok());
  ASSERT_TRUE(out.WaitFinished());
  EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.prompt_tokens, 3u);
  EXPECT_EQ(stats.generated_tokens, 4u);
  EXPECT_EQ(stats.steps, 4u);
  EXPECT_EQ(stats.requests_finished, 1u);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.waiting, 0);
}

// Validation: each bad field is refused with its name in the message.
struct BadRequestCase {
  std::string name;
  std::function<void(GenerationRequest&)> corrupt;
  absl::StatusCode code;
  std::string field;
};

class BatchingEngineValidationTest : public ::testing::TestWithParam<BadRequestCase> {};

TEST_P(BatchingEngineValidationTest, RefusesWithTheFieldName) {
  fakes::FakeModelOptions options;
  options.max_position_embeddings = 32;
  std::unique_ptr<Engine> engine = MakeEngine(options);
  GenerationRequest request = GreedyRequest({1, 5}, 4);
  GetParam().corrupt(request);
  bool called = false;
  absl::Status status = engine->Submit(request, [&called](GenerationOutput) { called = true; });
  EXPECT_EQ(status.code(), GetParam().code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(GetParam().field));
  EXPECT_FALSE(called);
  // The engine keeps serving.
  OutputCollector out;
  ASSERT_TRUE(engine->Submit(GreedyRequest({1, 5}, 2), out.Callback()).ok());
  EXPECT_TRUE(out.WaitFinished());
}

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

INSTANTIATE_TEST_SUITE_P(
    BadFields, BatchingEngineValidationTest,
    ::testing::ValuesIn(std::vector<BadRequestCase>{
        {"ZeroMaxTokens", [](auto& r) { r.stopping.max_tokens = 0; }, kInvalid, "max_tokens"},
        {"NegativeMaxTokens", [](auto& r) { r.stopping.max_tokens = -3; }, kInvalid, "max_tokens"},
        {"NanTemperature", [](auto& r) { r.sampling.temperature = kNan; }, kInvalid, "temperature"},
        {"InfiniteTemperature", [](auto& r) { r.sampling.temperature = kInf; }, kInvalid,
         "temperature"},
        {"NegativeTemperature", [](auto& r) { r.sampling.temperature = -0.5f; }, kInvalid,
         "temperature"},
        {"ZeroTopP", [](auto& r) { r.sampling.top_p = 0.0f; }, kInvalid, "top_p"},
        {"TopPAboveOne", [](auto& r) { r.sampling.top_p = 1.5f; }, kInvalid, "top_p"},
        {"NanTopP", [](auto& r) { r.sampling.top_p = kNan; }, kInvalid, "top_p"},
        {"NegativeMinP", [](auto& r) { r.sampling.min_p = -0.1f; }, kInvalid, "min_p"},
        {"MinPAboveOne", [](auto& r) { r.sampling.min_p = 1.1f; }, kInvalid, "min_p"},
        {"NegativeTopK", [](auto& r) { r.sampling.top_k = -1; }, kInvalid, "top_k"},
        {"ZeroRepetitionPenalty", [](auto& r) { r.sampling.repetition_penalty = 0.0f; }, kInvalid,
         "repetition_penalty"},
        {"NanRepetitionPenalty", [](auto& r) { r.sampling.repetition_penalty = kNan; }, kInvalid,
         "repetition_penalty"},
        {"PresencePenaltyOutOfRange", [](auto& r) { r.sampling.presence_penalty = 3.0f; }, kInvalid,
         "presence_penalty"},
        {"FrequencyPenaltyNan", [](auto& r) { r.sampling.frequency_penalty = kNan; }, kInvalid,
         "frequency_penalty"},
        {"NegativeTopLogprobs", [](auto& r) { r.top_logprobs = -1; }, kInvalid, "top_logprobs"},
        {"TooManyTopLogprobs", [](auto& r) { r.top_logprobs = 21; }, kInvalid, "top_logprobs"},
        {"EmptyPrompt",
         [](auto& r) {
           r.prompt_ids.clear();
           r.prompt_text.clear();
         },
         kInvalid, "prompt"},
        {"PromptIdAboveVocab",
         [](auto& r) {
           r.prompt_ids = {1, 64};
         },
         kInvalid, "prompt_ids[1]"},
        {"NegativePromptId", [](auto& r) { r.prompt_ids = {-1}; }, kInvalid, "prompt_ids[0]"},
        {"StopTokenIdOutsideVocab", [](auto& r) { r.stopping.stop_token_ids = {70}; }, kInvalid,
         "stop_token_ids[0]"},
        {"EmptyStopString",
         [](auto& r) {
           r.stopping.stop = {"ok", ""};
         },
         kInvalid, "stop[1]"},
        {"PromptFillsTheContext", [](auto& r) { r.prompt_ids.assign(32, 5); },
         absl::StatusCode::kOutOfRange, "32 tokens"},
    }),
    [](const ::testing::TestParamInfo<BadRequestCase>& info) { return info.param.name; });

TEST(BatchingEngineValidationTest, PromptTooLongGivesBothNumbers) {
  fakes::FakeModelOptions options;
  options.max_position_embeddings = 32;
  std::unique_ptr<Engine> engine = MakeEngine(options);
  GenerationRequest request = GreedyRequest(std::vector<int32_t>(40, 5), 4);
  absl::Status status = engine->Submit(request, [](GenerationOutput) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(status.message()), HasSubstr("40"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("32"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("max_position_embeddings"));
}

TEST(BatchingEngineValidationTest, OptionsAreChecked) {
  EngineOptions options;
  options.scheduler = {.max_running_sequences = 8, .max_batched_tokens = 4};
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      CreateEngine(options, std::make_unique<fakes::FakeModel>(fakes::FakeModelOptions{}),
                   std::make_unique<fakes::FakeTokenizer>());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("max_batched_tokens"));
}

}  // namespace
}  // namespace strata::engine
