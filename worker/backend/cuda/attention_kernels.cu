// Paged attention over the F32 KV cache, for prefill chunks and decode tokens
// (same semantics as worker/backend/cpu/attention.cc). Two kernels:
//
// Decode (every sequence of the step has one token): one block per (token,
// query head, partition of positions: see DecodeSplit); its warps take the
// partition's visible positions round-robin and keep an online softmax
// (running max, running sum and a running weighted sum of V); the warps'
// partial results are merged at the end. Each lane holds head_dim / 32
// elements of q and of the accumulator. With one partition the block writes
// the output; with several (long contexts: more blocks to fill the GPU) each
// writes its unnormalised partial result to scratch and a second kernel
// merges the partitions.
//
// Prefill (some sequence brings several tokens): one block per (tile of up to
// kTileTokens consecutive tokens of one sequence, query head). The block
// walks the positions the tile's last token sees in tiles of kTileKeys,
// staging K and V in shared memory once for all its tokens (instead of once
// per token), with the same online softmax per token; causal masking per
// token inside a tile.
#include <algorithm>
#include <cfloat>

#include "worker/backend/cuda/kernels.h"

namespace strata::backend::cuda {
namespace {

// 8 warps: a decode token's positions are split 8 ways, so a block waits on
// fewer dependent loads in a row (decode launches only tokens x heads blocks).
constexpr int kWarps = 8;
constexpr int kPerLane = kMaxHeadDim / 32;

// The sequence holding batch row `t` (sequences are in token order).
__device__ int FindSequence(const SequenceDesc* sequences, int num_sequences, int t) {
  int low = 0;
  int high = num_sequences - 1;
  while (low < high) {
    const int mid = (low + high + 1) / 2;
    if (sequences[mid].first_token <= t) {
      low = mid;
    } else {
      high = mid - 1;
    }
  }
  return low;
}

__global__ void __launch_bounds__(kWarps * 32)
    PagedAttentionKernel(const float* __restrict__ q, const SequenceDesc* __restrict__ sequences,
                         int num_sequences, const int32_t* __restrict__ block_tables,
                         const float* __restrict__ key_cache, const float* __restrict__ value_cache,
                         int num_heads, int num_kv_heads, int head_dim, int block_size, float scale,
                         float* __restrict__ out, int split_span, float* __restrict__ partials) {
  const int t = blockIdx.x;
  const int head = blockIdx.y;
  const int partition = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const SequenceDesc seq = sequences[FindSequence(sequences, num_sequences, t)];
  const int32_t* block_table = block_tables + seq.block_table_offset;
  // Causal: this token sees positions [0, its own position].
  const int length = seq.context_len - seq.num_tokens + (t - seq.first_token) + 1;
  const int kv_head = head / (num_heads / num_kv_heads);
  const int64_t kv_row = static_cast<int64_t>(num_kv_heads) * head_dim;
  const float* q_head = q + (static_cast<int64_t>(t) * num_heads + head) * head_dim;

  float q_lane[kPerLane];
  float acc[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int d = lane + 32 * e;
    q_lane[e] = d < head_dim ? q_head[d] * scale : 0.0f;
    acc[e] = 0.0f;
  }
  float running_max = -FLT_MAX;
  float running_sum = 0.0f;
  // Unsplit: the block takes every position; split: its partition's.
  const int span = gridDim.z == 1 ? length : split_span;
  const int end = min(length, (partition + 1) * span);
  for (int j = partition * span + warp; j < end; j += kWarps) {
    const int64_t slot =
        static_cast<int64_t>(block_table[j / block_size]) * block_size + j % block_size;
    const float* key = key_cache + slot * kv_row + static_cast<int64_t>(kv_head) * head_dim;
    const float* value = value_cache + slot * kv_row + static_cast<int64_t>(kv_head) * head_dim;
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < head_dim) dot += q_lane[e] * key[d];
    }
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const float new_max = fmaxf(running_max, dot);
    const float correction = expf(running_max - new_max);
    const float weight = expf(dot - new_max);
    running_sum = running_sum * correction + weight;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < head_dim) acc[e] = acc[e] * correction + weight * value[d];
    }
    running_max = new_max;
  }

  // Merge the warps: out = sum_w acc_w * exp(max_w - M) / sum_w sum_w * exp(max_w - M).
  __shared__ float warp_max[kWarps];
  __shared__ float warp_sum[kWarps];
  __shared__ float warp_acc[kWarps][kMaxHeadDim];
  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_sum[warp] = running_sum;
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int d = lane + 32 * e;
    if (d < head_dim) warp_acc[warp][d] = acc[e];
  }
  __syncthreads();
  float global_max = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w) global_max = fmaxf(global_max, warp_max[w]);
  float total = 0.0f;
  float factor[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no position has sum 0 and max -FLT_MAX: factor 0.
    factor[w] = warp_sum[w] > 0.0f ? expf(warp_max[w] - global_max) : 0.0f;
    total += warp_sum[w] * factor[w];
  }
  if (partials == nullptr) {
    float* out_head = out + (static_cast<int64_t>(t) * num_heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
      float value = 0.0f;
      for (int w = 0; w < kWarps; ++w) value += warp_acc[w][d] * factor[w];
      out_head[d] = value / total;
    }
    return;
  }
  // Partial record [head_dim accumulator | max | sum]; sum 0: saw nothing.
  float* record =
      partials +
      ((static_cast<int64_t>(t) * num_heads + head) * gridDim.z + partition) * (head_dim + 2);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int w = 0; w < kWarps; ++w) value += warp_acc[w][d] * factor[w];
    record[d] = value;
  }
  if (threadIdx.x == 0) {
    record[head_dim] = global_max;
    record[head_dim + 1] = total;
  }
}

