// Step plans: the leader's batch arrives intact on every rank, and a corrupt
// plan is refused instead of read out of bounds.
#include "worker/distributed/step_plan.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/in_process_communicator.h"

namespace strata::distributed {
namespace {

model::ForwardBatch SampleBatch() {
  model::ForwardBatch batch;
  batch.token_ids = {5, 6, 7, 8, 9};
  batch.positions = {0, 1, 2, 3, 41};
  model::BatchSequence prefill;
  prefill.first_token = 0;
  prefill.num_tokens = 4;
  prefill.context_len = 4;
  prefill.block_table = {3};
  prefill.wants_logits = false;
  model::BatchSequence decode;
  decode.first_token = 4;
  decode.num_tokens = 1;
  decode.context_len = 42;
  decode.block_table = {9, 1, 7};
  batch.sequences = {prefill, decode};
  return batch;
}

void ExpectSameBatch(const model::ForwardBatch& a, const model::ForwardBatch& b) {
  EXPECT_EQ(a.token_ids, b.token_ids);
  EXPECT_EQ(a.positions, b.positions);
  ASSERT_EQ(a.sequences.size(), b.sequences.size());
  for (size_t i = 0; i < a.sequences.size(); ++i) {
    EXPECT_EQ(a.sequences[i].first_token, b.sequences[i].first_token);
    EXPECT_EQ(a.sequences[i].num_tokens, b.sequences[i].num_tokens);
    EXPECT_EQ(a.sequences[i].context_len, b.sequences[i].context_len);
    EXPECT_EQ(a.sequences[i].block_table, b.sequences[i].block_table);
    EXPECT_EQ(a.sequences[i].wants_logits, b.sequences[i].wants_logits);
  }
}

TEST(StepPlanTest, PayloadRoundTripsEveryField) {
  const model::ForwardBatch batch = SampleBatch();
  const std::vector<int32_t> payload = EncodePlanPayload(batch);
  absl::StatusOr<model::ForwardBatch> decoded = DecodePlanPayload(payload, 5, 2);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectSameBatch(batch, *decoded);
}

TEST(StepPlanTest, TruncatedOrOverlongPayloadIsDataLoss) {
  std::vector<int32_t> payload = EncodePlanPayload(SampleBatch());
  std::vector<int32_t> truncated(payload.begin(), payload.end() - 1);
  EXPECT_EQ(DecodePlanPayload(truncated, 5, 2).status().code(), absl::StatusCode::kDataLoss);
  payload.push_back(0);
  EXPECT_EQ(DecodePlanPayload(payload, 5, 2).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodePlanPayload(payload, 50, 2).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodePlanPayload(payload, -1, 2).status().code(), absl::StatusCode::kDataLoss);
}

TEST(StepPlanTest, EveryFollowerReceivesTheLeadersPlansInOrder) {
  constexpr int kWorld = 3;
  parallel::InProcessWorld world(kWorld, absl::Seconds(10));
  parallel::GroupSpec group{"world", {0, 1, 2}};
  std::vector<std::vector<StepPlan>> received(kWorld);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kWorld; ++rank) {
    threads.emplace_back([&, rank] {
      absl::StatusOr<std::unique_ptr<parallel::Communicator>> comm = world.Join(group, rank);
      ASSERT_TRUE(comm.ok());
      if (rank == 0) {
        const model::ForwardBatch batch = SampleBatch();
        ASSERT_TRUE(BroadcastPlan(**comm, PlanKind::kForward, &batch).ok());
        ASSERT_TRUE(BroadcastPlan(**comm, PlanKind::kHeartbeat, nullptr).ok());
        ASSERT_TRUE(BroadcastPlan(**comm, PlanKind::kShutdown, nullptr).ok());
        return;
      }
      while (true) {
        absl::StatusOr<StepPlan> plan = ReceivePlan(**comm);
        ASSERT_TRUE(plan.ok()) << plan.status();
        received[rank].push_back(*plan);
        if (plan->kind == PlanKind::kShutdown) return;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int rank = 1; rank < kWorld; ++rank) {
    ASSERT_EQ(received[rank].size(), 3u);
    EXPECT_EQ(received[rank][0].kind, PlanKind::kForward);
    ExpectSameBatch(SampleBatch(), received[rank][0].batch);
    EXPECT_EQ(received[rank][1].kind, PlanKind::kHeartbeat);
    EXPECT_EQ(received[rank][2].kind, PlanKind::kShutdown);
  }
}

}  // namespace
}  // namespace strata::distributed
