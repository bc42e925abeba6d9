#include "worker/engine/fcfs_scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/engine/check.h"

namespace strata::engine {

FcfsScheduler::FcfsScheduler(const SchedulerOptions& options, BlockAllocator& blocks)
    : options_(options), blocks_(blocks) {
  STRATA_CHECK(
      options_.max_running_sequences >= 1 &&
          options_.max_batched_tokens >= options_.max_running_sequences,
      absl::StrCat("scheduler options: max_running_sequences ", options_.max_running_sequences,
                   ", max_batched_tokens ", options_.max_batched_tokens));
}

void FcfsScheduler::Enqueue(Sequence* sequence) {
  // After every sequence of the same or higher priority: stable FCFS per priority.
  auto position = std::find_if(waiting_.begin(), waiting_.end(), [&](const Sequence* queued) {
    return queued->priority() < sequence->priority();
  });
  waiting_.insert(position, sequence);
}

void FcfsScheduler::Remove(Sequence* sequence) {
  if (auto it = std::find(waiting_.begin(), waiting_.end(), sequence); it != waiting_.end()) {
    waiting_.erase(it);
  }
  auto it = std::find(running_.begin(), running_.end(), sequence);
  if (it == running_.end()) return;
  running_.erase(it);
  blocks_.Free(sequence->block_table, sequence->reserved_blocks);
  sequence->block_table.clear();
  sequence->reserved_blocks = 0;
}

int32_t FcfsScheduler::BlocksToReserve(const Sequence& sequence) const {
  return BlockAllocator::BlocksForTokens(
      KvTokensNeeded(sequence.prompt_len(), sequence.max_tokens()), blocks_.block_size());
}

void FcfsScheduler::EnsureBlocks(Sequence& sequence, int32_t context_len) {
  const int32_t needed = BlockAllocator::BlocksForTokens(context_len, blocks_.block_size());
  while (static_cast<int32_t>(sequence.block_table.size()) < needed) {
    STRATA_CHECK(sequence.reserved_blocks > 0,
                 absl::StrCat(sequence.request_id(), " outgrew its KV reservation"));
    sequence.block_table.push_back(blocks_.AllocateReserved());
    --sequence.reserved_blocks;
  }
}

std::vector<ScheduledChunk> FcfsScheduler::Schedule() {
  std::vector<ScheduledChunk> plan;
  int32_t budget = options_.max_batched_tokens;
  // Decodes first: one token each.
  for (Sequence* sequence : running_) {
    if (sequence->num_computed >= sequence->prompt_len() && sequence->num_uncomputed() == 1) {
      plan.push_back({sequence, 1});
      --budget;
    }
  }
  // Then prefills already under way, in admission order.
  for (Sequence* sequence : running_) {
    if (budget <= 0) break;
    if (sequence->num_computed < sequence->prompt_len()) {
      const int32_t chunk = std::min(budget, sequence->num_uncomputed());
      plan.push_back({sequence, chunk});
      budget -= chunk;
    }
  }
  // Then admissions.
  while (budget > 0 && !waiting_.empty() && num_running() < options_.max_running_sequences) {
    Sequence* sequence = waiting_.front();
    const int32_t reserve = BlocksToReserve(*sequence);
    if (!blocks_.Reserve(reserve)) break;
    waiting_.pop_front();
    sequence->reserved_blocks = reserve;
    running_.push_back(sequence);
    const int32_t chunk = std::min(budget, sequence->num_uncomputed());
    plan.push_back({sequence, chunk});
    budget -= chunk;
  }
  for (const ScheduledChunk& chunk : plan) {
    EnsureBlocks(*chunk.sequence, chunk.sequence->num_computed + chunk.num_tokens);
  }
  return plan;
}

}  // namespace strata::engine
