// What a Hugging Face model folder says about the model: config.json plus the
// generation defaults of generation_config.json.
//
// Supported architectures: LlamaForCausalLM (Llama 2, 3, 3.1/3.2 with
// rope_scaling type "llama3"), MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace strata::model {

struct RopeScaling {
  // "llama3" is the only scaling applied; others are refused at load.
  std::string type;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  std::string model_type;    // e.g. "llama"
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_hidden_layers = 0;
  int32_t num_attention_heads = 0;
  int32_t num_key_value_heads = 0;
  int32_t head_dim = 0;  // hidden_size / num_attention_heads unless given
  int32_t vocab_size = 0;
  int32_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  std::optional<RopeScaling> rope_scaling;
  bool attention_bias = false;  // q/k/v bias (Qwen2: always true)
  bool tie_word_embeddings = false;
  DType torch_dtype = DType::kF32;
  std::optional<int32_t> bos_token_id;
  // Union of config.json and generation_config.json eos ids; generation stops on any.
  std::vector<int32_t> eos_token_ids;

  // Parses config.json text and validates it (positive sizes, heads divide, a
  // supported architecture). `source` names the file in error messages.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& json_text,
                                              const std::string& source);
  // Reads <dir>/config.json and, if present, <dir>/generation_config.json.
  static absl::StatusOr<ModelConfig> FromDirectory(const std::string& dir);

  int64_t ParameterCount() const;
};

}  // namespace strata::model
