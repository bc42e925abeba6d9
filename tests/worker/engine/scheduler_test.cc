// The scheduler as pure logic: sequences, a KV pool and a clock in, plans out.
// The test plays the engine: it "computes" each chunk (CompleteChunk) and,
// when a sequence has nothing left to compute, samples a token from flat
// logits (id 0).
#include "worker/engine/scheduler.h"

#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_tokenizer.h"

namespace strata::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Clock = std::chrono::system_clock;

SchedulerOptions Options(int32_t max_running, int32_t max_tokens) {
  SchedulerOptions options;
  options.max_running_sequences = max_running;
  options.max_batched_tokens = max_tokens;
  options.admission_watermark = 0.0;
  return options;
}

class SchedulerTest : public ::testing::Test {
 protected:
  Sequence* Make(std::vector<int32_t> prompt_ids, int32_t max_tokens, int32_t priority = 0,
                 std::optional<Clock::time_point> deadline = std::nullopt) {
    GenerationRequest request;
    request.sampling.temperature = 0.0f;
    request.priority = priority;
    request.deadline = deadline;
    PreparedPrompt prompt;
    prompt.prompt_ids = std::move(prompt_ids);
    prompt.max_tokens = max_tokens;
    sequences_.push_back(std::make_unique<Sequence>(
        "seq-" + std::to_string(sequences_.size()), request, std::move(prompt),
        [](GenerationOutput) {}, std::vector<int32_t>{}, tokenizer_, sequences_.size()));
    return sequences_.back().get();
  }
  Sequence* Make(int32_t prompt_len, int32_t max_tokens, int32_t priority = 0) {
    return Make(std::vector<int32_t>(prompt_len, 5), max_tokens, priority);
  }

  // What the engine does after a step: the chunks are computed, a sequence
  // with nothing left to compute samples, and finished ones leave.
  void Run(Scheduler& scheduler, const StepPlan& plan) {
    for (const ScheduledChunk& chunk : plan.chunks) {
      scheduler.CompleteChunk(chunk);
      if (chunk.sequence->num_uncomputed() == 0) {
        std::vector<float> logits(fakes::FakeTokenizer::kVocabSize, 0.0f);
        GenerationOutput output;
        chunk.sequence->AppendFromLogits(logits, output);
        if (chunk.sequence->finished()) scheduler.Remove(chunk.sequence);
      }
    }
  }

  static std::vector<int32_t> ChunkSizes(const StepPlan& plan) {
    std::vector<int32_t> sizes;
    for (const ScheduledChunk& chunk : plan.chunks) sizes.push_back(chunk.num_tokens);
    return sizes;
  }
  static std::vector<Sequence*> Scheduled(const StepPlan& plan) {
    std::vector<Sequence*> scheduled;
    for (const ScheduledChunk& chunk : plan.chunks) scheduled.push_back(chunk.sequence);
    return scheduled;
  }

  const Clock::time_point now_ = Clock::now();
  fakes::FakeTokenizer tokenizer_;
  std::vector<std::unique_ptr<Sequence>> sequences_;
};

TEST_F(SchedulerTest, TokenBudgetAndRunningLimitAreNeverExceeded) {
  Scheduler scheduler(Options(/*max_running=*/5, /*max_tokens=*/16), 64, 4);
  std::mt19937 random(7);
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(
        scheduler.Enqueue(Make(1 + random() % 40, 1 + static_cast<int32_t>(random() % 12))).ok());
  }
  int steps = 0;
  while (scheduler.num_running() + scheduler.num_waiting() > 0) {
    ASSERT_LT(++steps, 1000);
    const StepPlan plan = scheduler.Schedule(now_);
    ASSERT_FALSE(plan.chunks.empty());
    EXPECT_LE(plan.num_tokens(), 16);
    EXPECT_LE(static_cast<int32_t>(plan.chunks.size()), 5);
    EXPECT_LE(scheduler.num_running(), 5);
    Run(scheduler, plan);
  }
  for (const auto& sequence : sequences_) EXPECT_TRUE(sequence->finished());
  EXPECT_EQ(scheduler.blocks().num_used(), 0);
}

