// Scheduling policy: which sequences run in the next step and how many of
// their tokens. First come, first served, with higher priority first; no
// preemption.
//
// Each step takes the decode token of every running sequence, then prefill
// chunks (running sequences first, then newly admitted ones) while the
// step's token budget lasts, so a long prompt is prefilled over several steps
// and does not stall the decodes. A waiting sequence is admitted only when a
// running slot is free and the KV cache can reserve every block it could ever
// need (prompt + max_tokens); when the head of the queue does not fit, the
// ones behind it wait too, so large requests are not starved.
//
// The continuous-batching scheduler with preemption replaces this class; the
// engine only uses Enqueue / Remove / Schedule and the counts.
//
// Thread-safety: not thread-safe; used by the engine's step thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "worker/engine/block_allocator.h"
#include "worker/engine/sequence.h"

namespace strata::engine {

struct SchedulerOptions {
  int32_t max_running_sequences = 32;
  // Tokens per step (decode tokens plus prefill chunks).
  // REQUIRES: >= max_running_sequences, so every running sequence can progress.
  int32_t max_batched_tokens = 512;
};

struct ScheduledChunk {
  Sequence* sequence = nullptr;
  int32_t num_tokens = 0;  // the sequence's next uncomputed tokens to run
};

class FcfsScheduler {
 public:
  // `blocks` must outlive the scheduler.
  FcfsScheduler(const SchedulerOptions& options, BlockAllocator& blocks);

  // Queues a sequence to be admitted. REQUIRES: its KV need fits the whole
  // cache (PrepareRequest checks it), so it can always be admitted eventually.
  void Enqueue(Sequence* sequence);

  // Takes a sequence out of the queue or the running set and frees its blocks
  // and reservation. Unknown sequences are ignored.
  void Remove(Sequence* sequence);

  // Picks the next step's work and makes sure each chosen sequence's block
  // table covers the positions this step writes. Empty when there is nothing
  // to run.
  std::vector<ScheduledChunk> Schedule();

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }

 private:
  // Blocks the sequence reserves on admission.
  int32_t BlocksToReserve(const Sequence& sequence) const;
  void EnsureBlocks(Sequence& sequence, int32_t context_len);

  SchedulerOptions options_;
  BlockAllocator& blocks_;
  std::deque<Sequence*> waiting_;   // by priority (higher first), then arrival
  std::vector<Sequence*> running_;  // in admission order
};

}  // namespace strata::engine
