// The tensors a Llama-family checkpoint holds (Hugging Face names and
// shapes), derived from the config: the single list that loading, random
// weights and tests agree on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/model/model_config.h"

namespace strata::model {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // [out, in] for matrices, [n] for norms and biases
  // lm_head.weight of an untied model may be absent (embed_tokens is reused).
  bool optional = false;
};

// In file order: embed_tokens, per layer (input_layernorm, q/k/v(+bias)/o,
// post_attention_layernorm, gate/up/down), norm, lm_head (untied only).
std::vector<TensorSpec> LlamaTensorSpecs(const ModelConfig& config);

std::string LayerTensorName(int layer, const char* suffix);  // "model.layers.3.<suffix>"

}  // namespace strata::model
