#include "worker/backend/cpu/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "worker/backend/convert.h"
#include "worker/backend/cpu/simd.h"

namespace strata::backend::cpu {
namespace {

// Below these sizes a parallel region costs more than it saves.
constexpr int64_t kMinRowsPerThread = 4;
constexpr int64_t kMinElementsPerThread = 16 * 1024;

// Rows per thread for a row-wise kernel over rows of `d` elements: a small
// model's rows are short (64 floats), so a batch of them is still one
// thread's work.
int64_t MinRowsPerThread(int64_t d) {
  return std::max<int64_t>(kMinRowsPerThread, kMinElementsPerThread / std::max<int64_t>(1, d));
}

void NormalizeRow(const float* x, int64_t d, const float* weight, float eps, float* out) {
  const float mean_square = simd::Dot(x, x, d) / static_cast<float>(d);
  const float scale = 1.0f / std::sqrt(mean_square + eps);
  simd::ScaleMul(x, scale, weight, out, d);
}

}  // namespace

void RmsNorm(ThreadPool& pool, const float* x, int64_t n, int64_t d, const float* weight, float eps,
             float* out) {
  pool.ParallelFor(n, MinRowsPerThread(d), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) NormalizeRow(x + i * d, d, weight, eps, out + i * d);
  });
}

void AddRmsNorm(ThreadPool& pool, float* residual, const float* delta, int64_t n, int64_t d,
                const float* weight, float eps, float* out) {
  pool.ParallelFor(n, MinRowsPerThread(d), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      float* row = residual + i * d;
      simd::Axpy(1.0f, delta + i * d, row, d);
      NormalizeRow(row, d, weight, eps, out + i * d);
    }
  });
}

void Rope(ThreadPool& pool, float* x, int64_t n, int32_t num_heads, int32_t head_dim,
          const int32_t* positions, const float* cos, const float* sin) {
  const int32_t half = head_dim / 2;
  pool.ParallelFor(n, MinRowsPerThread(static_cast<int64_t>(num_heads) * head_dim),
                   [&](int64_t begin, int64_t end, int) {
                     for (int64_t t = begin; t < end; ++t) {
                       const float* c = cos + static_cast<int64_t>(positions[t]) * half;
                       const float* s = sin + static_cast<int64_t>(positions[t]) * half;
                       for (int32_t h = 0; h < num_heads; ++h) {
                         float* head = x + (t * num_heads + h) * head_dim;
                         for (int32_t i = 0; i < half; ++i) {
                           const float x1 = head[i];
                           const float x2 = head[i + half];
                           head[i] = x1 * c[i] - x2 * s[i];
                           head[i + half] = x2 * c[i] + x1 * s[i];
                         }
                       }
                     }
                   });
}

void SiluMul(ThreadPool& pool, const float* gate, const float* up, int64_t count, float* out) {
  pool.ParallelFor(count, kMinElementsPerThread, [&](int64_t begin, int64_t end, int) {
    simd::SiluMul(gate + begin, up + begin, out + begin, end - begin);
  });
}

void Add(ThreadPool& pool, const float* a, const float* b, int64_t count, float* out) {
  pool.ParallelFor(count, kMinElementsPerThread, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
  });
}

void Embedding(ThreadPool& pool, const Weight& table, int64_t first_id, const int32_t* ids,
               int64_t n, float* out) {
  const int64_t d = table.cols;
  const size_t row_bytes = static_cast<size_t>(d) * DTypeSize(table.dtype);
  pool.ParallelFor(n, MinRowsPerThread(d), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row_index = ids[i] - first_id;
      if (row_index < 0 || row_index >= table.rows) {
        std::fill_n(out + i * d, d, 0.0f);
        continue;
      }
      const auto* row = static_cast<const std::byte*>(table.data) + row_index * row_bytes;
      WidenToF32(row, table.dtype, d, out + i * d);
    }
  });
}

void GatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m, float* dst) {
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(dst + i * d, src + static_cast<int64_t>(rows[i]) * d,
                static_cast<size_t>(d) * sizeof(float));
  }
}

}  // namespace strata::backend::cpu
