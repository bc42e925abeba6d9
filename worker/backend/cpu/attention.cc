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

// rows[g][0, 8) = scale · q_g · key_i for 8 consecutive positions i of one
// block, g < heads (1 or 2 query heads of a group), keys transposed:
// key_t[d * block_size + i]. Lanes past the run's end hold garbage, never
// read. Four partial sums over d per head hide the FMA latency; their order
// depends only on head_dim, so a position's score never depends on its batch.
[[gnu::always_inline]] inline void ScoreEightTransposed(const float* const q[2], int heads,
                                                        const float* key_t, int64_t block_size,
                                                        int head_dim, const __m256i* mask,
                                                        __m256 scale, float* const rows[2]) {
  __m256 acc0[4], acc1[4];
  for (int u = 0; u < 4; ++u) acc0[u] = acc1[u] = _mm256_setzero_ps();
  auto load = [&](int d) {
    const float* p = key_t + d * block_size;
    return mask == nullptr ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, *mask);
  };
  int d = 0;
  if (heads == 2) {
    for (; d + 4 <= head_dim; d += 4) {
      for (int u = 0; u < 4; ++u) {
        const __m256 k = load(d + u);
        acc0[u] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[0] + d + u), k, acc0[u]);
        acc1[u] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[1] + d + u), k, acc1[u]);
      }
    }
    for (; d < head_dim; ++d) {
      const __m256 k = load(d);
      acc0[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[0] + d), k, acc0[0]);
      acc1[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[1] + d), k, acc1[0]);
    }
  } else {
    for (; d + 4 <= head_dim; d += 4) {
      for (int u = 0; u < 4; ++u) {
        acc0[u] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[0] + d + u), load(d + u), acc0[u]);
      }
    }
    for (; d < head_dim; ++d) {
      acc0[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[0] + d), load(d), acc0[0]);
    }
  }
  const __m256 sum0 =
      _mm256_add_ps(_mm256_add_ps(acc0[0], acc0[1]), _mm256_add_ps(acc0[2], acc0[3]));
  _mm256_storeu_ps(rows[0], _mm256_mul_ps(sum0, scale));
  if (heads == 2) {
    const __m256 sum1 =
        _mm256_add_ps(_mm256_add_ps(acc1[0], acc1[1]), _mm256_add_ps(acc1[2], acc1[3]));
    _mm256_storeu_ps(rows[1], _mm256_mul_ps(sum1, scale));
  }
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
  const int64_t block_size = params.block_size;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t slot = slots[t];
    std::memcpy(cache.value + slot * row, v + t * row, row_bytes);
    // Key element (h, d) of the slot's position i in block b goes to
    // [b][h][d][i]: row-major b, then a [row, block_size] transposed tile.
    const int64_t block = slot / block_size;
    const int64_t i = slot % block_size;
    float* tile = cache.key + block * block_size * row + i;
    const float* key = k + t * row;
    for (int64_t e = 0; e < row; ++e) tile[e * block_size] = key[e];
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
      const int64_t block_start =
          static_cast<int64_t>(block_table[start / block_size]) * block_size * kv_row;
      scratch.runs[num_runs++] = {block_start + head_offset, block_start + head_offset * block_size,
                                  std::min(block_size, length - start)};
    }

    // Score 8 positions at a time within each run, two query heads of the
    // group at a time (they share each key load); runs start at multiples
    // of block_size, so the score rows stay dense.
    for (int32_t g = 0; g < group; g += 2) {
      const int heads = std::min(2, group - g);
      const float* q_heads[2] = {q_group + g * head_dim, q_group + (g + heads - 1) * head_dim};
      float* rows[2] = {scratch.scores.data() + g * score_stride,
                        scratch.scores.data() + (g + heads - 1) * score_stride};
      int32_t position = 0;
      for (int r = 0; r < num_runs; ++r) {
        const float* key_t = cache.key + scratch.runs[r].key_offset;
        for (int32_t i = 0; i < scratch.runs[r].length; i += 8) {
          // A load past the block's row would read the next row (or, for
          // the cache's last row, past its end): mask it.
          const __m256i tail = TailMask(block_size - i);
          float* at[2] = {rows[0] + position + i, rows[1] + position + i};
          ScoreEightTransposed(q_heads, heads, key_t + i, block_size, head_dim,
                               i + 8 <= block_size ? nullptr : &tail, scale, at);
        }
        position += scratch.runs[r].length;
      }
    }
    for (int32_t g = 0; g < group; ++g) {
      float* row = scratch.scores.data() + g * score_stride;
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
