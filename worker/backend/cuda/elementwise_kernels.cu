// Row-wise and element-wise kernels of the CUDA backend: RMSNorm (plain and
// fused with the residual add), RoPE, SiLU·mul, add, bias, embedding gather,
// row gather, F32 narrowing and KV-cache append. Semantics as the CPU
// backend's (worker/backend/cpu/elementwise.cc); see kernels.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "worker/backend/cuda/kernels.h"

namespace strata::backend::cuda {
namespace {

constexpr int kNormThreads = 256;
constexpr int kThreads = 256;

unsigned int Blocks(int64_t count, int threads = kThreads) {
  return static_cast<unsigned int>((count + threads - 1) / threads);
}

__device__ float BlockSum(float value) {
  __shared__ float partial[kNormThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) partial[warp] = value;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kNormThreads / 32; ++w) total += partial[w];
  return total;
}

// One block per row. With `delta`, the row of `x` (the residual) is updated
// first; each thread rereads only the elements it wrote.
__global__ void RmsNormKernel(float* x, const float* delta, int64_t d, const float* weight,
                              float eps, float* out) {
  float* row = x + blockIdx.x * d;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float value = row[i];
    if (delta != nullptr) {
      value += delta[blockIdx.x * d + i];
      row[i] = value;
    }
    sum += value * value;
  }
  const float scale = rsqrtf(BlockSum(sum) / static_cast<float>(d) + eps);
  float* out_row = out + blockIdx.x * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) out_row[i] = row[i] * scale * weight[i];
}

__global__ void RopeKernel(float* x, int64_t n, int32_t num_heads, int32_t head_dim,
                           const int32_t* positions, const float* cos, const float* sin) {
  const int32_t half = head_dim / 2;
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= n * num_heads * half) return;
  const int32_t i = index % half;
  const int64_t head = index / half;  // t * num_heads + h
  const int64_t t = head / num_heads;
  const int64_t angle = static_cast<int64_t>(positions[t]) * half + i;
  float* h = x + head * head_dim;
  const float x1 = h[i];
  const float x2 = h[i + half];
  h[i] = x1 * cos[angle] - x2 * sin[angle];
  h[i + half] = x2 * cos[angle] + x1 * sin[angle];
}

__global__ void SiluMulKernel(const float* gate, const float* up, int64_t count, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  const float g = gate[i];
  out[i] = g / (1.0f + expf(-g)) * up[i];
}

__global__ void AddKernel(const float* a, const float* b, int64_t count, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) out[i] = a[i] + b[i];
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t n, int64_t cols) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n * cols) y[i] += bias[i % cols];
}

__device__ float Widen(const void* data, ElementType type, int64_t i) {
  switch (type) {
    case ElementType::kF16:
      return __half2float(static_cast<const __half*>(data)[i]);
    case ElementType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(data)[i]);
    default:
      return static_cast<const float*>(data)[i];
  }
}

__global__ void EmbeddingKernel(const void* table, ElementType type, int64_t rows, int64_t cols,
                                int64_t first_id, const int32_t* ids, int64_t n, float* out) {
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= n * cols) return;
  const int64_t i = index / cols;
  const int64_t c = index % cols;
  const int64_t row = ids[i] - first_id;
  out[index] = row < 0 || row >= rows ? 0.0f : Widen(table, type, row * cols + c);
}

__global__ void GatherRowsKernel(const float* src, int64_t d, const int32_t* rows, int64_t m,
                                 float* dst) {
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= m * d) return;
  dst[index] = src[static_cast<int64_t>(rows[index / d]) * d + index % d];
}

__global__ void NarrowKernel(const float* src, int64_t count, ElementType type, void* dst) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  if (type == ElementType::kBF16) {
    static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(src[i]);
  } else {
    static_cast<__half*>(dst)[i] = __float2half_rn(src[i]);
  }
}

__global__ void AppendKvKernel(float* key_cache, float* value_cache, int64_t kv_row, const float* k,
                               const float* v, const int32_t* slots, int64_t n) {
  const int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (index >= n * kv_row) return;
  const int64_t t = index / kv_row;
  const int64_t slot_index = static_cast<int64_t>(slots[t]) * kv_row + index % kv_row;
  key_cache[slot_index] = k[index];
  value_cache[slot_index] = v[index];
}

}  // namespace

void LaunchRmsNorm(const float* x, int64_t n, int64_t d, const float* weight, float eps, float* out,
                   cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  // x is only read when delta is null.
  RmsNormKernel<<<static_cast<unsigned int>(n), kNormThreads, 0, stream>>>(
      const_cast<float*>(x), nullptr, d, weight, eps, out);
}

void LaunchAddRmsNorm(float* residual, const float* delta, int64_t n, int64_t d,
                      const float* weight, float eps, float* out, cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  RmsNormKernel<<<static_cast<unsigned int>(n), kNormThreads, 0, stream>>>(residual, delta, d,
                                                                           weight, eps, out);
}

void LaunchRope(float* x, int64_t n, int32_t num_heads, int32_t head_dim, const int32_t* positions,
                const float* cos, const float* sin, cudaStream_t stream) {
  const int64_t count = n * num_heads * (head_dim / 2);
  if (count <= 0) return;
  RopeKernel<<<Blocks(count), kThreads, 0, stream>>>(x, n, num_heads, head_dim, positions, cos,
                                                     sin);
}

void LaunchSiluMul(const float* gate, const float* up, int64_t count, float* out,
                   cudaStream_t stream) {
  if (count <= 0) return;
  SiluMulKernel<<<Blocks(count), kThreads, 0, stream>>>(gate, up, count, out);
}

void LaunchAdd(const float* a, const float* b, int64_t count, float* out, cudaStream_t stream) {
  if (count <= 0) return;
  AddKernel<<<Blocks(count), kThreads, 0, stream>>>(a, b, count, out);
}

void LaunchAddBias(float* y, const float* bias, int64_t n, int64_t cols, cudaStream_t stream) {
  if (n * cols <= 0) return;
  AddBiasKernel<<<Blocks(n * cols), kThreads, 0, stream>>>(y, bias, n, cols);
}

void LaunchEmbedding(const void* table, ElementType type, int64_t rows, int64_t cols,
                     int64_t first_id, const int32_t* ids, int64_t n, float* out,
                     cudaStream_t stream) {
  if (n * cols <= 0) return;
  EmbeddingKernel<<<Blocks(n * cols), kThreads, 0, stream>>>(table, type, rows, cols, first_id, ids,
                                                             n, out);
}

void LaunchGatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m, float* dst,
                      cudaStream_t stream) {
  if (m * d <= 0) return;
  GatherRowsKernel<<<Blocks(m * d), kThreads, 0, stream>>>(src, d, rows, m, dst);
}

void LaunchNarrow(const float* src, int64_t count, ElementType type, void* dst,
                  cudaStream_t stream) {
  if (count <= 0) return;
  NarrowKernel<<<Blocks(count), kThreads, 0, stream>>>(src, count, type, dst);
}

void LaunchAppendKv(float* key_cache, float* value_cache, int64_t kv_row, const float* k,
                    const float* v, const int32_t* slots, int64_t n, cudaStream_t stream) {
  if (n * kv_row <= 0) return;
  AppendKvKernel<<<Blocks(n * kv_row), kThreads, 0, stream>>>(key_cache, value_cache, kv_row, k, v,
                                                              slots, n);
}

}  // namespace strata::backend::cuda
