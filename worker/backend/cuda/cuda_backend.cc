#include "worker/backend/cuda/cuda_backend.h"

#include <cstddef>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/backend/cuda/kernels.h"

namespace strata::backend {
namespace {

using cuda::CudaDeviceBuffer;
using cuda::CudaStatus;
using cuda::ElementType;

static_assert(sizeof(cuda::SequenceDesc) == sizeof(AttentionSequence));
static_assert(offsetof(cuda::SequenceDesc, first_token) ==
              offsetof(AttentionSequence, first_token));
static_assert(offsetof(cuda::SequenceDesc, num_tokens) == offsetof(AttentionSequence, num_tokens));
static_assert(offsetof(cuda::SequenceDesc, context_len) ==
              offsetof(AttentionSequence, context_len));
static_assert(offsetof(cuda::SequenceDesc, block_table_offset) ==
              offsetof(AttentionSequence, block_table_offset));

// cuBLAS asks for up to 32 MiB on Hopper; a fixed workspace keeps it from
// allocating during a step (and makes the stream capturable).
constexpr size_t kCublasWorkspaceBytes = 32u << 20;

ElementType ToElementType(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return ElementType::kF16;
    case DType::kBF16:
      return ElementType::kBF16;
    case DType::kF32:
      break;
  }
  return ElementType::kF32;
}

absl::Status CublasStatus(cublasStatus_t status, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cublasGetStatusName(status), ": ", cublasGetStatusString(status)));
}

// The launch error of the kernel just launched, naming the op.
absl::Status LaunchStatus(const char* what) {
  return CudaStatus(cudaGetLastError(), absl::StrCat(what, " kernel launch"));
}

// An op's identity for step graphs: its name and its arguments' bytes.
template <typename... Args>
std::string Key(const char* op, const Args&... args) {
  std::string key(op);
  (key.append(reinterpret_cast<const char*>(&args), sizeof(args)), ...);
  return key;
}

}  // namespace

