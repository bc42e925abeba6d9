// The CUDA backend: the Backend interface on one NVIDIA GPU.
//
// Weights are uploaded once and kept in their dtype (F32, F16, BF16).
// Matrix products: batches of up to kGemvMaxRows rows (decode) run a
// bandwidth-bound GEMV kernel that widens weights to F32 as it reads them;
// larger batches go to cuBLAS, BF16/F16 weights with x rounded to the same
// dtype on tensor cores (F32 accumulation), F32 weights in FP32 without TF32
// (so F32 models give the CPU backend's results up to summation order).
// Every other op is a kernel of this folder (kernels.h). All work is issued
// in order on the backend's own stream; Synchronize() waits for it. Scratch
// (x narrowed for the GEMMs, partial results of split decode attention)
// grows to the largest step seen and is reused, so steady-state steps
// allocate nothing.
//
// With CudaBackendOptions::step_graphs, ops are recorded and run at
// Synchronize(), repeated steps as CUDA graphs (step_graphs.h). Then
// anything outside the backend that reads or writes its device memory (an
// NCCL collective, a pipeline send) must come after a Synchronize(), as
// LlamaModel does before every collective.
//
// Errors: ops cannot return a status, so the first failure of a launch or an
// allocation is kept and returned by every later Synchronize() (the backend
// is then unusable, like a broken communicator).
//
// Thread-safety: as Backend (one caller thread at a time). The device is
// made current on the calling thread by every public method.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <span>
#include <string>

#include "worker/backend/backend.h"
#include "worker/backend/cuda/cuda_memory.h"
#include "worker/backend/cuda/step_graphs.h"

namespace strata::backend {

struct CudaBackendOptions {
  int device = 0;  // CUDA device ordinal
  // Record ops and replay repeated steps (decode at a given batch size) as
  // CUDA graphs (see cuda/step_graphs.h). Off: every op launches at once.
  bool step_graphs = false;
};

class CudaBackend final : public Backend {
 public:
  // UNAVAILABLE when the runtime sees no device (no driver, no GPU) or the
  // ordinal is out of range; the message says which.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options);
  // The number of visible CUDA devices; UNAVAILABLE when there are none.
  static absl::StatusOr<int> DeviceCount();
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  // "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB".
  const std::string& device_description() const { return description_; }
  // The stream every op runs on (e.g. for NcclOptions::stream).
  cudaStream_t stream() const { return stream_.get(); }
  // Turns step graphs on or off between steps (runs what was recorded).
  void SetStepGraphs(bool enabled);
  // Step graphs launched and captured so far (0 when step_graphs is off).
  int64_t graphs_launched() const { return graphs_ ? graphs_->graphs_launched() : 0; }
  int64_t graphs_captured() const { return graphs_ ? graphs_->graphs_captured() : 0; }

  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) override;
  void CopyToDevice(void* device_dst, const void* host_src, size_t bytes) override;
  void CopyToHost(void* host_dst, const void* device_src, size_t bytes) override;
  absl::StatusOr<Weight> ImportWeight(const void* host, DType dtype, int64_t rows,
                                      int64_t cols) override;
  absl::Status Synchronize() override;

  void MatMul(const float* x, int64_t n, const Weight& w, const float* bias, float* y) override;
  // Decode batches: the products of one x (q, k, v; gate, up) in one GEMV
  // launch; otherwise one MatMul per output.
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
  CudaBackend(int device, cuda::CudaStream stream, cublasHandle_t cublas,
              std::unique_ptr<cuda::CudaDeviceBuffer> workspace, std::string description,
              bool step_graphs);

  // The GEMV kernel over 1 to kGemvMaxOutputs outputs of the same dtype and
  // width. REQUIRES: 0 < n <= kGemvMaxRows.
  void Gemv(const float* x, int64_t n, std::span<const MatMulOutput> outputs);
  // Launches an op now, or records it for the step graph. `key` identifies
  // the op and its arguments; `launch` runs it on the given stream.
  void Issue(std::string key, cuda::StepGraphs::Launcher launch);
  // Runs what step graphs recorded (before allocating or freeing memory).
  void FlushRecorded();

  // Keeps the first error; later ones are usually its consequences.
  void Fail(absl::Status status);
  // `buffer`, grown to at least `bytes` on the device (never shrunk), or
  // nullptr after recording the allocation failure.
  void* Scratch(std::unique_ptr<cuda::CudaDeviceBuffer>& buffer, size_t bytes);
  void MakeCurrent();

  const int device_;
  cuda::CudaStream stream_;
  cublasHandle_t cublas_;
  std::unique_ptr<cuda::CudaDeviceBuffer> cublas_workspace_;
  std::unique_ptr<cuda::CudaDeviceBuffer> narrowed_x_;          // x narrowed for tensor-core GEMMs
  std::unique_ptr<cuda::CudaDeviceBuffer> attention_partials_;  // split decode attention
  std::unique_ptr<cuda::StepGraphs> graphs_;                    // null when step graphs are off
  const std::string description_;
  absl::Status error_;
};

}  // namespace strata::backend
