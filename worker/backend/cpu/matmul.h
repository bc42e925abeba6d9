// y[n, out] = x[n, in] · W[out, in]^T (+ bias) on the CPU.
//
// Up to `kernel_row_limit` rows (decode batches and prefill chunks): the
// kernels of gemv_kernels.h, threads taking chunks of W's rows; each chunk is
// small enough to stay in the core's L2 while it meets every group of
// kGemvMaxRows rows of x, so W is read from memory once per product. 16-bit
// weights are widened in registers, or (BF16 on AVX512-BF16 CPUs) meet x
// rounded to BF16 in dot-product instructions. Each row of y is summed in
// the same order whatever n is (batch invariance).
// More rows: each thread widens tiles of its share of
// W's rows to F32 (F32 weights are used in place) and multiplies them with
// OpenBLAS sgemm, single-threaded per call so that our threads and
// OpenBLAS's never compete for cores.
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
  // kernel_row_limit: rows of x up to which our kernels are used (see
  // above); negative: the default for the instruction set.
  CpuMatMul(ThreadPool& pool, bool use_avx512, int64_t kernel_row_limit = -1);

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

  // Default kernel_row_limit per instruction set, from strata-matmul-bench
  // on the 1.1B shape (BF16): the AVX-512 kernels beat widened-tile sgemm at
  // every row count measured (up to 1,024: 198 vs 148 GFLOP/s on 2 Zen 5
  // cores), the AVX2 ones up to 64 rows.
  static constexpr int64_t kKernelRowLimitAvx512 = 1024;
  static constexpr int64_t kKernelRowLimitAvx2 = 64;
  int64_t kernel_row_limit() const { return kernel_row_limit_; }
  // True when BF16 weights meet x rounded to BF16 (GemvAvx512Bf16).
  bool bf16_dot_products() const { return bf16_dot_; }

 private:
  void RunGemv(const float* x, int64_t n, std::span<const Output> outputs);
  void RunSgemm(const float* x, int64_t n, const Weight& w, const float* bias, float* y);

  ThreadPool& pool_;
  const bool avx512_;
  const bool bf16_dot_;  // AVX512-BF16 kernels for BF16 weights
  const int64_t kernel_row_limit_;
  std::vector<float> x_split_;    // [n, in]
  std::vector<uint16_t> x_bf16_;  // [n, in]
  struct Chunk {
    int32_t output;  // index into the outputs of RunGemv
    int64_t begin;   // weight rows [begin, end)
    int64_t end;
  };
  std::vector<Chunk> chunks_;
  std::vector<GemvArgs> args_;
  std::vector<void (*)(const GemvArgs&, int64_t, int64_t)> kernels_;  // per output
  std::vector<std::vector<float>> tiles_;  // per thread: widened weight tile
};

}  // namespace strata::backend::cpu
