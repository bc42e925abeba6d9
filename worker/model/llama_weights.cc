#include "worker/model/llama_weights.h"

#include "absl/strings/str_cat.h"

namespace strata::model {

std::string LayerTensorName(int layer, const char* suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

std::vector<TensorSpec> LlamaTensorSpecs(const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t q_dim = static_cast<int64_t>(config.num_attention_heads) * config.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(config.num_key_value_heads) * config.head_dim;
  const int64_t inter = config.intermediate_size;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {config.vocab_size, hidden}});
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    specs.push_back({LayerTensorName(l, "input_layernorm.weight"), {hidden}});
    specs.push_back({LayerTensorName(l, "self_attn.q_proj.weight"), {q_dim, hidden}});
    specs.push_back({LayerTensorName(l, "self_attn.k_proj.weight"), {kv_dim, hidden}});
    specs.push_back({LayerTensorName(l, "self_attn.v_proj.weight"), {kv_dim, hidden}});
    if (config.attention_bias) {
      specs.push_back({LayerTensorName(l, "self_attn.q_proj.bias"), {q_dim}});
      specs.push_back({LayerTensorName(l, "self_attn.k_proj.bias"), {kv_dim}});
      specs.push_back({LayerTensorName(l, "self_attn.v_proj.bias"), {kv_dim}});
    }
    specs.push_back({LayerTensorName(l, "self_attn.o_proj.weight"), {hidden, q_dim}});
    specs.push_back({LayerTensorName(l, "post_attention_layernorm.weight"), {hidden}});
    specs.push_back({LayerTensorName(l, "mlp.gate_proj.weight"), {inter, hidden}});
    specs.push_back({LayerTensorName(l, "mlp.up_proj.weight"), {inter, hidden}});
    specs.push_back({LayerTensorName(l, "mlp.down_proj.weight"), {hidden, inter}});
  }
  specs.push_back({"model.norm.weight", {hidden}});
  if (!config.tie_word_embeddings) {
    specs.push_back({"lm_head.weight", {config.vocab_size, hidden}, /*optional=*/true});
  }
  return specs;
}

}  // namespace strata::model
