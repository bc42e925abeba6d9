// RAII owners of CUDA resources the backend holds: device memory
// (CudaDeviceBuffer, a DeviceBuffer), a stream (CudaStream), and a helper that
// turns a cudaError_t into an absl::Status naming the call that failed.
//
// Thread-safety: plain owners; callers synchronise access.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/backend/backend.h"

namespace strata::backend::cuda {

// OK for cudaSuccess; otherwise INTERNAL "<what>: <cuda error name>: <text>"
// (UNAVAILABLE for "no device" / driver errors, so callers can fall back).
absl::Status CudaStatus(cudaError_t error, const std::string& what);

// Device memory from cudaMalloc, zero-filled on `stream` when allocated
// (ordered before every later op on that stream), freed by the destructor.
class CudaDeviceBuffer final : public DeviceBuffer {
 public:
  static absl::StatusOr<std::unique_ptr<CudaDeviceBuffer>> Allocate(size_t bytes,
                                                                    cudaStream_t stream);
  ~CudaDeviceBuffer() override;
  CudaDeviceBuffer(const CudaDeviceBuffer&) = delete;
  CudaDeviceBuffer& operator=(const CudaDeviceBuffer&) = delete;

  void* data() override { return data_; }
  size_t size_bytes() const override { return size_; }

 private:
  CudaDeviceBuffer(void* data, size_t size) : data_(data), size_(size) {}
  void* data_;
  size_t size_;
};

// A non-blocking stream (does not synchronise with the legacy default stream).
class CudaStream {
 public:
  static absl::StatusOr<CudaStream> Create();
  CudaStream(CudaStream&& other) noexcept : stream_(other.stream_) { other.stream_ = nullptr; }
  CudaStream& operator=(CudaStream&&) = delete;
  CudaStream(const CudaStream&) = delete;
  ~CudaStream();

  cudaStream_t get() const { return stream_; }

 private:
  explicit CudaStream(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_ = nullptr;
};

}  // namespace strata::backend::cuda
