#include "worker/model/model_shard.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace strata::model {

parallel::ModelDims DimsOf(const ModelConfig& config) {
  parallel::ModelDims dims;
  dims.num_hidden_layers = config.num_hidden_layers;
  dims.num_attention_heads = config.num_attention_heads;
  dims.num_key_value_heads = config.num_key_value_heads;
  dims.intermediate_size = config.intermediate_size;
  dims.vocab_size = config.vocab_size;
  return dims;
}

ModelShard ModelShard::Whole(const ModelConfig& config) {
  ModelShard shard;
  shard.layers = {0, config.num_hidden_layers};
  shard.tensor = parallel::ComputeTensorShard(DimsOf(config), /*tp=*/1, /*tp_rank=*/0);
  return shard;
}

absl::StatusOr<ModelShard> ModelShard::ForRank(const ModelConfig& config,
                                               const parallel::ParallelConfig& parallel,
                                               std::span<const int> pp_layers) {
  const parallel::ModelDims dims = DimsOf(config);
  STRATA_RETURN_IF_ERROR(parallel::ValidateModelForParallelism(dims, parallel.tp(), parallel.pp()));
  STRATA_ASSIGN_OR_RETURN(
      std::vector<parallel::IndexRange> stages,
      parallel::SplitLayers(config.num_hidden_layers, parallel.pp(), pp_layers));
  ModelShard shard;
  shard.tp = parallel.tp();
  shard.tp_rank = parallel.tp_rank();
  shard.pp = parallel.pp();
  shard.stage = parallel.stage();
  shard.layers = stages[shard.stage];
  shard.tensor = parallel::ComputeTensorShard(dims, shard.tp, shard.tp_rank);
  return shard;
}

std::string ModelShard::DebugString() const {
  auto range = [](const parallel::IndexRange& r) {
    return absl::StrCat("[", r.begin, ", ", r.end, ")");
  };
  return absl::StrCat("stage ", stage, "/", pp, " layers ", range(layers), ", tp_rank ", tp_rank,
                      "/", tp, " heads ", range(tensor.attention_heads), " kv heads ",
                      range(tensor.kv_heads), tensor.kv_heads_replicated ? " (replicated)" : "",
                      " mlp columns ", range(tensor.intermediate), " vocab ", range(tensor.vocab));
}

uint64_t KvBytesPerToken(const ModelConfig& config, const ModelShard& shard) {
  return static_cast<uint64_t>(shard.layers.size()) * 2 *
         static_cast<uint64_t>(shard.tensor.kv_heads.size()) * config.head_dim * sizeof(float);
}

int32_t DefaultKvBlocks(const ModelConfig& config, const ModelShard& shard, int32_t block_size) {
  constexpr uint64_t kDefaultKvBudgetBytes = 8ull << 30;
  const uint64_t token_bytes = std::max<uint64_t>(1, KvBytesPerToken(config, shard));
  uint64_t tokens = static_cast<uint64_t>(config.max_position_embeddings) * 4;
  if (tokens * token_bytes > kDefaultKvBudgetBytes) {
    tokens = std::max<uint64_t>(block_size, kDefaultKvBudgetBytes / token_bytes);
  }
  return static_cast<int32_t>((tokens + block_size - 1) / block_size);
}

}  // namespace strata::model