TEST_F(SchedulerTest, ChunksALongPromptUnderTheTokenBudget) {
  Scheduler scheduler(Options(4, 8), 64, 4);
  Sequence* sequence = Make(20, 5);
  ASSERT_TRUE(scheduler.Enqueue(sequence).ok());
  std::vector<int32_t> chunks;
  for (int step = 0; step < 3; ++step) {
    StepPlan plan = scheduler.Schedule(now_);
    ASSERT_EQ(plan.chunks.size(), 1u);
    chunks.push_back(plan.chunks[0].num_tokens);
    Run(scheduler, plan);
  }
  EXPECT_EQ(chunks, (std::vector<int32_t>{8, 8, 4}));
  EXPECT_EQ(sequence->num_output(), 1);
  // Then one decode token per step.
  EXPECT_THAT(ChunkSizes(scheduler.Schedule(now_)), ElementsAre(1));
}

TEST_F(SchedulerTest, DecodesComeFirstAndPrefillsShareWhatIsLeft) {
  Scheduler scheduler(Options(4, 8), 64, 4);
  Sequence* first = Make(3, 10);
  ASSERT_TRUE(scheduler.Enqueue(first).ok());
  Run(scheduler, scheduler.Schedule(now_));  // first's prefill; it now decodes
  Sequence* second = Make(20, 5);
  ASSERT_TRUE(scheduler.Enqueue(second).ok());
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_THAT(Scheduled(plan), ElementsAre(first, second));
  EXPECT_THAT(ChunkSizes(plan), ElementsAre(1, 7));
}

TEST_F(SchedulerTest, ChunkedPrefillNeverStallsRunningDecodes) {
  Scheduler scheduler(Options(4, 8), 256, 4);
  Sequence* decoding = Make(2, 40);
  ASSERT_TRUE(scheduler.Enqueue(decoding).ok());
  Run(scheduler, scheduler.Schedule(now_));
  Sequence* long_prompt = Make(100, 2);
  ASSERT_TRUE(scheduler.Enqueue(long_prompt).ok());
  int prefill_steps = 0;
  while (long_prompt->num_output() == 0) {
    StepPlan plan = scheduler.Schedule(now_);
    // Every step: the decode first, then as much of the prompt as fits.
    ASSERT_THAT(Scheduled(plan), ElementsAre(decoding, long_prompt));
    EXPECT_EQ(plan.chunks[0].num_tokens, 1);
    EXPECT_EQ(plan.chunks[1].num_tokens, std::min(7, long_prompt->num_uncomputed()));
    const int32_t before = long_prompt->num_computed;
    Run(scheduler, plan);
    EXPECT_EQ(long_prompt->num_computed, before + plan.chunks[1].num_tokens);
    ++prefill_steps;
  }
  EXPECT_EQ(prefill_steps, 15);  // ceil(100 / 7)
  EXPECT_EQ(decoding->num_output(), 1 + 15);
}

TEST_F(SchedulerTest, WithoutChunkingAPromptRunsWholeAndOnlyOnePerStepOverTheBudget) {
  SchedulerOptions options = Options(4, 8);
  options.chunked_prefill = false;
  Scheduler scheduler(options, 64, 4);
  Sequence* decoding = Make(2, 10);
  ASSERT_TRUE(scheduler.Enqueue(decoding).ok());
  Run(scheduler, scheduler.Schedule(now_));
  Sequence* long_a = Make(std::vector<int32_t>(20, 6), 2);
  Sequence* long_b = Make(std::vector<int32_t>(12, 7), 2);
  ASSERT_TRUE(scheduler.Enqueue(long_a).ok());
  ASSERT_TRUE(scheduler.Enqueue(long_b).ok());
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_THAT(Scheduled(plan), ElementsAre(decoding, long_a));
  EXPECT_THAT(ChunkSizes(plan), ElementsAre(1, 20));
  Run(scheduler, plan);
  plan = scheduler.Schedule(now_);
  EXPECT_THAT(Scheduled(plan), ElementsAre(decoding, long_a, long_b));
  EXPECT_THAT(ChunkSizes(plan), ElementsAre(1, 1, 12));
}

