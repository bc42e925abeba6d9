// The CPU backend: device memory is host memory, weights are used in place
// (zero copy from the safetensors mmap), matrix products go through OpenBLAS
// (prefill) or the AVX-512 / AVX2 GEMV kernels (decode), and every other op
// is a vectorised loop, parallelised on a small persistent thread pool.
//
// OpenBLAS is switched to one thread per call when a CpuBackend is created:
// the backend runs sgemm on each of its own threads instead.
//
// Thread-safety: as Backend (one caller thread at a time).
#pragma once

#include <memory>
#include <string>

#include "worker/backend/backend.h"
#include "worker/backend/cpu/attention.h"
#include "worker/backend/cpu/matmul.h"
#include "worker/backend/cpu/thread_pool.h"

namespace strata::backend {

struct CpuBackendOptions {
  int num_threads = 0;     // kernel threads including the caller; 0: all cores
  bool use_avx512 = true;  // false forces the AVX2 kernels (AVX-512 is used only if present)
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options);

  std::string_view name() const override { return "cpu"; }
  int num_threads() const { return pool_.num_threads(); }
  // "avx512-bf16" (BF16 weights meet activations rounded to BF16, see
  // GemvAvx512Bf16), "avx512" or "avx2": which matrix kernels run.
  std::string_view kernel_isa() const { return kernel_isa_; }

  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) override;
  void CopyToDevice(void* device_dst, const void* host_src, size_t bytes) override;
  void CopyToHost(void* host_dst, const void* device_src, size_t bytes) override;
  absl::StatusOr<Weight> ImportWeight(const void* host, DType dtype, int64_t rows,
                                      int64_t cols) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  void MatMul(const float* x, int64_t n, const Weight& w, const float* bias, float* y) override;
  void MatMulMany(const float* x, int64_t n, std::span<const MatMulOutput> outputs) override;
  void RmsNorm(const float* x, int64_t n, int64_t d, const float* weight, float eps,
               float* out) override;
  void AddRmsNorm(float* residual, const float* delta, int64_t n, int64_t d, const float* weight,
                  float eps, float* out) override;
  void Rope(float* x, int64_t n, int32_t num_heads, int32_t head_dim, const int32_t* positions,
            const float* cos, const float* sin) override;
  void SiluMul(const float* gate, const float* up, int64_t count, float* out) override;
  void Add(const float* a, const float* b, int64_t count, float* out) override;
  void Embedding(const Weight& table, int64_t first_id, const int32_t* ids, int64_t n,
                 float* out) override;
  void GatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m, float* dst) override;
  void AppendKv(const KvCacheLayer& cache, const AttentionParams& params, const float* k,
                const float* v, const int32_t* slots, int64_t n) override;
  void PagedAttention(const float* q, const AttentionBatch& batch, const KvCacheLayer& cache,
                      const AttentionParams& params, float* out) override;

 private:
  ThreadPool pool_;
  cpu::CpuMatMul matmul_;
  cpu::PagedAttentionCpu attention_;
  std::string kernel_isa_;
};

}  // namespace strata::backend