// out[t, head] = merge of the partitions' records (one block per token, head).
__global__ void MergePartitionsKernel(const float* __restrict__ partials, int partitions,
                                      int num_heads, int head_dim, float* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * num_heads + blockIdx.y;
  const float* records = partials + row * partitions * (head_dim + 2);
  float global_max = -FLT_MAX;
  for (int p = 0; p < partitions; ++p) {
    const float* record = records + p * (head_dim + 2);
    if (record[head_dim + 1] > 0.0f) global_max = fmaxf(global_max, record[head_dim]);
  }
  float total = 0.0f;
  for (int p = 0; p < partitions; ++p) {
    const float* record = records + p * (head_dim + 2);
    const float sum = record[head_dim + 1];
    if (sum > 0.0f) total += sum * expf(record[head_dim] - global_max);
  }
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int p = 0; p < partitions; ++p) {
      const float* record = records + p * (head_dim + 2);
      if (record[head_dim + 1] > 0.0f) value += record[d] * expf(record[head_dim] - global_max);
    }
    out[row * head_dim + d] = value / total;
  }
}

// ---- Prefill: token tiles sharing K/V tiles in shared memory ----------------

constexpr int kTileTokens = 16;  // query tokens per block (4 per warp)
constexpr int kTileKeys = 32;    // positions staged per step (one per lane)
constexpr int kPrefillWarps = 4;
constexpr int kRowsPerWarp = kTileTokens / kPrefillWarps;

// Shared-memory layout of the prefill kernel, in floats. Q and K rows are
// padded to a multiple of 4 (zeros) for float4 loads, plus 4 for K so that
// lanes reading different K rows hit different banks.
struct PrefillLayout {
  int padded_dim;  // head_dim rounded up to a multiple of 4
  int k_stride;    // padded_dim + 4
  __host__ __device__ explicit PrefillLayout(int head_dim)
      : padded_dim((head_dim + 3) / 4 * 4), k_stride((head_dim + 3) / 4 * 4 + 4) {}
  __host__ __device__ int q_floats() const { return kTileTokens * padded_dim; }
  __host__ __device__ int k_floats() const { return kTileKeys * k_stride; }
  __host__ __device__ int v_floats(int head_dim) const { return kTileKeys * head_dim; }
  size_t bytes(int head_dim) const {
    return sizeof(float) * static_cast<size_t>(q_floats() + k_floats() + v_floats(head_dim));
  }
};

