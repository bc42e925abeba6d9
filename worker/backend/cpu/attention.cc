#include "worker/backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "worker/backend/cpu/simd.h"

namespace strata::backend::cpu {

void AppendKv(const KvCacheLayer& cache, const AttentionParams& params, const float* k,
              const float* v, const int32_t* slots, int64_t n) {
  const int64_t row = static_cast<int64_t>(params.num_kv_heads) * params.head_dim;
  const size_t row_bytes = static_cast<size_t>(row) * sizeof(float);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t slot = slots[t];
    std::memcpy(cache.key + slot * row, k + t * row, row_bytes);
    std::memcpy(cache.value + slot * row, v + t * row, row_bytes);
  }
}

void PagedAttentionCpu::Run(const float* q, const AttentionBatch& batch, const KvCacheLayer& cache,
                            const AttentionParams& params, float* out) {
  const int32_t num_heads = params.num_heads;
  const int32_t num_kv_heads = params.num_kv_heads;
  const int32_t group = num_heads / num_kv_heads;
  const int32_t head_dim = params.head_dim;
  const int32_t block_size = params.block_size;
  const int64_t kv_row = static_cast<int64_t>(num_kv_heads) * head_dim;
  const int64_t q_row = static_cast<int64_t>(num_heads) * head_dim;

  token_sequence_.resize(batch.num_tokens);
  for (int32_t s = 0; s < batch.num_sequences; ++s) {
    const AttentionSequence& seq = batch.sequences[s];
    std::fill_n(token_sequence_.begin() + seq.first_token, seq.num_tokens, s);
  }
  const size_t scratch_size = static_cast<size_t>(group) * batch.max_context_len;
  for (auto& scratch : scratch_) {
    if (scratch.size() < scratch_size) scratch.resize(scratch_size);
  }

  // One work item per (token, kv head): the query heads of a group share each
  // K/V row they read. Items are dealt round-robin, so the longer causal rows
  // of a prefill chunk spread over all threads.
  const int64_t num_items = static_cast<int64_t>(batch.num_tokens) * num_kv_heads;
  pool_.Run(static_cast<int>(num_items), [&](int item, int thread) {
    const int32_t t = item / num_kv_heads;
    const int32_t kv_head = item % num_kv_heads;
    const AttentionSequence& seq = batch.sequences[token_sequence_[t]];
    const int32_t* block_table = batch.block_tables + seq.block_table_offset;
    // Causal: the token at this position sees positions [0, position].
    const int32_t length = seq.context_len - seq.num_tokens + (t - seq.first_token) + 1;
    float* scores = scratch_[thread].data();
    const float* q_group = q + t * q_row + static_cast<int64_t>(kv_head) * group * head_dim;
    float* out_group = out + t * q_row + static_cast<int64_t>(kv_head) * group * head_dim;

    for (int32_t j = 0; j < length; ++j) {
      const int64_t slot =
          static_cast<int64_t>(block_table[j / block_size]) * block_size + j % block_size;
      const float* key = cache.key + slot * kv_row + static_cast<int64_t>(kv_head) * head_dim;
      for (int32_t g = 0; g < group; ++g) {
        scores[g * length + j] = simd::Dot(q_group + g * head_dim, key, head_dim) * params.scale;
      }
    }
    for (int32_t g = 0; g < group; ++g) {
      float* row = scores + g * length;
      const float sum = simd::ExpShiftSum(row, simd::Max(row, length), length);
      const float inv_sum = 1.0f / sum;
      for (int32_t j = 0; j < length; ++j) row[j] *= inv_sum;
      std::memset(out_group + g * head_dim, 0, static_cast<size_t>(head_dim) * sizeof(float));
    }
    for (int32_t j = 0; j < length; ++j) {
      const int64_t slot =
          static_cast<int64_t>(block_table[j / block_size]) * block_size + j % block_size;
      const float* value = cache.value + slot * kv_row + static_cast<int64_t>(kv_head) * head_dim;
      for (int32_t g = 0; g < group; ++g) {
        simd::Axpy(scores[g * length + j], value, out_group + g * head_dim, head_dim);
      }
    }
  });
}

}  // namespace strata::backend::cpu
