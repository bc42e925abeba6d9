#include "worker/model/llama_weights.h"

#include "absl/strings/match.h"
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

std::vector<ShardTensor> LlamaShardTensors(const ModelConfig& config,
                                           const std::vector<TensorSpec>& specs,
                                           const ModelShard& shard) {
  using parallel::IndexRange;
  const int64_t head_dim = config.head_dim;
  const IndexRange q_rows{shard.tensor.attention_heads.begin * head_dim,
                          shard.tensor.attention_heads.end * head_dim};
  const IndexRange kv_rows{shard.tensor.kv_heads.begin * head_dim,
                           shard.tensor.kv_heads.end * head_dim};
  const IndexRange mlp = shard.tensor.intermediate;
  const IndexRange vocab = shard.tensor.vocab;
  const std::string layer_prefix = "model.layers.";
  std::vector<ShardTensor> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    const IndexRange all_rows{0, spec.shape[0]};
    const IndexRange all_cols{0, spec.shape.size() == 2 ? spec.shape[1] : 1};
    auto add = [&](IndexRange rows, IndexRange cols) { out.push_back({i, rows, cols}); };
    if (spec.name == "model.embed_tokens.weight") {
      if (shard.first_stage() || (shard.last_stage() && config.tie_word_embeddings)) {
        add(vocab, all_cols);
      }
    } else if (spec.name == "model.norm.weight") {
      if (shard.last_stage()) add(all_rows, all_cols);
    } else if (spec.name == "lm_head.weight") {
      if (shard.last_stage()) add(vocab, all_cols);
    } else if (absl::StartsWith(spec.name, layer_prefix)) {
      const int layer = std::stoi(spec.name.substr(layer_prefix.size()));
      if (!shard.layers.Contains(layer)) continue;
      const auto has = [&](const char* suffix) { return absl::EndsWith(spec.name, suffix); };
      if (has("q_proj.weight") || has("q_proj.bias")) {
        add(q_rows, all_cols);
      } else if (has("k_proj.weight") || has("v_proj.weight") || has("k_proj.bias") ||
                 has("v_proj.bias")) {
        add(kv_rows, all_cols);
      } else if (has("o_proj.weight")) {
        add(all_rows, q_rows);
      } else if (has("gate_proj.weight") || has("up_proj.weight")) {
        add(mlp, all_cols);
      } else if (has("down_proj.weight")) {
        add(all_rows, mlp);
      } else {
        add(all_rows, all_cols);  // the layer's norms
      }
    }
  }
  return out;
}

}  // namespace strata::model
