// Launchers of the CUDA backend's kernels, callable from host C++ (the .cu
// files define them). Each enqueues its work on `stream` and returns at once;
// launch errors are read back by the caller with cudaGetLastError().
//
// This header stays free of project headers that pull in abseil, so that nvcc
// only compiles the kernels and these plain declarations. Shapes are in
// elements; every pointer is a device address.
//
// Thread-safety: launchers are stateless.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

namespace strata::backend::cuda {

// Storage type of a weight matrix or an embedding table.
enum class ElementType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Same layout as strata::backend::AttentionSequence (checked where both are
// visible, in cuda_backend.cc).
struct SequenceDesc {
  int32_t first_token;
  int32_t num_tokens;
  int32_t context_len;
  int32_t block_table_offset;
};

// ---- elementwise_kernels.cu ----------------------------------------------
// out[n, d] = x / sqrt(mean(x^2) + eps) * weight. With `residual`: first
// residual += delta (row by row), then normalise the updated residual.
void LaunchRmsNorm(const float* x, int64_t n, int64_t d, const float* weight, float eps, float* out,
                   cudaStream_t stream);
void LaunchAddRmsNorm(float* residual, const float* delta, int64_t n, int64_t d,
                      const float* weight, float eps, float* out, cudaStream_t stream);
void LaunchRope(float* x, int64_t n, int32_t num_heads, int32_t head_dim, const int32_t* positions,
                const float* cos, const float* sin, cudaStream_t stream);
void LaunchSiluMul(const float* gate, const float* up, int64_t count, float* out,
                   cudaStream_t stream);
void LaunchAdd(const float* a, const float* b, int64_t count, float* out, cudaStream_t stream);
// y[n, cols] += bias[cols] for every row.
void LaunchAddBias(float* y, const float* bias, int64_t n, int64_t cols, cudaStream_t stream);
void LaunchEmbedding(const void* table, ElementType type, int64_t rows, int64_t cols,
                     int64_t first_id, const int32_t* ids, int64_t n, float* out,
                     cudaStream_t stream);
void LaunchGatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m, float* dst,
                      cudaStream_t stream);
// dst[i] = src[i] rounded to BF16 or F16 (round to nearest even).
void LaunchNarrow(const float* src, int64_t count, ElementType type, void* dst,
                  cudaStream_t stream);
void LaunchAppendKv(float* key_cache, float* value_cache, int64_t kv_row, const float* k,
                    const float* v, const int32_t* slots, int64_t n, cudaStream_t stream);

// ---- gemv_kernels.cu -------------------------------------------------------
// Rows a GEMV launch handles at once; larger batches go to cuBLAS.
inline constexpr int64_t kGemvMaxRows = 8;
// Weights of one GEMV launch, all [rows[o], cols] in the same ElementType,
// each with its optional bias [rows[o]] and output y [n, rows[o]].
inline constexpr int kGemvMaxOutputs = 3;
struct GemvOutputs {
  const void* w[kGemvMaxOutputs] = {};
  const float* bias[kGemvMaxOutputs] = {};
  float* y[kGemvMaxOutputs] = {};
  int64_t rows[kGemvMaxOutputs] = {};
  int count = 0;
};
// For each output o: y[o][n, rows[o]] = x[n, cols] · w[o]^T (+ bias[o]),
// weights widened to F32 as read, F32 accumulation. REQUIRES: n <=
// kGemvMaxRows.
void LaunchGemv(const float* x, int64_t n, const GemvOutputs& outputs, ElementType type,
                int64_t cols, cudaStream_t stream);

// ---- attention_kernels.cu --------------------------------------------------
// Paged attention over an F32 cache [blocks, block_size, kv_heads, head_dim],
// causal within each sequence, for prefill chunks and decode tokens alike.
// REQUIRES: head_dim <= kMaxHeadDim.
inline constexpr int32_t kMaxHeadDim = 256;
// How a decode step's attention is split over positions: `partitions`
// blocks per token and head, each taking `span` consecutive positions (both
// powers of two, so that a step's CUDA graph serves every context up to
// partitions * span). Steps with few tokens x heads are split until about
// kDecodeTargetBlocks blocks run, in spans of at least kDecodeMinSpan.
inline constexpr int32_t kDecodeTargetBlocks = 1024;
inline constexpr int32_t kDecodeMinSpan = 64;
struct DecodeSplit {
  int32_t partitions = 1;
  int32_t span = 0;  // 0 with one partition: the block takes the whole context
};
inline int32_t CeilPowerOfTwo(int64_t value) {
  int32_t power = 1;
  while (power < value) power *= 2;
  return power;
}
inline DecodeSplit ChooseDecodeSplit(int32_t num_tokens, int32_t num_heads,
                                     int32_t max_context_len) {
  const int64_t blocks = std::max<int64_t>(int64_t{1} * num_tokens * num_heads, 1);
  const int32_t wanted = CeilPowerOfTwo((kDecodeTargetBlocks + blocks - 1) / blocks);
  const int32_t useful = CeilPowerOfTwo((max_context_len + kDecodeMinSpan - 1) / kDecodeMinSpan);
  DecodeSplit split;
  split.partitions = std::min(wanted, useful);
  if (split.partitions > 1) {
    split.span = std::max(kDecodeMinSpan, CeilPowerOfTwo((max_context_len + split.partitions - 1) /
                                                         split.partitions));
  }
  return split;
}
// Floats of `partials` a split decode step needs.
inline int64_t DecodePartialFloats(int32_t num_tokens, int32_t num_heads, int32_t head_dim,
                                   int32_t partitions) {
  return static_cast<int64_t>(num_tokens) * num_heads * partitions * (head_dim + 2);
}
// Decode steps (num_tokens == num_sequences) with split.partitions > 1 and
// `partials` of DecodePartialFloats() run split; REQUIRES then that every
// context is at most partitions * span. Other steps ignore both.
void LaunchPagedAttention(const float* q, const SequenceDesc* sequences, int32_t num_sequences,
                          const int32_t* block_tables, int32_t num_tokens, const float* key_cache,
                          const float* value_cache, int32_t num_heads, int32_t num_kv_heads,
                          int32_t head_dim, int32_t block_size, float scale, float* out,
                          DecodeSplit split, float* partials, cudaStream_t stream);

}  // namespace strata::backend::cuda
