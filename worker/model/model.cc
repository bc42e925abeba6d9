#include "worker/model/model.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/process_memory.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/backend/cpu/cpu_backend.h"
#include "worker/backend/cuda_loader.h"
#include "worker/model/llama_model.h"

namespace strata::model {
namespace {

// "cuda" when the CUDA backend module is installed and sees a device, else
// "cpu".
std::string AutoDevice() { return backend::CudaDeviceCount().ok() ? "cuda" : "cpu"; }

// The backend options.device names, and a line describing it for the log.
absl::StatusOr<std::unique_ptr<backend::Backend>> CreateBackend(const LoadOptions& options,
                                                                std::string& description) {
  if (options.device == "auto") {
    LoadOptions resolved = options;
    resolved.device = AutoDevice();
    return CreateBackend(resolved, description);
  }
  if (options.device == "cpu") {
    backend::CpuBackendOptions backend_options;
    backend_options.num_threads = options.num_threads;
    backend_options.use_avx512 = options.use_avx512;
    auto cpu = std::make_unique<backend::CpuBackend>(backend_options);
    description = absl::StrCat("cpu backend, ", cpu->num_threads(), " threads, ",
                               std::string(cpu->kernel_isa()), " kernels");
    return cpu;
  }
  if (options.device == "cuda") {
    backend::CudaLoadOptions backend_options;
    backend_options.device = options.cuda_device;
    backend_options.step_graphs = options.cuda_graphs;
    STRATA_ASSIGN_OR_RETURN(backend::LoadedCudaBackend cuda,
                            backend::LoadCudaBackend(backend_options));
    description = absl::StrCat("cuda backend on device ", options.cuda_device, " (",
                               cuda.device_description, "), step graphs ",
                               options.cuda_graphs ? "on" : "off", ", from ", cuda.module_path);
    return std::move(cuda.backend);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device must be 'cpu', 'cuda' or 'auto', got '", options.device, "'"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  STRATA_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromDirectory(options.model_dir));
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be >= 0, got ", options.num_threads));
  }
  std::string backend_description;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<backend::Backend> backend,
                          CreateBackend(options, backend_description));
  spdlog::info("loading {} from {}{} ({} layers, hidden {}, {} heads / {} KV heads, vocab {})",
               config.architecture, options.model_dir,
               options.random_weights ? " with random weights" : "", config.num_hidden_layers,
               config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
               config.vocab_size);
  // Every supported architecture is a Llama variant (ModelConfig refuses others).
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::Create(config, options, std::move(backend)));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info(
      "model loaded in {:.2f} s: {:.1f}M parameters, {} weights ({}), KV cache {} blocks x {} "
      "tokens; {}; resident memory {}",
      seconds, static_cast<double>(config.ParameterCount()) / 1e6,
      std::string(DTypeName(model->weight_dtype())), HumanBytes(model->weight_bytes()),
      model->kv_num_blocks(), model->kv_block_size(), backend_description,
      HumanBytes(ResidentMemoryBytes()));
  return model;
}

}  // namespace strata::model
