#include "worker/backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <cstring>
#include <vector>

#include "worker/backend/cpu/elementwise.h"
#include "worker/backend/cpu/gemv_kernels.h"
#include "worker/backend/host_buffer.h"

namespace strata::backend {
namespace {

class CpuBuffer final : public DeviceBuffer {
 public:
  explicit CpuBuffer(std::unique_ptr<HostBuffer> memory) : memory_(std::move(memory)) {}
  void* data() override { return memory_->data(); }
  size_t size_bytes() const override { return memory_->size(); }

 private:
  std::unique_ptr<HostBuffer> memory_;
};

}  // namespace

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : pool_(options.num_threads),
      matmul_(pool_, options.use_avx512),
      attention_(pool_),
      kernel_isa_(matmul_.bf16_dot_products()            ? "avx512-bf16"
                  : options.use_avx512 && CpuHasAvx512() ? "avx512"
                                                         : "avx2") {
  openblas_set_num_threads(1);
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CpuBackend::Allocate(size_t bytes) {
  auto memory = HostBuffer::Allocate(bytes);
  if (!memory.ok()) return memory.status();
  return std::make_unique<CpuBuffer>(std::move(memory).value());
}

void CpuBackend::CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes > 0) std::memcpy(device_dst, host_src, bytes);
}

void CpuBackend::CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, device_src, bytes);
}

absl::StatusOr<Weight> CpuBackend::ImportWeight(const void* host, DType dtype, int64_t rows,
                                                int64_t cols) {
  Weight weight;
  weight.data = host;
  weight.dtype = dtype;
  weight.rows = rows;
  weight.cols = cols;
  return weight;
}

void CpuBackend::MatMul(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  matmul_.Run(x, n, w, bias, y);
}

void CpuBackend::MatMulMany(const float* x, int64_t n, std::span<const MatMulOutput> outputs) {
  std::vector<cpu::CpuMatMul::Output> targets;
  targets.reserve(outputs.size());
  for (const MatMulOutput& o : outputs) targets.push_back({o.w, o.bias, o.y});
  matmul_.RunMany(x, n, targets);
}

void CpuBackend::RmsNorm(const float* x, int64_t n, int64_t d, const float* weight, float eps,
                         float* out) {
  cpu::RmsNorm(pool_, x, n, d, weight, eps, out);
}

void CpuBackend::AddRmsNorm(float* residual, const float* delta, int64_t n, int64_t d,
                            const float* weight, float eps, float* out) {
  cpu::AddRmsNorm(pool_, residual, delta, n, d, weight, eps, out);
}

void CpuBackend::Rope(float* x, int64_t n, int32_t num_heads, int32_t head_dim,
                      const int32_t* positions, const float* cos, const float* sin) {
  cpu::Rope(pool_, x, n, num_heads, head_dim, positions, cos, sin);
}

void CpuBackend::SiluMul(const float* gate, const float* up, int64_t count, float* out) {
  cpu::SiluMul(pool_, gate, up, count, out);
}

void CpuBackend::Add(const float* a, const float* b, int64_t count, float* out) {
  cpu::Add(pool_, a, b, count, out);
}

void CpuBackend::Embedding(const Weight& table, int64_t first_id, const int32_t* ids, int64_t n,
                           float* out) {
  cpu::Embedding(pool_, table, first_id, ids, n, out);
}

void CpuBackend::GatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m,
                            float* dst) {
  cpu::GatherRows(src, d, rows, m, dst);
}

void CpuBackend::AppendKv(const KvCacheLayer& cache, const AttentionParams& params, const float* k,
                          const float* v, const int32_t* slots, int64_t n) {
  cpu::AppendKv(cache, params, k, v, slots, n);
}

void CpuBackend::PagedAttention(const float* q, const AttentionBatch& batch,
                                const KvCacheLayer& cache, const AttentionParams& params,
                                float* out) {
  attention_.Run(q, batch, cache, params, out);
}

}  // namespace strata::backend
