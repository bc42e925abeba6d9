// The CUDA backend as a loadable module (libstrata_backend_cuda.so), opened
// by backend::LoadCudaBackend (worker/backend/cuda_loader.h) only when a
// worker runs on a GPU. Linking cuBLAS into the worker instead would load
// libcublasLt at process start, and a process that starts that way cannot
// start prometheus-cpp's CivetServer ("null context when constructing
// CivetServer"); opened later with dlopen, both work.
//
// The entry points are C symbols with the signatures of cuda_loader.cc's
// function pointer types; C++ objects cross the boundary, which is sound
// because the module is built by the same compiler and standard library as
// the worker, and it is never unloaded.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/backend/cuda/cuda_backend.h"

extern "C" {

// The number of visible devices, or -1 with `error` set.
__attribute__((visibility("default"))) int strata_cuda_device_count(std::string* error) {
  const absl::StatusOr<int> count = strata::backend::CudaBackend::DeviceCount();
  if (!count.ok()) {
    *error = std::string(count.status().message());
    return -1;
  }
  return *count;
}

// A new backend (owned by the caller), or nullptr with `error` set.
__attribute__((visibility("default"))) strata::backend::Backend* strata_create_cuda_backend(
    int device, bool step_graphs, std::string* description, std::string* error) {
  strata::backend::CudaBackendOptions options;
  options.device = device;
  options.step_graphs = step_graphs;
  absl::StatusOr<std::unique_ptr<strata::backend::CudaBackend>> backend =
      strata::backend::CudaBackend::Create(options);
  if (!backend.ok()) {
    *error = std::string(backend.status().message());
    return nullptr;
  }
  *description = (*backend)->device_description();
  return backend->release();
}

}  // extern "C"