__global__ void __launch_bounds__(kPrefillWarps * 32)
    PrefillAttentionKernel(const float* __restrict__ q, const SequenceDesc* __restrict__ sequences,
                           int num_sequences, const int32_t* __restrict__ block_tables,
                           const float* __restrict__ key_cache,
                           const float* __restrict__ value_cache, int num_heads, int num_kv_heads,
                           int head_dim, int block_size, float scale, float* __restrict__ out) {
  extern __shared__ float4 shared_vectors[];  // float4: 16-byte aligned
  float* shared = reinterpret_cast<float*>(shared_vectors);
  const PrefillLayout layout(head_dim);
  float* q_tile = shared;                      // [kTileTokens][padded_dim], scaled
  float* k_tile = q_tile + layout.q_floats();  // [kTileKeys][k_stride]
  float* v_tile = k_tile + layout.k_floats();  // [kTileKeys][head_dim]
  __shared__ int tile_sequence;
  __shared__ int tile_first;  // index of the tile's first token within its sequence

  // Which (sequence, tile) this block is: sequence i has ceil(tokens / kTileTokens) tiles.
  if (threadIdx.x == 0) {
    int remaining = blockIdx.x;
    tile_sequence = -1;
    for (int i = 0; i < num_sequences; ++i) {
      const int tiles = (sequences[i].num_tokens + kTileTokens - 1) / kTileTokens;
      if (remaining < tiles) {
        tile_sequence = i;
        tile_first = remaining * kTileTokens;
        break;
      }
      remaining -= tiles;
    }
  }
  __syncthreads();
  if (tile_sequence < 0) return;  // the grid is an upper bound on the tiles
  const SequenceDesc seq = sequences[tile_sequence];
  const int tile_tokens = min(kTileTokens, seq.num_tokens - tile_first);
  const int32_t* block_table = block_tables + seq.block_table_offset;
  const int head = blockIdx.y;
  const int kv_head = head / (num_heads / num_kv_heads);
  const int64_t kv_row = static_cast<int64_t>(num_kv_heads) * head_dim;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  // Position of the tile's token r: every token sees positions [0, its own].
  const int first_position = seq.context_len - seq.num_tokens + tile_first;
  const int last_position = first_position + tile_tokens - 1;

  for (int i = threadIdx.x; i < layout.q_floats(); i += blockDim.x) {
    const int r = i / layout.padded_dim;
    const int d = i % layout.padded_dim;
    const int64_t t = seq.first_token + tile_first + r;
    q_tile[i] =
        r < tile_tokens && d < head_dim ? q[(t * num_heads + head) * head_dim + d] * scale : 0.0f;
  }

  float acc[kRowsPerWarp][kPerLane];
  float running_max[kRowsPerWarp];
  float running_sum[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    running_max[r] = -FLT_MAX;
    running_sum[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[r][e] = 0.0f;
  }

  for (int key_start = 0; key_start <= last_position; key_start += kTileKeys) {
    __syncthreads();  // the previous tile's K/V (and at first the Q writes)
    for (int i = threadIdx.x; i < kTileKeys * layout.padded_dim; i += blockDim.x) {
      const int j = i / layout.padded_dim;
      const int d = i % layout.padded_dim;
      const int position = key_start + j;
      float key = 0.0f;
      float value = 0.0f;
      if (position <= last_position && d < head_dim) {
        const int64_t slot = static_cast<int64_t>(block_table[position / block_size]) * block_size +
                             position % block_size;
        const int64_t at = slot * kv_row + static_cast<int64_t>(kv_head) * head_dim + d;
        key = key_cache[at];
        value = value_cache[at];
      }
      k_tile[j * layout.k_stride + d] = key;
      if (d < head_dim) v_tile[j * head_dim + d] = value;
    }
    __syncthreads();

    // Scores: lane j takes position key_start + j for the warp's rows.
    float score[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) score[r] = 0.0f;
    const float4* k_row = reinterpret_cast<const float4*>(k_tile + lane * layout.k_stride);
    for (int d4 = 0; d4 < layout.padded_dim / 4; ++d4) {
      const float4 k = k_row[d4];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float4 qv = reinterpret_cast<const float4*>(q_tile + (warp * kRowsPerWarp + r) *
                                                                       layout.padded_dim)[d4];
        score[r] += qv.x * k.x + qv.y * k.y + qv.z * k.z + qv.w * k.w;
      }
    }

    float weight[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      const bool visible = row < tile_tokens && key_start + lane <= first_position + row;
      float tile_max = visible ? score[r] : -FLT_MAX;
      for (int offset = 16; offset > 0; offset /= 2)
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
      const float new_max = fmaxf(running_max[r], tile_max);
      weight[r] = visible ? expf(score[r] - new_max) : 0.0f;
      float tile_sum = weight[r];
      for (int offset = 16; offset > 0; offset /= 2)
        tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, offset);
      // A row that has seen nothing yet has sum 0: its correction is moot.
      const float correction = running_sum[r] > 0.0f ? expf(running_max[r] - new_max) : 0.0f;
      running_sum[r] = running_sum[r] * correction + tile_sum;
      running_max[r] = new_max;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc[r][e] *= correction;
    }

    // acc += weights . V: position j's weight comes from lane j.
    for (int j = 0; j < kTileKeys; ++j) {
      float w[kRowsPerWarp];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) w[r] = __shfl_sync(0xffffffffu, weight[r], j);
      const float* v_row = v_tile + j * head_dim;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) {
        const int d = lane + 32 * e;
        if (d < head_dim) {
          const float v = v_row[d];
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) acc[r][e] += w[r] * v;
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = warp * kRowsPerWarp + r;
    if (row >= tile_tokens) continue;
    const int64_t t = seq.first_token + tile_first + row;
    float* out_head = out + (t * num_heads + head) * head_dim;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < head_dim) out_head[d] = acc[r][e] / running_sum[r];
    }
  }
}

}  // namespace