absl::StatusOr<int> CudaBackend::DeviceCount() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return absl::UnavailableError(absl::StrCat("no usable CUDA device: ", cudaGetErrorName(error),
                                               ": ", cudaGetErrorString(error)));
  }
  if (count == 0) return absl::UnavailableError("no CUDA device is visible");
  return count;
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const CudaBackendOptions& options) {
  absl::StatusOr<int> count = DeviceCount();
  if (!count.ok()) return count.status();
  if (options.device < 0 || options.device >= *count) {
    return absl::UnavailableError(absl::StrCat("CUDA device ", options.device, " requested, but ",
                                               *count, " device(s) are visible"));
  }
  if (absl::Status s = CudaStatus(cudaSetDevice(options.device), "cudaSetDevice"); !s.ok()) {
    return s;
  }
  cudaDeviceProp properties{};
  if (absl::Status s = CudaStatus(cudaGetDeviceProperties(&properties, options.device),
                                  "cudaGetDeviceProperties");
      !s.ok()) {
    return s;
  }
  const std::string description =
      absl::StrFormat("%s, sm_%d%d, %.1f GiB", properties.name, properties.major, properties.minor,
                      static_cast<double>(properties.totalGlobalMem) / (1 << 30));
  absl::StatusOr<cuda::CudaStream> stream = cuda::CudaStream::Create();
  if (!stream.ok()) return stream.status();
  cublasHandle_t cublas = nullptr;
  if (absl::Status s = CublasStatus(cublasCreate(&cublas), "cublasCreate"); !s.ok()) return s;
  auto workspace = CudaDeviceBuffer::Allocate(kCublasWorkspaceBytes, stream->get());
  absl::Status setup = workspace.status();
  if (setup.ok()) setup = CublasStatus(cublasSetStream(cublas, stream->get()), "cublasSetStream");
  if (setup.ok()) {
    setup = CublasStatus(cublasSetWorkspace(cublas, (*workspace)->data(), kCublasWorkspaceBytes),
                         "cublasSetWorkspace");
  }
  if (setup.ok()) {
    setup = CublasStatus(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  if (!setup.ok()) {
    cublasDestroy(cublas);
    return setup;
  }
  return std::unique_ptr<CudaBackend>(new CudaBackend(options.device, *std::move(stream), cublas,
                                                      *std::move(workspace), description,
                                                      options.step_graphs));
}

CudaBackend::CudaBackend(int device, cuda::CudaStream stream, cublasHandle_t cublas,
                         std::unique_ptr<cuda::CudaDeviceBuffer> workspace, std::string description,
                         bool step_graphs)
    : device_(device),
      stream_(std::move(stream)),
      cublas_(cublas),
      cublas_workspace_(std::move(workspace)),
      description_(std::move(description)) {
  if (step_graphs) graphs_ = std::make_unique<cuda::StepGraphs>(stream_.get());
}

CudaBackend::~CudaBackend() {
  MakeCurrent();
  FlushRecorded();
  graphs_.reset();
  cudaStreamSynchronize(stream_.get());
  cublasDestroy(cublas_);
}

void CudaBackend::MakeCurrent() {
  // Cheap when already current; needed when the caller's thread changed.
  cudaSetDevice(device_);
}

void CudaBackend::Fail(absl::Status status) {
  if (error_.ok() && !status.ok()) error_ = std::move(status);
}

void CudaBackend::Issue(std::string key, cuda::StepGraphs::Launcher launch) {
  MakeCurrent();
  if (graphs_ != nullptr) {
    graphs_->AddOp(key, std::move(launch));
  } else {
    Fail(launch(stream_.get()));
  }
}

void CudaBackend::FlushRecorded() {
  if (graphs_ != nullptr && !graphs_->empty()) Fail(graphs_->Flush());
}

void CudaBackend::SetStepGraphs(bool enabled) {
  MakeCurrent();
  if (enabled == (graphs_ != nullptr)) return;
  FlushRecorded();
  if (enabled) {
    graphs_ = std::make_unique<cuda::StepGraphs>(stream_.get());
  } else {
    graphs_.reset();
  }
}

void* CudaBackend::Scratch(std::unique_ptr<cuda::CudaDeviceBuffer>& buffer, size_t bytes) {
  if (buffer == nullptr || buffer->size_bytes() < bytes) {
    // Recorded ops and cached graphs may use the old buffer.
    FlushRecorded();
    if (graphs_ != nullptr) graphs_->ClearGraphs();
    buffer.reset();
    auto grown = CudaDeviceBuffer::Allocate(bytes, stream_.get());
    if (!grown.ok()) {
      Fail(grown.status());
      return nullptr;
    }
    buffer = *std::move(grown);
  }
  return buffer->data();
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CudaBackend::Allocate(size_t bytes) {
  MakeCurrent();
  FlushRecorded();
  auto buffer = CudaDeviceBuffer::Allocate(bytes, stream_.get());
  if (!buffer.ok()) return buffer.status();
  return std::unique_ptr<DeviceBuffer>(*std::move(buffer));
}

void CudaBackend::CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  MakeCurrent();
  if (graphs_ != nullptr) {
    Fail(graphs_->AddCopyToDevice(device_dst, host_src, bytes));
    return;
  }
  // From pageable memory the source is staged before this returns, so the
  // caller may reuse it at once.
  Fail(CudaStatus(
      cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream_.get()),
      "CopyToDevice"));
}

void CudaBackend::CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return;
  MakeCurrent();
  if (graphs_ != nullptr) {
    Fail(graphs_->AddCopyToHost(host_dst, device_src, bytes));
    return;
  }
  Fail(CudaStatus(
      cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream_.get()),
      "CopyToHost"));
}

absl::StatusOr<Weight> CudaBackend::ImportWeight(const void* host, DType dtype, int64_t rows,
                                                 int64_t cols) {
  if (rows < 0 || cols < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ImportWeight: negative shape [", rows, ", ", cols, "]"));
  }
  MakeCurrent();
  FlushRecorded();
  Weight weight;
  weight.dtype = dtype;
  weight.rows = rows;
  weight.cols = cols;
  auto storage = CudaDeviceBuffer::Allocate(weight.bytes(), stream_.get());
  if (!storage.ok()) return storage.status();
  if (weight.bytes() > 0) {
    if (absl::Status s = CudaStatus(cudaMemcpyAsync((*storage)->data(), host, weight.bytes(),
                                                    cudaMemcpyHostToDevice, stream_.get()),
                                    "ImportWeight");
        !s.ok()) {
      return s;
    }
  }
  weight.data = (*storage)->data();
  weight.storage = *std::move(storage);
  return weight;
}

