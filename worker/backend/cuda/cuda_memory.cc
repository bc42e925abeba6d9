#include "worker/backend/cuda/cuda_memory.h"

#include "absl/strings/str_cat.h"

namespace strata::backend::cuda {

absl::Status CudaStatus(cudaError_t error, const std::string& what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error));
  switch (error) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return absl::UnavailableError(message);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<std::unique_ptr<CudaDeviceBuffer>> CudaDeviceBuffer::Allocate(size_t bytes,
                                                                             cudaStream_t stream) {
  void* data = nullptr;
  if (bytes > 0) {
    if (absl::Status s =
            CudaStatus(cudaMalloc(&data, bytes), absl::StrCat("cudaMalloc(", bytes, " bytes)"));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CudaStatus(cudaMemsetAsync(data, 0, bytes, stream), "cudaMemsetAsync");
        !s.ok()) {
      cudaFree(data);
      return s;
    }
  }
  return std::unique_ptr<CudaDeviceBuffer>(new CudaDeviceBuffer(data, bytes));
}

CudaDeviceBuffer::~CudaDeviceBuffer() {
  // cudaFree synchronises the device, so no queued op still uses the memory.
  if (data_ != nullptr) cudaFree(data_);
}

absl::StatusOr<CudaStream> CudaStream::Create() {
  cudaStream_t stream = nullptr;
  if (absl::Status s =
          CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
      !s.ok()) {
    return s;
  }
  return CudaStream(stream);
}

CudaStream::~CudaStream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

}  // namespace strata::backend::cuda
