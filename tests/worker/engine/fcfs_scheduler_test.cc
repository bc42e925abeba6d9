#include "worker/engine/fcfs_scheduler.h"

#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fakes/fake_tokenizer.h"

namespace strata::engine {
namespace {

class FcfsSchedulerTest : public ::testing::Test {
 protected:
  Sequence* Make(int32_t prompt_len, int32_t max_tokens, int32_t priority = 0) {
    GenerationRequest request;
    request.sampling.temperature = 0.0f;
    request.priority = priority;
    PreparedPrompt prompt;
    prompt.prompt_ids.assign(prompt_len, 5);
    prompt.max_tokens = max_tokens;
    sequences_.push_back(std::make_unique<Sequence>(
        "seq-" + std::to_string(sequences_.size()), request, std::move(prompt),
        [](GenerationOutput) {}, std::vector<int32_t>{}, tokenizer_, sequences_.size()));
    return sequences_.back().get();
  }

  // What the engine does after a step: the chosen tokens are computed, and a
  // sequence with nothing left to compute samples its next token.
  void Run(const std::vector<ScheduledChunk>& plan) {
    for (const ScheduledChunk& chunk : plan) {
      chunk.sequence->num_computed += chunk.num_tokens;
      if (chunk.sequence->num_uncomputed() == 0) {
        std::vector<float> logits(fakes::FakeTokenizer::kVocabSize, 0.0f);
        GenerationOutput output;
        chunk.sequence->AppendFromLogits(logits, output);
      }
    }
  }

  static int32_t TotalTokens(const std::vector<ScheduledChunk>& plan) {
    int32_t total = 0;
    for (const ScheduledChunk& chunk : plan) total += chunk.num_tokens;
    return total;
  }

  fakes::FakeTokenizer tokenizer_;
  std::vector<std::unique_ptr<Sequence>> sequences_;
};

TEST_F(FcfsSchedulerTest, ChunksALongPromptUnderTheTokenBudget) {
  BlockAllocator blocks(64, 4);
  FcfsScheduler scheduler({.max_running_sequences = 4, .max_batched_tokens = 8}, blocks);
  Sequence* sequence = Make(20, 5);
  scheduler.Enqueue(sequence);
  std::vector<int32_t> chunks;
  for (int step = 0; step < 3; ++step) {
    std::vector<ScheduledChunk> plan = scheduler.Schedule();
    ASSERT_EQ(plan.size(), 1u);
    chunks.push_back(plan[0].num_tokens);
    Run(plan);
  }
  EXPECT_EQ(chunks, (std::vector<int32_t>{8, 8, 4}));
  EXPECT_EQ(sequence->num_output(), 1);
  // Then one decode token per step.
  std::vector<ScheduledChunk> plan = scheduler.Schedule();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].num_tokens, 1);
}

TEST_F(FcfsSchedulerTest, DecodesComeFirstAndPrefillsShareWhatIsLeft) {
  BlockAllocator blocks(64, 4);
  FcfsScheduler scheduler({.max_running_sequences = 4, .max_batched_tokens = 8}, blocks);
  Sequence* first = Make(3, 10);
  scheduler.Enqueue(first);
  Run(scheduler.Schedule());  // first's prefill; it now decodes
  Sequence* second = Make(20, 5);
  scheduler.Enqueue(second);
  std::vector<ScheduledChunk> plan = scheduler.Schedule();
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].sequence, first);
  EXPECT_EQ(plan[0].num_tokens, 1);
  EXPECT_EQ(plan[1].sequence, second);
  EXPECT_EQ(plan[1].num_tokens, 7);
  EXPECT_EQ(TotalTokens(plan), 8);
}

TEST_F(FcfsSchedulerTest, BlockTablesCoverEveryPositionTheStepWrites) {
  BlockAllocator blocks(64, 4);
  FcfsScheduler scheduler({.max_running_sequences = 4, .max_batched_tokens = 6}, blocks);
  Sequence* sequence = Make(9, 8);
  scheduler.Enqueue(sequence);
  for (int step = 0; step < 6; ++step) {
    std::vector<ScheduledChunk> plan = scheduler.Schedule();
    ASSERT_EQ(plan.size(), 1u);
    const int32_t context_len = sequence->num_computed + plan[0].num_tokens;
    EXPECT_EQ(static_cast<int32_t>(sequence->block_table.size()),
              BlockAllocator::BlocksForTokens(context_len, 4));
    Run(plan);
  }
}

