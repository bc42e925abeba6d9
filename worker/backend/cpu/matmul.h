// y[n, out] = x[n, in] · W[out, in]^T (+ bias) on the CPU.
//
// Few rows (decode): the GEMV kernels of gemv_kernels.h stream W once per
// group of up to kGemvMaxRows rows of x, threads splitting W's rows.
// Many rows (prefill): each thread widens tiles of its share of W's rows to
// F32 (F32 weights are used in place) and multiplies them with OpenBLAS
// sgemm, single-threaded per call so that our threads and OpenBLAS's never
// compete for cores.
//
// Thread-safety: one call at a time per CpuMatMul (it owns scratch).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "worker/backend/backend.h"
#include "worker/backend/cpu/gemv_kernels.h"
#include "worker/backend/cpu/thread_pool.h"

namespace strata::backend::cpu {

class CpuMatMul {
 public:
  // use_avx512: run the AVX-512 GEMV kernels (only honoured if the CPU has them).
  CpuMatMul(ThreadPool& pool, bool use_avx512);

  void Run(const float* x, int64_t n, const Weight& w, const float* bias, float* y);

  // Several products of the same x. For few rows, one parallel region streams
  // all the weights (one synchronisation instead of one per matrix, and small
  // matrices such as k and v share the threads with large ones).
  struct Output {
    const Weight* w;
    const float* bias;
    float* y;
  };
  void RunMany(const float* x, int64_t n, std::span<const Output> outputs);

  // Rows of x up to which the GEMV path is used.
  static constexpr int64_t kGemvRowLimit = 8;

 private:
  void RunGemv(const float* x, int64_t n, std::span<const Output> outputs);
  void RunSgemm(const float* x, int64_t n, const Weight& w, const float* bias, float* y);

  ThreadPool& pool_;
  const bool avx512_;
  std::vector<float> x_split_;  // [kGemvMaxRows, in]
  struct Chunk {
    int32_t output;  // index into the outputs of RunGemv
    int64_t begin;   // weight rows [begin, end)
    int64_t end;
  };
  std::vector<Chunk> chunks_;
  std::vector<GemvArgs> args_;
  std::vector<std::vector<float>> tiles_;  // per thread: widened weight tile
};

}  // namespace strata::backend::cpu