TEST_F(SchedulerTest, BlocksAreAllocatedAsTheContextGrows) {
  Scheduler scheduler(Options(4, 64), 16, 4);
  Sequence* sequence = Make(3, 20);
  ASSERT_TRUE(scheduler.Enqueue(sequence).ok());
  std::vector<size_t> table_sizes;
  for (int step = 0; step < 8; ++step) {
    StepPlan plan = scheduler.Schedule(now_);
    ASSERT_EQ(plan.chunks.size(), 1u);
    // The table covers exactly the positions written so far, this step included.
    EXPECT_EQ(
        static_cast<int32_t>(sequence->block_table.size()),
        KvBlockManager::BlocksForTokens(sequence->num_computed + plan.chunks[0].num_tokens, 4));
    table_sizes.push_back(sequence->block_table.size());
    Run(scheduler, plan);
  }
  EXPECT_EQ(table_sizes, (std::vector<size_t>{1, 1, 2, 2, 2, 2, 3, 3}));
  EXPECT_EQ(scheduler.blocks().num_used(), 3);  // not the 6 its max_tokens could need
}

TEST_F(SchedulerTest, PreemptsTheNewestWhenBlocksRunOut) {
  // 6 blocks of 2 positions; each sequence could need 4 of them.
  Scheduler scheduler(Options(4, 64), 6, 2);
  Sequence* oldest = Make(2, 6);
  Sequence* middle = Make(2, 6);
  Sequence* newest = Make(2, 6);
  for (Sequence* sequence : {oldest, middle, newest}) ASSERT_TRUE(scheduler.Enqueue(sequence).ok());
  for (int step = 0; step < 3; ++step) {
    StepPlan plan = scheduler.Schedule(now_);
    EXPECT_TRUE(plan.preempted.empty());
    Run(scheduler, plan);
  }
  // Each holds 2 blocks (positions 0..3) and wants a third for position 4.
  EXPECT_EQ(scheduler.blocks().num_free(), 0);
  const int32_t newest_output = newest->num_output();
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_THAT(plan.preempted, ElementsAre(newest));
  EXPECT_THAT(Scheduled(plan), ElementsAre(oldest, middle));
  EXPECT_EQ(scheduler.num_preemptions(), 1u);
  EXPECT_EQ(scheduler.num_running(), 2);
  EXPECT_EQ(scheduler.num_waiting(), 1);
  EXPECT_TRUE(newest->block_table.empty());
  EXPECT_EQ(newest->num_computed, 0);
  EXPECT_EQ(newest->num_output(), newest_output);  // its generated tokens are kept
  EXPECT_EQ(newest->num_preemptions, 1);
  EXPECT_EQ(newest->state, Sequence::State::kWaiting);
  Run(scheduler, plan);

  // Later it is recomputed from prompt + output in one chunk and continues.
  while (newest->num_computed == 0) Run(scheduler, scheduler.Schedule(now_));
  EXPECT_EQ(newest->num_computed, 2 + newest_output);
  EXPECT_EQ(newest->num_output(), newest_output + 1);
  while (!newest->finished()) Run(scheduler, scheduler.Schedule(now_));
  EXPECT_EQ(newest->num_output(), 6);
  EXPECT_EQ(scheduler.blocks().num_used(), 0);
}

TEST_F(SchedulerTest, LowerPriorityIsPreemptedBeforeNewerRequests) {
  Scheduler scheduler(Options(4, 64), 4, 2);
  Sequence* low = Make(2, 4, /*priority=*/0);
  Sequence* high = Make(2, 4, /*priority=*/1);
  ASSERT_TRUE(scheduler.Enqueue(low).ok());
  Run(scheduler, scheduler.Schedule(now_));
  ASSERT_TRUE(scheduler.Enqueue(high).ok());
  Run(scheduler, scheduler.Schedule(now_));
  Run(scheduler, scheduler.Schedule(now_));  // both hold 2 blocks now
  ASSERT_EQ(scheduler.blocks().num_free(), 0);
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_THAT(plan.preempted, ElementsAre(low));
  EXPECT_THAT(Scheduled(plan), ElementsAre(high));
}

