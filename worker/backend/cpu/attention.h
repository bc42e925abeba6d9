// Paged attention on the CPU: K/V append into the paged F32 cache and causal
// GQA attention that reads each sequence's K/V through its block table.
// Semantics are those of Backend::AppendKv / Backend::PagedAttention.
//
// Layout: values as Backend documents ([num_blocks, block_size,
// num_kv_heads, head_dim]); keys transposed within each block,
// [num_blocks, num_kv_heads, head_dim, block_size], so that the scores of
// consecutive positions are one vector of multiply-adds over head_dim with
// no horizontal sums (a small model's 8-dim heads left most of each vector
// to reductions). Only this file reads or writes the cache.
//
// Thread-safety: one call at a time per PagedAttentionCpu (it owns scratch).
#pragma once

#include <cstdint>
#include <vector>

#include "worker/backend/backend.h"
#include "worker/backend/cpu/thread_pool.h"

namespace strata::backend::cpu {

void AppendKv(const KvCacheLayer& cache, const AttentionParams& params, const float* k,
              const float* v, const int32_t* slots, int64_t n);

// Consecutive cache slots of one sequence (a block, or its used part).
struct SlotRun {
  int64_t offset;  // values: floats from the layer's start, at the kv head's columns
  int64_t
      key_offset;  // keys: floats from the layer's start to the kv head's [head_dim, block_size]
  int32_t length;
};

class PagedAttentionCpu {
 public:
  explicit PagedAttentionCpu(ThreadPool& pool) : pool_(pool), scratch_(pool.num_threads()) {}

  void Run(const float* q, const AttentionBatch& batch, const KvCacheLayer& cache,
           const AttentionParams& params, float* out);

 private:
  struct Scratch {
    std::vector<float> scores;  // [group, score stride]: padded rows
    std::vector<SlotRun> runs;  // [blocks of the longest context]
  };
  ThreadPool& pool_;
  std::vector<Scratch> scratch_;         // per thread
  std::vector<int32_t> token_sequence_;  // [num_tokens] -> index of its sequence
};

}  // namespace strata::backend::cpu
