// Row-wise and element-wise CPU kernels: RMSNorm (optionally fused with the
// residual add), rotary embedding, SiLU·mul, add, embedding gather, row gather.
// Semantics are those of the Backend ops of the same names (backend.h).
//
// Thread-safety: each call runs its own parallel region on `pool`; one call
// at a time per pool.
#pragma once

#include <cstdint>

#include "worker/backend/backend.h"
#include "worker/backend/cpu/thread_pool.h"

namespace strata::backend::cpu {

void RmsNorm(ThreadPool& pool, const float* x, int64_t n, int64_t d, const float* weight, float eps,
             float* out);
void AddRmsNorm(ThreadPool& pool, float* residual, const float* delta, int64_t n, int64_t d,
                const float* weight, float eps, float* out);
void Rope(ThreadPool& pool, float* x, int64_t n, int32_t num_heads, int32_t head_dim,
          const int32_t* positions, const float* cos, const float* sin);
void SiluMul(ThreadPool& pool, const float* gate, const float* up, int64_t count, float* out);
void Add(ThreadPool& pool, const float* a, const float* b, int64_t count, float* out);
void Embedding(ThreadPool& pool, const Weight& table, int64_t first_id, const int32_t* ids,
               int64_t n, float* out);
void GatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m, float* dst);

}  // namespace strata::backend::cpu