TEST_F(SchedulerTest, RefusesWhatCanNeverFitTheWholePool) {
  Scheduler scheduler(Options(4, 64), 4, 4);  // 16 positions
  Sequence* too_big = Make(10, 8);            // 17 positions
  absl::Status status = scheduler.Enqueue(too_big);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("max_tokens"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("16"));
  EXPECT_EQ(scheduler.num_waiting(), 0);
  EXPECT_TRUE(scheduler.Enqueue(Make(10, 7)).ok());  // exactly 16
}

TEST_F(SchedulerTest, HeadOfTheQueueHoldsBackSmallerRequestsBehindIt) {
  Scheduler scheduler(Options(4, 64), 4, 4);
  Sequence* running = Make(12, 2);  // 3 blocks
  ASSERT_TRUE(scheduler.Enqueue(running).ok());
  Run(scheduler, scheduler.Schedule(now_));
  Sequence* large = Make(8, 2);  // 2 blocks: does not fit
  Sequence* small = Make(2, 1);  // 1 block: would fit, but waits its turn
  ASSERT_TRUE(scheduler.Enqueue(large).ok());
  ASSERT_TRUE(scheduler.Enqueue(small).ok());
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_THAT(Scheduled(plan), ElementsAre(running));
  EXPECT_EQ(scheduler.num_waiting(), 2);
}

TEST_F(SchedulerTest, HigherPriorityIsAdmittedFirst) {
  Scheduler scheduler(Options(1, 64), 64, 4);
  Sequence* low = Make(3, 2, /*priority=*/0);
  Sequence* high = Make(3, 2, /*priority=*/5);
  Sequence* low_later = Make(3, 2, /*priority=*/0);
  for (Sequence* sequence : {low, high, low_later}) ASSERT_TRUE(scheduler.Enqueue(sequence).ok());
  std::vector<Sequence*> order;
  for (int i = 0; i < 3; ++i) {
    StepPlan plan = scheduler.Schedule(now_);
    ASSERT_EQ(plan.chunks.size(), 1u);
    order.push_back(plan.chunks[0].sequence);
    scheduler.Remove(plan.chunks[0].sequence);
  }
  EXPECT_THAT(order, ElementsAre(high, low, low_later));
}

TEST_F(SchedulerTest, RunsAtMostMaxRunningSequences) {
  Scheduler scheduler(Options(2, 64), 64, 4);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(scheduler.Enqueue(Make(3, 4)).ok());
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_EQ(plan.chunks.size(), 2u);
  EXPECT_EQ(scheduler.num_running(), 2);
  EXPECT_EQ(scheduler.num_waiting(), 3);
}

TEST_F(SchedulerTest, SequencesInFlightAreNeitherScheduledAgainNorPreempted) {
  Scheduler scheduler(Options(4, 64), 64, 4);
  Sequence* a = Make(3, 10);
  Sequence* b = Make(3, 10);
  ASSERT_TRUE(scheduler.Enqueue(a).ok());
  ASSERT_TRUE(scheduler.Enqueue(b).ok());
  StepPlan first = scheduler.Schedule(now_);  // a and b, in flight
  EXPECT_THAT(Scheduled(first), ElementsAre(a, b));
  Sequence* c = Make(3, 10);
  ASSERT_TRUE(scheduler.Enqueue(c).ok());
  // A second batch while the first is still running (another pipeline stage):
  // disjoint from it.
  StepPlan second = scheduler.Schedule(now_);
  EXPECT_THAT(Scheduled(second), ElementsAre(c));
  EXPECT_TRUE(scheduler.Schedule(now_).chunks.empty());  // everything in flight
  Run(scheduler, first);
  EXPECT_THAT(Scheduled(scheduler.Schedule(now_)), ElementsAre(a, b));
}

