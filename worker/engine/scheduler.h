// The continuous-batching scheduler: pure logic over sequences and KV blocks,
// no model. Each call to Schedule() picks the next step's batch and says which
// sequences it preempted or expired; the engine runs the batch and reports
// each chunk back with CompleteChunk().
//
// Policy, per step, under max_batched_tokens and max_running_sequences:
//   1. requests whose deadline passed leave (blocks freed at once);
//   2. the decode token of every running sequence;
//   3. prefill chunks of running sequences whose prompt is not computed yet
//      (chunked prefill: a long prompt takes several steps and never stalls
//      the decodes of step 2);
//   4. admissions from the waiting queue, in order of priority (higher first)
//      then arrival, while the budget, a running slot and KV blocks last (for
//      its whole prompt, beside what running prefills still need); when the
//      head does not fit, the requests behind it wait too (no starvation of
//      large requests).
// Running sequences are visited in the same order (priority, then arrival).
// KV blocks are allocated on demand as a sequence's context grows. When a
// running sequence needs a block and none is free, the running sequence of
// lowest priority and latest arrival (the newest) is preempted: its blocks are
// released, it goes back to the front of the waiting queue and is later
// recomputed from its prompt plus the tokens it generated so far (nothing is
// sampled twice, so streamed output never changes). Admission never preempts,
// and a step that had to preempt admits nothing.
//
// Prefix caching: at admission, the longest run of cached full blocks that
// begins the sequence's tokens is reused (reference-counted), up to
// num_tokens - 1 tokens so the last one is always computed to give logits.
// Full blocks are registered in the cache as soon as their K/V are computed.
//
// Pipelining: Schedule() marks the sequences of its batch in flight until
// their CompleteChunk(); in-flight sequences are neither scheduled nor
// preempted, so several batches over disjoint sequences can be outstanding
// (one per pipeline stage).
//
// Thread-safety: not thread-safe; used by the engine's step thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "worker/engine/kv_block_manager.h"
#include "worker/engine/sequence.h"

namespace strata::engine {

struct SchedulerOptions {
  // Most sequences in the running batch (--max-num-seqs).
  int32_t max_running_sequences = 32;
  // Tokens per step, decode tokens plus prefill chunks (--max-num-batched-tokens).
  // REQUIRES: >= max_running_sequences, so every running sequence can decode.
  int32_t max_batched_tokens = 512;
  // Split prompts over several steps to fit the budget. When false, a prompt
  // (or a recomputation) runs whole in one step; one that does not fit the
  // budget left still runs when it is the step's first prefill, so a step
  // may exceed the budget by up to one prompt.
  bool chunked_prefill = true;
  // Reuse KV blocks of cached prompt prefixes (--no-prefix-cache turns it off).
  bool enable_prefix_caching = true;
  // Admission leaves this fraction of all blocks free while other sequences
  // run, so they can grow a while before preemption is needed.
  double admission_watermark = 0.01;
};

// Checks the options: both limits positive and the budget covering a decode
// token for every running sequence. Errors name the field.
absl::Status ValidateSchedulerOptions(const SchedulerOptions& options);

struct ScheduledChunk {
  Sequence* sequence = nullptr;
  int32_t num_tokens = 0;  // the sequence's next uncomputed tokens to run
};

struct StepPlan {
  // Decodes first, then prefill chunks. The block table of each chunk's
  // sequence covers every position the chunk writes.
  std::vector<ScheduledChunk> chunks;
  // Preempted during this call: back in the waiting queue, blocks released.
  std::vector<Sequence*> preempted;
  // Deadline passed: removed from the scheduler, blocks released; the engine
  // finishes them.
  std::vector<Sequence*> expired;

  int32_t num_tokens() const;
};

class Scheduler {
 public:
  // The KV pool has `num_blocks` blocks of `block_size` tokens.
  // REQUIRES: ValidateSchedulerOptions(options).ok().
  Scheduler(const SchedulerOptions& options, int32_t num_blocks, int32_t block_size);

  // Queues a new sequence. RESOURCE_EXHAUSTED when its prompt plus max_tokens
  // can never fit the whole pool (then it is not queued).
  absl::Status Enqueue(Sequence* sequence);

  // Takes a sequence out (finished, cancelled, failed) and releases its
  // blocks. Unknown or removed sequences are ignored. REQUIRES: the sequence
  // is not in a plan still running (its blocks may be reused at once), except
  // when that plan failed.
  void Remove(Sequence* sequence);

  // Picks the next step's work as of `now` (for deadlines), at most
  // `max_sequences` chunks (a pipelined engine splits the running sequences
  // over its micro-batches). The plan's chunks may be empty (nothing
  // runnable) even when sequences wait.
  StepPlan Schedule(std::chrono::system_clock::time_point now,
                    int32_t max_sequences = std::numeric_limits<int32_t>::max());

  // The chunk's tokens are computed: advances the sequence and registers the
  // blocks it filled in the prefix cache. REQUIRES: `chunk` came from the
  // last Schedule() that included its sequence, and the sequence was not
  // removed since.
  void CompleteChunk(const ScheduledChunk& chunk);

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  const KvBlockManager& blocks() const { return blocks_; }
  uint64_t num_preemptions() const { return num_preemptions_; }
  // Tokens looked up in the prefix cache at admissions, and tokens found.
  uint64_t prefix_cache_queries() const { return prefix_cache_queries_; }
  uint64_t prefix_cache_hits() const { return prefix_cache_hits_; }

 private:
  // Higher priority first, then earlier arrival.
  static bool GoesBefore(const Sequence* a, const Sequence* b);

  void ExpireDeadlines(std::chrono::system_clock::time_point now, StepPlan& plan);
  // Schedules `num_tokens` of a running sequence, allocating the blocks they
  // need and preempting to get them. False when the sequence itself was
  // preempted (or nothing could be freed).
  bool ScheduleRunning(Sequence* sequence, int32_t num_tokens, StepPlan& plan, int32_t& budget);
  // Tokens of a prefill with `uncomputed` tokens to run this step, or none
  // (only without chunked prefill: a second prefill that does not fit).
  std::optional<int32_t> PrefillChunk(int32_t uncomputed, int32_t budget,
                                      bool prefill_planned) const;
  // Tries to admit the head of the waiting queue with up to `budget` tokens.
  bool AdmitHead(StepPlan& plan, int32_t& budget, bool prefill_planned);
  // Blocks running sequences still need to compute the tokens they have
  // (the rest of a prompt, or the next decode position).
  int32_t PendingPrefillBlocks() const;
  // The running sequence to preempt next: not in flight, lowest priority,
  // latest arrival. Null when none.
  Sequence* PickVictim() const;
  // Preempts `victim`; when it is in this step's plan, takes it out and
  // returns its tokens to `budget`.
  void Preempt(Sequence* victim, StepPlan& plan, int32_t& budget);
  void ReleaseBlocks(Sequence& sequence);
  void InsertWaiting(Sequence* sequence);
  // Extends sequence.block_hashes to its first `count` full blocks.
  void HashBlocks(Sequence& sequence, int32_t count) const;

  SchedulerOptions options_;
  KvBlockManager blocks_;
  int32_t watermark_blocks_;
  std::deque<Sequence*> waiting_;                 // GoesBefore order
  std::vector<Sequence*> running_;                // GoesBefore order
  absl::flat_hash_set<const Sequence*> planned_;  // in the plan being built
  uint64_t num_preemptions_ = 0;
  uint64_t prefix_cache_queries_ = 0;
  uint64_t prefix_cache_hits_ = 0;
};

}  // namespace strata::engine
