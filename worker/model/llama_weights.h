// The tensors a Llama-family checkpoint holds (Hugging Face names and
// shapes), derived from the config: the single list that loading, random
// weights and tests agree on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/parallel_config.h"
#include "worker/model/model_config.h"
#include "worker/model/model_shard.h"

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

// The part of a tensor one shard holds: rows `rows` and columns `cols` of a
// matrix [out, in]; for a vector [n], elements `rows` (cols is {0, 1}).
struct ShardTensor {
  size_t spec_index = 0;  // into LlamaTensorSpecs(config)
  parallel::IndexRange rows;
  parallel::IndexRange cols;
};

// The tensors `shard` needs, in LlamaTensorSpecs order, with their slices:
// q/k/v (and biases) by head rows, o by head columns, gate/up by MLP rows,
// down by MLP columns, embedding and LM head by vocabulary rows, norms whole.
// The first stage holds the embedding, the last the final norm and the LM
// head (the embedding's slice when tied; an untied model's LM head is listed
// as optional, and the loader falls back to the embedding when it is absent).
std::vector<ShardTensor> LlamaShardTensors(const ModelConfig& config,
                                           const std::vector<TensorSpec>& specs,
                                           const ModelShard& shard);

}  // namespace strata::model