TEST_F(SchedulerTest, PreemptionSkipsSequencesInFlight) {
  Scheduler scheduler(Options(4, 64), 4, 2);
  Sequence* older = Make(2, 4);
  Sequence* newer = Make(2, 4);
  ASSERT_TRUE(scheduler.Enqueue(older).ok());
  ASSERT_TRUE(scheduler.Enqueue(newer).ok());
  Run(scheduler, scheduler.Schedule(now_));
  Run(scheduler, scheduler.Schedule(now_));
  ASSERT_EQ(scheduler.blocks().num_free(), 0);
  // Put `newer` in flight alone: a plan with only its decode.
  scheduler.Remove(older);
  Sequence* third = Make(4, 2);  // takes the 2 blocks older left
  ASSERT_TRUE(scheduler.Enqueue(third).ok());
  StepPlan in_flight = scheduler.Schedule(now_);  // newer's decode + third's prefill
  ASSERT_THAT(Scheduled(in_flight), ElementsAre(newer, third));
  // Only `third` is not in flight once its chunk completes; newer stays in flight.
  scheduler.CompleteChunk(in_flight.chunks[1]);
  std::vector<float> logits(fakes::FakeTokenizer::kVocabSize, 0.0f);
  GenerationOutput output;
  third->AppendFromLogits(logits, output);
  // third needs a block for position 4 and none is free: it can only preempt
  // itself, never the newer sequence in flight.
  ASSERT_EQ(scheduler.blocks().num_free(), 0);
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_THAT(plan.preempted, ElementsAre(third));
  EXPECT_TRUE(plan.chunks.empty());
  EXPECT_EQ(newer->state, Sequence::State::kRunning);
}

TEST_F(SchedulerTest, APromptSharingCachedBlocksReusesThemButComputesItsLastToken) {
  Scheduler scheduler(Options(4, 64), 32, 4);
  const std::vector<int32_t> prompt = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  Sequence* first = Make(prompt, 3);
  ASSERT_TRUE(scheduler.Enqueue(first).ok());
  Run(scheduler, scheduler.Schedule(now_));  // the 10-token prefill: 2 full blocks
  EXPECT_EQ(first->cached_prompt_tokens, 0);

  Sequence* same = Make(prompt, 3);
  ASSERT_TRUE(scheduler.Enqueue(same).ok());
  StepPlan plan = scheduler.Schedule(now_);
  ASSERT_THAT(Scheduled(plan), ElementsAre(first, same));
  EXPECT_EQ(plan.chunks[1].num_tokens, 2);  // 8 of 10 prompt tokens reused
  EXPECT_EQ(same->cached_prompt_tokens, 8);
  EXPECT_EQ(same->block_table[0], first->block_table[0]);
  EXPECT_EQ(same->block_table[1], first->block_table[1]);
  EXPECT_NE(same->block_table[2], first->block_table[2]);
  EXPECT_EQ(scheduler.blocks().ref_count(first->block_table[0]), 2);
  Run(scheduler, plan);

  // A prompt of exactly two blocks reuses only the first: its last token must run.
  Sequence* two_blocks = Make(std::vector<int32_t>(prompt.begin(), prompt.begin() + 8), 2);
  ASSERT_TRUE(scheduler.Enqueue(two_blocks).ok());
  plan = scheduler.Schedule(now_);
  EXPECT_EQ(two_blocks->cached_prompt_tokens, 4);
  EXPECT_EQ(plan.chunks.back().num_tokens, 4);
  EXPECT_EQ(scheduler.prefix_cache_queries(), 10u + 10u + 8u);
  EXPECT_EQ(scheduler.prefix_cache_hits(), 8u + 4u);
  Run(scheduler, plan);

  // A different first block shares nothing.
  std::vector<int32_t> other = prompt;
  other[0] = 20;
  Sequence* different = Make(other, 2);
  ASSERT_TRUE(scheduler.Enqueue(different).ok());
  Run(scheduler, scheduler.Schedule(now_));
  EXPECT_EQ(different->cached_prompt_tokens, 0);

  for (const auto& sequence : sequences_) scheduler.Remove(sequence.get());
  EXPECT_EQ(scheduler.blocks().num_used(), 0);
  EXPECT_GT(scheduler.blocks().num_cached(), 0);
  EXPECT_TRUE(scheduler.blocks().CheckConsistency().ok());
}

