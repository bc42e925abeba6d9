// Opens the CUDA backend module (libstrata_backend_cuda.so, built where CUDA
// was found) at run time, so that a worker links no CUDA library and loads
// cuBLAS only when it runs on a GPU (see cuda/cuda_plugin.cc for why).
//
// The module is looked for, in order: $STRATA_CUDA_BACKEND (a file), next to
// the executable, in ../lib beside the executable's folder (an installed
// layout: bin/strata-worker, lib/libstrata_backend_cuda.so), and at the path
// the build tree put it in. It is opened once per process and never closed.
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/backend/backend.h"

namespace strata::backend {

struct CudaLoadOptions {
  int device = 0;           // CUDA device ordinal
  bool step_graphs = true;  // CudaBackendOptions::step_graphs
};

struct LoadedCudaBackend {
  std::unique_ptr<Backend> backend;
  std::string device_description;  // e.g. "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB"
  std::string module_path;         // the module that was opened
};

// UNAVAILABLE when no module is found or it cannot be opened (the message
// lists where it looked, or dlerror), or when CUDA sees no usable device.
absl::StatusOr<LoadedCudaBackend> LoadCudaBackend(const CudaLoadOptions& options);

// The number of visible CUDA devices; UNAVAILABLE as above, or when there are
// none.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace strata::backend
