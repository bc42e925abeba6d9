#include "worker/model/model.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/process_memory.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/backend/cpu/cpu_backend.h"
#include "worker/model/llama_model.h"

namespace strata::model {

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  STRATA_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromDirectory(options.model_dir));
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be >= 0, got ", options.num_threads));
  }
  backend::CpuBackendOptions backend_options;
  backend_options.num_threads = options.num_threads;
  backend_options.use_avx512 = options.use_avx512;
  auto cpu = std::make_unique<backend::CpuBackend>(backend_options);
  const int threads = cpu->num_threads();
  const std::string isa(cpu->kernel_isa());
  spdlog::info("loading {} from {}{} ({} layers, hidden {}, {} heads / {} KV heads, vocab {})",
               config.architecture, options.model_dir,
               options.random_weights ? " with random weights" : "", config.num_hidden_layers,
               config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
               config.vocab_size);
  // Every supported architecture is a Llama variant (ModelConfig refuses others).
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::Create(config, options, std::move(cpu)));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info(
      "model loaded in {:.2f} s: {:.1f}M parameters, {} weights ({}), KV cache {} blocks x {} "
      "tokens; cpu backend, {} threads, {} kernels; resident memory {}",
      seconds, static_cast<double>(config.ParameterCount()) / 1e6,
      std::string(DTypeName(model->weight_dtype())), HumanBytes(model->weight_bytes()),
      model->kv_num_blocks(), model->kv_block_size(), threads, isa,
      HumanBytes(ResidentMemoryBytes()));
  return model;
}

}  // namespace strata::model