TEST_F(SchedulerTest, WithPrefixCachingOffNothingIsReused) {
  SchedulerOptions options = Options(4, 64);
  options.enable_prefix_caching = false;
  Scheduler scheduler(options, 32, 4);
  const std::vector<int32_t> prompt(12, 9);
  Sequence* first = Make(prompt, 3);
  ASSERT_TRUE(scheduler.Enqueue(first).ok());
  Run(scheduler, scheduler.Schedule(now_));
  Sequence* same = Make(prompt, 3);
  ASSERT_TRUE(scheduler.Enqueue(same).ok());
  StepPlan plan = scheduler.Schedule(now_);
  EXPECT_EQ(plan.chunks.back().num_tokens, 12);
  EXPECT_EQ(same->cached_prompt_tokens, 0);
  EXPECT_EQ(scheduler.prefix_cache_queries(), 0u);
  Run(scheduler, plan);
  scheduler.Remove(first);
  scheduler.Remove(same);
  EXPECT_EQ(scheduler.blocks().num_cached(), 0);
}

TEST_F(SchedulerTest, DeadlinesExpireWaitingAndRunningSequencesAndFreeTheirBlocks) {
  Scheduler scheduler(Options(1, 64), 16, 4);
  Sequence* running = Make({3, 4, 5}, 10, 0, now_ + std::chrono::seconds(5));
  Sequence* waiting = Make({3, 4, 5}, 10, 0, now_ + std::chrono::seconds(1));
  Sequence* no_deadline = Make({6, 7}, 2);
  for (Sequence* sequence : {running, waiting, no_deadline}) {
    ASSERT_TRUE(scheduler.Enqueue(sequence).ok());
  }
  Run(scheduler, scheduler.Schedule(now_));
  EXPECT_EQ(scheduler.blocks().num_used(), 1);
  StepPlan plan = scheduler.Schedule(now_ + std::chrono::seconds(2));
  EXPECT_THAT(plan.expired, ElementsAre(waiting));
  EXPECT_THAT(Scheduled(plan), ElementsAre(running));
  Run(scheduler, plan);
  plan = scheduler.Schedule(now_ + std::chrono::seconds(6));
  EXPECT_THAT(plan.expired, ElementsAre(running));
  EXPECT_THAT(Scheduled(plan), ElementsAre(no_deadline));
  EXPECT_EQ(running->state, Sequence::State::kRemoved);
  EXPECT_EQ(scheduler.blocks().num_used(), 1);  // no_deadline's
}

// A simulated KV store: the token each (block, offset) slot holds, written by
// each chunk as the model would. Every sequence must read its own tokens back
// through its block table, whatever sharing, eviction and preemption did.
class SimulatedKv {
 public:
  SimulatedKv(int32_t num_blocks, int32_t block_size)
      : block_size_(block_size), slots_(static_cast<size_t>(num_blocks) * block_size, -1) {}

  // Writes the chunk's tokens; fails when a block it writes is in another
  // table of the same plan, or when a position it reads does not hold its token.
  ::testing::AssertionResult Apply(const StepPlan& plan) {
    std::map<int32_t, int> readers;
    std::set<int32_t> written;
    for (const ScheduledChunk& chunk : plan.chunks) {
      const Sequence& sequence = *chunk.sequence;
      const int32_t end = sequence.num_computed + chunk.num_tokens;
      for (int32_t b = 0; b < KvBlockManager::BlocksForTokens(end, block_size_); ++b) {
        ++readers[sequence.block_table[b]];
      }
      for (int32_t b = sequence.num_computed / block_size_;
           b < KvBlockManager::BlocksForTokens(end, block_size_); ++b) {
        written.insert(sequence.block_table[b]);
      }
    }
    for (int32_t block : written) {
      if (readers[block] > 1) {
        return ::testing::AssertionFailure() << "block " << block << " written while shared";
      }
    }
    for (const ScheduledChunk& chunk : plan.chunks) {
      const Sequence& sequence = *chunk.sequence;
      for (int32_t p = sequence.num_computed; p < sequence.num_computed + chunk.num_tokens; ++p) {
        Slot(sequence, p) = sequence.token_ids()[p];
      }
      for (int32_t p = 0; p < sequence.num_computed + chunk.num_tokens; ++p) {
        if (Slot(sequence, p) != sequence.token_ids()[p]) {
          return ::testing::AssertionFailure()
                 << sequence.request_id() << " reads " << Slot(sequence, p) << " at position " << p
                 << ", expected " << sequence.token_ids()[p];
        }
      }
    }
    return ::testing::AssertionSuccess();
  }

