#include "worker/backend/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "worker/backend/cpu/simd.h"

namespace strata::backend::cpu {
namespace {

// A batch of fewer multiply-adds than this runs on the calling thread (as
// kMinParallelWeights does for products).
constexpr int64_t kMinParallelWork = 64 * 1024;

// Lanes [0, n) set, for masked loads of a row's last partial vector.
inline __m256i TailMask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Lane p = the horizontal sum of acc[p].
[[gnu::always_inline]] inline __m256 ReduceEight(const __m256 acc[8]) {
  const __m256 t0 = _mm256_hadd_ps(acc[0], acc[1]);
  const __m256 t1 = _mm256_hadd_ps(acc[2], acc[3]);
  const __m256 t2 = _mm256_hadd_ps(acc[4], acc[5]);
  const __m256 t3 = _mm256_hadd_ps(acc[6], acc[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1);  // lanes: 0 1 2 3 | 0 1 2 3 (halves)
  const __m256 u1 = _mm256_hadd_ps(t2, t3);  // lanes: 4 5 6 7 | 4 5 6 7 (halves)
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// scores[i] = scale · q · key_i for the `count` (1..8) keys at key, key +
// stride, ...; all 8 lanes are stored (lanes past count repeat the last key),
// so `scores` must have room for 8.
[[gnu::always_inline]] inline void ScoreEight(const float* q, const float* key, int64_t stride,
                                              int count, int head_dim, __m256 scale,
                                              float* scores) {
  // Keys past count alias the last one: no branches in the loop below.
  const int64_t step[8] = {0,
                           std::min(1, count - 1) * stride,
                           std::min(2, count - 1) * stride,
                           std::min(3, count - 1) * stride,
                           std::min(4, count - 1) * stride,
                           std::min(5, count - 1) * stride,
                           std::min(6, count - 1) * stride,
                           std::min(7, count - 1) * stride};
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  auto accumulate = [&](__m256 qv, int d, auto load) {
    a0 = _mm256_fmadd_ps(qv, load(key + step[0] + d), a0);
    a1 = _mm256_fmadd_ps(qv, load(key + step[1] + d), a1);
    a2 = _mm256_fmadd_ps(qv, load(key + step[2] + d), a2);
    a3 = _mm256_fmadd_ps(qv, load(key + step[3] + d), a3);
    a4 = _mm256_fmadd_ps(qv, load(key + step[4] + d), a4);
    a5 = _mm256_fmadd_ps(qv, load(key + step[5] + d), a5);
    a6 = _mm256_fmadd_ps(qv, load(key + step[6] + d), a6);
    a7 = _mm256_fmadd_ps(qv, load(key + step[7] + d), a7);
  };
  int d = 0;
  for (; d + 8 <= head_dim; d += 8) {
    accumulate(_mm256_loadu_ps(q + d), d, [](const float* p) { return _mm256_loadu_ps(p); });
  }
  if (d < head_dim) {
    const __m256i mask = TailMask(head_dim - d);
    accumulate(_mm256_maskload_ps(q + d, mask), d,
               [mask](const float* p) { return _mm256_maskload_ps(p, mask); });
  }
  const __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
  _mm256_storeu_ps(scores, _mm256_mul_ps(ReduceEight(acc), scale));
}

// out[0, width) = Σ_j weights[j] · value_j[0, width) (width ≤ 8) over the
// positions of `runs`, value_j being `stride` floats apart within a run and
// starting at base + run.offset; four independent sums hide the FMA latency.
inline void WeightedSum(const float* base, const SlotRun* runs, int num_runs, int64_t stride,
                        const float* weights, int width, float* out) {
  const __m256i mask = TailMask(width);
  __m256 acc[4];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  for (int r = 0; r < num_runs; ++r) {
    const float* row = base + runs[r].offset;
    const int32_t length = runs[r].length;
    int32_t i = 0;
    if (width == 8) {
      for (; i + 4 <= length; i += 4, row += 4 * stride, weights += 4) {
        for (int u = 0; u < 4; ++u) {
          acc[u] = _mm256_fmadd_ps(_mm256_broadcast_ss(weights + u),
                                   _mm256_loadu_ps(row + u * stride), acc[u]);
        }
      }
      for (; i < length; ++i, row += stride, ++weights) {
        acc[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(weights), _mm256_loadu_ps(row), acc[0]);
      }
    } else {
      for (; i < length; ++i, row += stride, ++weights) {
        acc[i & 3] = _mm256_fmadd_ps(_mm256_broadcast_ss(weights), _mm256_maskload_ps(row, mask),
                                     acc[i & 3]);
      }
    }
  }
  const __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  _mm256_maskstore_ps(out, mask, sum);
}

}  // namespace

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
  // Score rows are padded to whole vectors: ScoreEight stores 8 lanes.
  const int64_t score_stride = (batch.max_context_len + 7) / 8 * 8 + 8;
  const int64_t max_runs = (batch.max_context_len + block_size - 1) / block_size;
  for (Scratch& scratch : scratch_) {
    if (scratch.scores.size() < static_cast<size_t>(group * score_stride)) {
      scratch.scores.resize(group * score_stride);
    }
    if (scratch.runs.size() < static_cast<size_t>(max_runs)) scratch.runs.resize(max_runs);
  }
  const __m256 scale = _mm256_set1_ps(params.scale);

  // One work item per (token, kv head): the query heads of a group share each
  // K/V row they read. Items are dealt round-robin, so the longer causal rows
  // of a prefill chunk spread over all threads.
  const int64_t num_items = static_cast<int64_t>(batch.num_tokens) * num_kv_heads;
  auto run_item = [&](int item, int thread) {
    const int32_t t = item / num_kv_heads;
    const int32_t kv_head = item % num_kv_heads;
    const AttentionSequence& seq = batch.sequences[token_sequence_[t]];
    const int32_t* block_table = batch.block_tables + seq.block_table_offset;
    // Causal: the token at this position sees positions [0, position].
    const int32_t length = seq.context_len - seq.num_tokens + (t - seq.first_token) + 1;
    Scratch& scratch = scratch_[thread];
    const int64_t head_offset = static_cast<int64_t>(kv_head) * head_dim;
    const float* q_group = q + t * q_row + head_offset * group;
    float* out_group = out + t * q_row + head_offset * group;

    // The positions as runs of consecutive slots, one per block: no
    // per-position table lookups below.
    int num_runs = 0;
    for (int32_t start = 0; start < length; start += block_size) {
      scratch.runs[num_runs++] = {
          static_cast<int64_t>(block_table[start / block_size]) * block_size * kv_row + head_offset,
          std::min(block_size, length - start)};
    }

    for (int32_t g = 0; g < group; ++g) {
      const float* q_head = q_group + g * head_dim;
      float* row = scratch.scores.data() + g * score_stride;
      // Score up to 8 keys at a time within each run; runs start at
      // multiples of block_size, so the score row stays dense.
      int32_t position = 0;
      for (int r = 0; r < num_runs; ++r) {
        const float* key = cache.key + scratch.runs[r].offset;
        for (int32_t i = 0; i < scratch.runs[r].length; i += 8) {
          const int count = std::min(8, scratch.runs[r].length - i);
          ScoreEight(q_head, key + i * kv_row, kv_row, count, head_dim, scale, row + position + i);
        }
        position += scratch.runs[r].length;
      }
      const float sum = simd::ExpShiftSum(row, simd::Max(row, length), length);
      const float inv_sum = 1.0f / sum;
      for (int32_t j = 0; j < length; ++j) row[j] *= inv_sum;
    }

    for (int32_t g = 0; g < group; ++g) {
      const float* weights = scratch.scores.data() + g * score_stride;
      float* out_head = out_group + g * head_dim;
      for (int32_t d = 0; d < head_dim; d += 8) {
        WeightedSum(cache.value + d, scratch.runs.data(), num_runs, kv_row, weights,
                    std::min(8, head_dim - d), out_head + d);
      }
    }
  };
  // Multiply-adds of the whole batch (scores and weighted sums): a decode
  // step of a small model is a few microseconds of work, less than waking
  // another thread costs.
  int64_t work = 0;
  for (int32_t s = 0; s < batch.num_sequences; ++s) {
    work += static_cast<int64_t>(batch.sequences[s].num_tokens) * batch.sequences[s].context_len;
  }
  work *= 2 * q_row;
  if (work < kMinParallelWork) {
    for (int item = 0; item < num_items; ++item) run_item(item, 0);
  } else {
    pool_.Run(static_cast<int>(num_items), run_item);
  }
}

}  // namespace strata::backend::cpu