absl::Status CudaBackend::Synchronize() {
  MakeCurrent();
  FlushRecorded();
  Fail(CudaStatus(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize"));
  return error_;
}

void CudaBackend::Gemv(const float* x, int64_t n, std::span<const MatMulOutput> outputs) {
  cuda::GemvOutputs launch;
  // The key lists the fields one by one (the struct has padding bytes).
  std::string key = Key("gemv", x, n, outputs.front().w->dtype, outputs.front().w->cols);
  for (const MatMulOutput& o : outputs) {
    launch.w[launch.count] = o.w->data;
    launch.bias[launch.count] = o.bias;
    launch.y[launch.count] = o.y;
    launch.rows[launch.count] = o.w->rows;
    ++launch.count;
    key += Key("", o.w->data, o.bias, o.y, o.w->rows);
  }
  const ElementType type = ToElementType(outputs.front().w->dtype);
  const int64_t cols = outputs.front().w->cols;
  Issue(std::move(key), [=](cudaStream_t stream) {
    cuda::LaunchGemv(x, n, launch, type, cols, stream);
    return LaunchStatus("Gemv");
  });
}

void CudaBackend::MatMulMany(const float* x, int64_t n, std::span<const MatMulOutput> outputs) {
  bool one_launch = n > 0 && n <= cuda::kGemvMaxRows && !outputs.empty() &&
                    outputs.size() <= static_cast<size_t>(cuda::kGemvMaxOutputs);
  for (const MatMulOutput& o : outputs) {
    one_launch = one_launch && o.w->dtype == outputs.front().w->dtype &&
                 o.w->cols == outputs.front().w->cols;
  }
  if (!one_launch) {
    Backend::MatMulMany(x, n, outputs);
    return;
  }
  Gemv(x, n, outputs);
}

void CudaBackend::MatMul(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  if (n <= 0 || w.rows == 0) return;
  const ElementType type = ToElementType(w.dtype);
  const void* data = w.data;
  const int64_t rows = w.rows;
  const int64_t cols = w.cols;
  if (n <= cuda::kGemvMaxRows) {
    const MatMulOutput output{&w, bias, y};
    Gemv(x, n, std::span<const MatMulOutput>(&output, 1));
    return;
  }
  void* narrowed = nullptr;
  if (type != ElementType::kF32) {
    // Tensor cores take both operands in the weight's dtype.
    narrowed = Scratch(narrowed_x_, static_cast<size_t>(n) * cols * 2);
    if (narrowed == nullptr) return;
  }
  cublasHandle_t cublas = cublas_;
  Issue(Key("gemm", x, n, data, type, rows, cols, bias, y, narrowed), [=](cudaStream_t stream) {
    // Column-major view: y^T [rows, n] = w [cols, rows]^T · x^T [cols, n].
    const float alpha = 1.0f;
    const float beta = 0.0f;
    const auto m = static_cast<int>(rows);
    const auto k = static_cast<int>(cols);
    const auto columns = static_cast<int>(n);
    cublasStatus_t status;
    if (type == ElementType::kF32) {
      status = cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, columns, k, &alpha, data,
                            CUDA_R_32F, k, x, CUDA_R_32F, k, &beta, y, CUDA_R_32F, m,
                            CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
    } else {
      cuda::LaunchNarrow(x, n * cols, type, narrowed, stream);
      STRATA_RETURN_IF_ERROR(LaunchStatus("Narrow"));
      const cudaDataType_t cuda_type = type == ElementType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
      status = cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, columns, k, &alpha, data,
                            cuda_type, k, narrowed, cuda_type, k, &beta, y, CUDA_R_32F, m,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    STRATA_RETURN_IF_ERROR(CublasStatus(
        status, absl::StrCat("cublasGemmEx [", n, " x ", cols, "] x [", rows, " x ", cols, "]^T")));
    if (bias != nullptr) {
      cuda::LaunchAddBias(y, bias, n, rows, stream);
      return LaunchStatus("AddBias");
    }
    return absl::OkStatus();
  });
}

void CudaBackend::RmsNorm(const float* x, int64_t n, int64_t d, const float* weight, float eps,
                          float* out) {
  Issue(Key("rmsnorm", x, n, d, weight, eps, out), [=](cudaStream_t stream) {
    cuda::LaunchRmsNorm(x, n, d, weight, eps, out, stream);
    return LaunchStatus("RmsNorm");
  });
}

void CudaBackend::AddRmsNorm(float* residual, const float* delta, int64_t n, int64_t d,
                             const float* weight, float eps, float* out) {
  Issue(Key("addrmsnorm", residual, delta, n, d, weight, eps, out), [=](cudaStream_t stream) {
    cuda::LaunchAddRmsNorm(residual, delta, n, d, weight, eps, out, stream);
    return LaunchStatus("AddRmsNorm");
  });
}

void CudaBackend::Rope(float* x, int64_t n, int32_t num_heads, int32_t head_dim,
                       const int32_t* positions, const float* cos, const float* sin) {
  Issue(Key("rope", x, n, num_heads, head_dim, positions, cos, sin), [=](cudaStream_t stream) {
    cuda::LaunchRope(x, n, num_heads, head_dim, positions, cos, sin, stream);
    return LaunchStatus("Rope");
  });
}

void CudaBackend::SiluMul(const float* gate, const float* up, int64_t count, float* out) {
  Issue(Key("silumul", gate, up, count, out), [=](cudaStream_t stream) {
    cuda::LaunchSiluMul(gate, up, count, out, stream);
    return LaunchStatus("SiluMul");
  });
}

void CudaBackend::Add(const float* a, const float* b, int64_t count, float* out) {
  Issue(Key("add", a, b, count, out), [=](cudaStream_t stream) {
    cuda::LaunchAdd(a, b, count, out, stream);
    return LaunchStatus("Add");
  });
}

void CudaBackend::Embedding(const Weight& table, int64_t first_id, const int32_t* ids, int64_t n,
                            float* out) {
  const void* data = table.data;
  const ElementType type = ToElementType(table.dtype);
  const int64_t rows = table.rows;
  const int64_t cols = table.cols;
  Issue(Key("embedding", data, type, rows, cols, first_id, ids, n, out), [=](cudaStream_t stream) {
    cuda::LaunchEmbedding(data, type, rows, cols, first_id, ids, n, out, stream);
    return LaunchStatus("Embedding");
  });
}

void CudaBackend::GatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m,
                             float* dst) {
  Issue(Key("gatherrows", src, d, rows, m, dst), [=](cudaStream_t stream) {
    cuda::LaunchGatherRows(src, d, rows, m, dst, stream);
    return LaunchStatus("GatherRows");
  });
}

void CudaBackend::AppendKv(const KvCacheLayer& cache, const AttentionParams& params, const float* k,
                           const float* v, const int32_t* slots, int64_t n) {
  float* key_cache = cache.key;
  float* value_cache = cache.value;
  const int64_t kv_row = static_cast<int64_t>(params.num_kv_heads) * params.head_dim;
  Issue(Key("appendkv", key_cache, value_cache, kv_row, k, v, slots, n), [=](cudaStream_t stream) {
    cuda::LaunchAppendKv(key_cache, value_cache, kv_row, k, v, slots, n, stream);
    return LaunchStatus("AppendKv");
  });
}

void CudaBackend::PagedAttention(const float* q, const AttentionBatch& batch,
                                 const KvCacheLayer& cache, const AttentionParams& params,
                                 float* out) {
  if (params.head_dim > cuda::kMaxHeadDim || params.head_dim <= 0 || params.num_kv_heads <= 0 ||
      params.num_heads % params.num_kv_heads != 0 || params.block_size <= 0) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: head_dim ", params.head_dim, " (at most ", cuda::kMaxHeadDim,
                     "), ", params.num_heads, " heads over ", params.num_kv_heads,
                     " KV heads, block size ", params.block_size, " not supported")));
    return;
  }
  // The kernels read lengths from device memory, so only the power-of-two
  // bucket of batch.max_context_len (the decode split) enters the key: one
  // graph serves every decode step of a batch size within a bucket.
  cuda::DecodeSplit split;
  float* partials = nullptr;
  if (batch.num_tokens == batch.num_sequences) {
    split = cuda::ChooseDecodeSplit(batch.num_tokens, params.num_heads, batch.max_context_len);
    if (split.partitions > 1) {
      const int64_t floats = cuda::DecodePartialFloats(batch.num_tokens, params.num_heads,
                                                       params.head_dim, split.partitions);
      partials = static_cast<float*>(
          Scratch(attention_partials_, static_cast<size_t>(floats) * sizeof(float)));
      if (partials == nullptr) return;
    }
  }
  const auto* sequences = reinterpret_cast<const cuda::SequenceDesc*>(batch.sequences);
  const int32_t num_sequences = batch.num_sequences;
  const int32_t* tables = batch.block_tables;
  const int32_t num_tokens = batch.num_tokens;
  const float* key_cache = cache.key;
  const float* value_cache = cache.value;
  const AttentionParams p = params;
  Issue(Key("attention", q, sequences, num_sequences, tables, num_tokens, key_cache, value_cache,
            p.num_heads, p.num_kv_heads, p.head_dim, p.block_size, p.scale, out, split.partitions,
            split.span, partials),
        [=](cudaStream_t stream) {
          cuda::LaunchPagedAttention(q, sequences, num_sequences, tables, num_tokens, key_cache,
                                     value_cache, p.num_heads, p.num_kv_heads, p.head_dim,
                                     p.block_size, p.scale, out, split, partials, stream);
          return LaunchStatus("PagedAttention");
        });
}

}  // namespace strata::backend