 private:
  int32_t& Slot(const Sequence& sequence, int32_t position) {
    return slots_[static_cast<size_t>(sequence.block_table[position / block_size_]) * block_size_ +
                  position % block_size_];
  }

  int32_t block_size_;
  std::vector<int32_t> slots_;
};

TEST_F(SchedulerTest, ThousandRandomRequestsWithCancellationsLeaveEveryBlockFreeOrCached) {
  constexpr int32_t kBlocks = 48;
  constexpr int32_t kBlockSize = 4;
  SchedulerOptions options = Options(8, 24);
  options.admission_watermark = 0.05;
  Scheduler scheduler(options, kBlocks, kBlockSize);
  SimulatedKv kv(kBlocks, kBlockSize);
  std::mt19937 random(2024);
  // Prompts start with one of a few shared prefixes.
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> prefix(4 + random() % 20);
    for (int32_t& id : prefix) id = 3 + static_cast<int32_t>(random() % 60);
    prefixes.push_back(prefix);
  }
  auto make_random = [&] {
    std::vector<int32_t> prompt = prefixes[random() % prefixes.size()];
    prompt.resize(prompt.size() - random() % 4);
    const int32_t suffix = static_cast<int32_t>(random() % 30);
    for (int32_t i = 0; i < suffix || prompt.empty(); ++i) {
      prompt.push_back(3 + static_cast<int32_t>(random() % 60));
    }
    return Make(prompt, 1 + static_cast<int32_t>(random() % 40));
  };
  int submitted = 0;
  int cancelled = 0;
  std::vector<Sequence*> live;
  for (int step = 0; submitted < 1000 || !live.empty(); ++step) {
    ASSERT_LT(step, 100000);
    while (submitted < 1000 && live.size() < 20 && random() % 3 != 0) {
      Sequence* sequence = make_random();
      ASSERT_TRUE(scheduler.Enqueue(sequence).ok());
      live.push_back(sequence);
      ++submitted;
    }
    if (!live.empty() && random() % 8 == 0) {  // cancel a random one, waiting or running
      const size_t victim = random() % live.size();
      scheduler.Remove(live[victim]);
      live.erase(live.begin() + victim);
      ++cancelled;
    }
    StepPlan plan = scheduler.Schedule(now_);
    ASSERT_TRUE(kv.Apply(plan)) << "step " << step;
    Run(scheduler, plan);
    std::erase_if(live, [](const Sequence* s) { return s->finished(); });
    ASSERT_TRUE(scheduler.blocks().CheckConsistency().ok())
        << scheduler.blocks().CheckConsistency();
  }
  EXPECT_GT(cancelled, 50);
  EXPECT_GT(scheduler.num_preemptions(), 0u);
  EXPECT_GT(scheduler.prefix_cache_hits(), 0u);
  const KvBlockManager& blocks = scheduler.blocks();
  EXPECT_EQ(blocks.num_used(), 0);
  EXPECT_EQ(blocks.num_free(), kBlocks);
  for (int32_t id = 0; id < kBlocks; ++id) EXPECT_EQ(blocks.ref_count(id), 0) << "block " << id;
  EXPECT_EQ(scheduler.num_running() + scheduler.num_waiting(), 0);
}

}  // namespace
}  // namespace strata::engine