void LaunchPagedAttention(const float* q, const SequenceDesc* sequences, int32_t num_sequences,
                          const int32_t* block_tables, int32_t num_tokens, const float* key_cache,
                          const float* value_cache, int32_t num_heads, int32_t num_kv_heads,
                          int32_t head_dim, int32_t block_size, float scale, float* out,
                          DecodeSplit split, float* partials, cudaStream_t stream) {
  if (num_tokens <= 0 || num_heads <= 0 || num_sequences <= 0) return;
  if (num_tokens > num_sequences) {
    // Some sequence brings several tokens. Tiles: at most one partial tile
    // per sequence beyond num_tokens / kTileTokens full ones.
    const PrefillLayout layout(head_dim);
    const size_t shared_bytes = layout.bytes(head_dim);
    if (shared_bytes > 48 * 1024) {
      cudaFuncSetAttribute(PrefillAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(shared_bytes));
    }
    const dim3 grid(static_cast<unsigned int>(num_tokens / kTileTokens + num_sequences),
                    static_cast<unsigned int>(num_heads));
    PrefillAttentionKernel<<<grid, kPrefillWarps * 32, shared_bytes, stream>>>(
        q, sequences, num_sequences, block_tables, key_cache, value_cache, num_heads, num_kv_heads,
        head_dim, block_size, scale, out);
    return;
  }
  // Tokens on x (up to 2^31 - 1 blocks), heads on y (up to 65535),
  // partitions on z.
  const int32_t parts = partials != nullptr && split.span > 0 ? std::max(split.partitions, 1) : 1;
  const dim3 grid(static_cast<unsigned int>(num_tokens), static_cast<unsigned int>(num_heads),
                  static_cast<unsigned int>(parts));
  PagedAttentionKernel<<<grid, kWarps * 32, 0, stream>>>(
      q, sequences, num_sequences, block_tables, key_cache, value_cache, num_heads, num_kv_heads,
      head_dim, block_size, scale, out, split.span, parts > 1 ? partials : nullptr);
  if (parts > 1) {
    MergePartitionsKernel<<<dim3(static_cast<unsigned int>(num_tokens),
                                 static_cast<unsigned int>(num_heads)),
                            128, 0, stream>>>(partials, parts, num_heads, head_dim, out);
  }
}

}  // namespace strata::backend::cuda
