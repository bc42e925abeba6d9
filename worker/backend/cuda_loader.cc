#include "worker/backend/cuda_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strata::backend {
namespace {

constexpr char kModuleName[] = "libstrata_backend_cuda.so";

// The entry points of cuda/cuda_plugin.cc.
using DeviceCountFn = int (*)(std::string* error);
using CreateFn = Backend* (*)(int device, bool step_graphs, std::string* description,
                              std::string* error);

struct Module {
  DeviceCountFn device_count = nullptr;
  CreateFn create = nullptr;
  std::string path;
  absl::Status status;  // why it could not be opened, if it could not
};

std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* explicit_path = std::getenv("STRATA_CUDA_BACKEND");
      explicit_path != nullptr && *explicit_path != '\0') {
    paths.push_back(explicit_path);
    return paths;  // an explicit choice is the only one tried
  }
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    paths.push_back((exe.parent_path() / kModuleName).string());
    paths.push_back((exe.parent_path().parent_path() / "lib" / kModuleName).string());
  }
#ifdef STRATA_CUDA_BACKEND_BUILD_PATH
  paths.push_back(STRATA_CUDA_BACKEND_BUILD_PATH);
#endif
  return paths;
}

const Module& OpenModule() {
  static const Module* module = [] {
    auto* m = new Module;
    const std::vector<std::string> candidates = Candidates();
    for (const std::string& path : candidates) {
      if (!std::filesystem::exists(path)) continue;
      // RTLD_LOCAL: cuBLAS and the CUDA runtime stay out of the global
      // symbol scope; nothing else in the process binds to them.
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        m->status = absl::UnavailableError(
            absl::StrCat("cannot open the CUDA backend ", path, ": ", dlerror()));
        return m;
      }
      m->device_count = reinterpret_cast<DeviceCountFn>(dlsym(handle, "strata_cuda_device_count"));
      m->create = reinterpret_cast<CreateFn>(dlsym(handle, "strata_create_cuda_backend"));
      if (m->device_count == nullptr || m->create == nullptr) {
        m->status = absl::UnavailableError(
            absl::StrCat(path, " is not a Strata CUDA backend module (entry points missing)"));
        return m;
      }
      m->path = path;
      return m;
    }
    m->status = absl::UnavailableError(
        absl::StrCat("this installation has no CUDA backend (", kModuleName, " not found in: ",
                     candidates.empty() ? "no candidate folder" : absl::StrJoin(candidates, ", "),
                     "; set STRATA_CUDA_BACKEND to its path)"));
    return m;
  }();
  return *module;
}

}  // namespace

absl::StatusOr<int> CudaDeviceCount() {
  const Module& module = OpenModule();
  if (!module.status.ok()) return module.status;
  std::string error;
  const int count = module.device_count(&error);
  if (count < 0) return absl::UnavailableError(error);
  if (count == 0) return absl::UnavailableError("CUDA sees no device");
  return count;
}

absl::StatusOr<LoadedCudaBackend> LoadCudaBackend(const CudaLoadOptions& options) {
  const Module& module = OpenModule();
  if (!module.status.ok()) return module.status;
  std::string description;
  std::string error;
  Backend* backend = module.create(options.device, options.step_graphs, &description, &error);
  if (backend == nullptr) return absl::UnavailableError(error);
  LoadedCudaBackend loaded;
  loaded.backend.reset(backend);
  loaded.device_description = std::move(description);
  loaded.module_path = module.path;
  return loaded;
}

}  // namespace strata::backend