TEST_F(FcfsSchedulerTest, AdmitsOnlyWhenEveryBlockItCouldNeedIsFree) {
  BlockAllocator blocks(4, 4);  // 16 positions
  FcfsScheduler scheduler({.max_running_sequences = 4, .max_batched_tokens = 64}, blocks);
  Sequence* first = Make(4, 9);   // 12 positions: 3 blocks
  Sequence* second = Make(4, 5);  // 8 positions: 2 blocks
  scheduler.Enqueue(first);
  scheduler.Enqueue(second);
  std::vector<ScheduledChunk> plan = scheduler.Schedule();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].sequence, first);
  EXPECT_EQ(scheduler.num_running(), 1);
  EXPECT_EQ(scheduler.num_waiting(), 1);
  EXPECT_EQ(blocks.num_unreserved(), 1);
  scheduler.Remove(first);
  EXPECT_EQ(blocks.num_unreserved(), 4);
  plan = scheduler.Schedule();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].sequence, second);
}

TEST_F(FcfsSchedulerTest, HeadOfTheQueueHoldsBackSmallerRequestsBehindIt) {
  BlockAllocator blocks(4, 4);
  FcfsScheduler scheduler({.max_running_sequences = 4, .max_batched_tokens = 64}, blocks);
  scheduler.Enqueue(Make(4, 9));  // 3 blocks: admitted
  Sequence* large = Make(4, 5);   // 2 blocks: does not fit
  Sequence* small = Make(2, 1);   // 1 block: would fit, but waits its turn
  scheduler.Enqueue(large);
  scheduler.Enqueue(small);
  std::vector<ScheduledChunk> plan = scheduler.Schedule();
  EXPECT_EQ(plan.size(), 1u);
  EXPECT_EQ(scheduler.num_waiting(), 2);
}

TEST_F(FcfsSchedulerTest, HigherPriorityIsAdmittedFirst) {
  BlockAllocator blocks(64, 4);
  FcfsScheduler scheduler({.max_running_sequences = 1, .max_batched_tokens = 64}, blocks);
  Sequence* low = Make(3, 2, /*priority=*/0);
  Sequence* high = Make(3, 2, /*priority=*/5);
  Sequence* low_later = Make(3, 2, /*priority=*/0);
  scheduler.Enqueue(low);
  scheduler.Enqueue(high);
  scheduler.Enqueue(low_later);
  std::vector<Sequence*> order;
  for (int i = 0; i < 3; ++i) {
    std::vector<ScheduledChunk> plan = scheduler.Schedule();
    ASSERT_EQ(plan.size(), 1u);
    order.push_back(plan[0].sequence);
    scheduler.Remove(plan[0].sequence);
  }
  EXPECT_EQ(order, (std::vector<Sequence*>{high, low, low_later}));
}

TEST_F(FcfsSchedulerTest, RunsAtMostMaxRunningSequences) {
  BlockAllocator blocks(64, 4);
  FcfsScheduler scheduler({.max_running_sequences = 2, .max_batched_tokens = 64}, blocks);
  for (int i = 0; i < 5; ++i) scheduler.Enqueue(Make(3, 4));
  std::vector<ScheduledChunk> plan = scheduler.Schedule();
  EXPECT_EQ(plan.size(), 2u);
  EXPECT_EQ(scheduler.num_running(), 2);
  EXPECT_EQ(scheduler.num_waiting(), 3);
}

TEST_F(FcfsSchedulerTest, RemovingFreesBlocksAndReservation) {
  BlockAllocator blocks(16, 4);
  FcfsScheduler scheduler({.max_running_sequences = 2, .max_batched_tokens = 64}, blocks);
  Sequence* sequence = Make(10, 20);
  scheduler.Enqueue(sequence);
  Run(scheduler.Schedule());
  EXPECT_LT(blocks.num_unreserved(), 16);
  scheduler.Remove(sequence);
  EXPECT_EQ(blocks.num_unreserved(), 16);
  EXPECT_TRUE(sequence->block_table.empty());
  EXPECT_EQ(scheduler.num_running(), 0);
}

}  // namespace
}  // namespace strata::engine
