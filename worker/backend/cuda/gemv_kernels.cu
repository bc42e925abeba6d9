// Matrix-vector products for small batches (decode): y[n, rows] =
// x[n, cols] · w[rows, cols]^T with n <= kGemvMaxRows, for up to
// kGemvMaxOutputs weights of the same x in one launch (q, k, v; gate, up). Decode is bound by
// reading the weights once, so each warp streams one weight row with 16-byte
// loads, widens it to F32 and multiplies it with every row of x (x is small
// and stays in L1/L2); F32 accumulation, then a warp reduction.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "worker/backend/cuda/kernels.h"

namespace strata::backend::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

// kRows: rows of x handled per pass (1 for batch-1 decode, else
// kGemvMaxRows with `n` of them used). The grid covers the rows of every
// output one after the other; a warp finds its output, then its row.
// `vectorized`: w rows, x rows and the row length allow 16-byte loads.
template <typename T, int kRows>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    GemvKernel(const float* __restrict__ x, int n, GemvOutputs outputs, int64_t cols,
               bool vectorized) {
  const int lane = threadIdx.x % 32;
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / 32;
  // Constant indices only, so that the outputs stay in parameter space.
  int64_t rows = outputs.rows[0];
  const void* w = outputs.w[0];
  const float* bias = outputs.bias[0];
  float* y = outputs.y[0];
  bool found = row < rows;
#pragma unroll
  for (int o = 1; o < kGemvMaxOutputs; ++o) {
    if (!found && o < outputs.count) {
      row -= rows;
      rows = outputs.rows[o];
      w = outputs.w[o];
      bias = outputs.bias[o];
      y = outputs.y[o];
      found = row < rows;
    }
  }
  if (!found) return;
  const T* w_row = static_cast<const T*>(w) + row * cols;
  float sum[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) sum[r] = 0.0f;

  if (vectorized) {
    constexpr int kPerVector = 16 / sizeof(T);  // elements per 16-byte load
    const int64_t vectors = cols / kPerVector;
    const uint4* w_vectors = reinterpret_cast<const uint4*>(w_row);
#pragma unroll 4
    for (int64_t i = lane; i < vectors; i += 32) {
      const uint4 packed = __ldg(w_vectors + i);
      const T* values = reinterpret_cast<const T*>(&packed);
      float wf[kPerVector];
#pragma unroll
      for (int e = 0; e < kPerVector; ++e) wf[e] = ToFloat(values[e]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < n) {
          const float4* xv = reinterpret_cast<const float4*>(x + r * cols + i * kPerVector);
#pragma unroll
          for (int e = 0; e < kPerVector / 4; ++e) {
            const float4 xf = __ldg(xv + e);
            sum[r] += wf[4 * e] * xf.x + wf[4 * e + 1] * xf.y + wf[4 * e + 2] * xf.z +
                      wf[4 * e + 3] * xf.w;
          }
        }
      }
    }
  } else {
    for (int64_t c = lane; c < cols; c += 32) {
      const float wf = ToFloat(w_row[c]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r < n) sum[r] += wf * x[r * cols + c];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float s = sum[r];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0 && r < n) y[r * rows + row] = s + (bias != nullptr ? bias[row] : 0.0f);
  }
}

template <typename T>
void Launch(const float* x, int64_t n, const GemvOutputs& outputs, int64_t cols,
            cudaStream_t stream) {
  constexpr int kPerVector = 16 / sizeof(T);
  bool vectorized = cols % kPerVector == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  int64_t total_rows = 0;
  for (int o = 0; o < outputs.count; ++o) {
    vectorized = vectorized && reinterpret_cast<uintptr_t>(outputs.w[o]) % 16 == 0;
    total_rows += outputs.rows[o];
  }
  if (total_rows <= 0) return;
  const auto blocks = static_cast<unsigned int>((total_rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  if (n == 1) {
    GemvKernel<T, 1><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(x, 1, outputs, cols, vectorized);
  } else {
    GemvKernel<T, static_cast<int>(kGemvMaxRows)><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
        x, static_cast<int>(n), outputs, cols, vectorized);
  }
}

}  // namespace

void LaunchGemv(const float* x, int64_t n, const GemvOutputs& outputs, ElementType type,
                int64_t cols, cudaStream_t stream) {
  if (n <= 0 || outputs.count <= 0) return;
  switch (type) {
    case ElementType::kF32:
      Launch<float>(x, n, outputs, cols, stream);
      break;
    case ElementType::kF16:
      Launch<__half>(x, n, outputs, cols, stream);
      break;
    case ElementType::kBF16:
      Launch<__nv_bfloat16>(x, n, outputs, cols, stream);
      break;
  }
}

}  // namespace strata::backend::cuda
