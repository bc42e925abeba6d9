// Which part of a model one process holds, and the links its forward pass
// uses to reach the other parts.
//
// A replica of tp × pp ranks: pipeline stage `stage` runs the decoder layers
// `layers`; within a stage, tensor-parallel rank `tp_rank` holds the attention
// heads, KV heads, MLP columns and vocabulary rows of `tensor` (Megatron
// style: q/k/v and gate/up split by output rows, o and down by input columns,
// embedding and LM head by vocabulary rows). The first stage embeds, the last
// one applies the final norm and the LM head. The whole model is tp = pp = 1.
//
// Thread-safety: plain values; the communicators in ShardLinks follow their
// own contract (the model's Forward is their only user).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/parallel_config.h"
#include "worker/model/model_config.h"

namespace strata::model {

struct ModelShard {
  int tp = 1;
  int tp_rank = 0;
  int pp = 1;
  int stage = 0;
  parallel::IndexRange layers;  // decoder layers of this stage
  parallel::TensorShard tensor;

  bool first_stage() const { return stage == 0; }
  bool last_stage() const { return stage == pp - 1; }

  // The whole model in one process.
  static ModelShard Whole(const ModelConfig& config);
  // The shard of `parallel.rank()`. `pp_layers`: layers per stage (empty:
  // even split). Fails, naming the sizes at fault, when the model cannot be
  // cut that way (parallel::ValidateModelForParallelism, SplitLayers).
  static absl::StatusOr<ModelShard> ForRank(const ModelConfig& config,
                                            const parallel::ParallelConfig& parallel,
                                            std::span<const int> pp_layers = {});

  // "stage 1/2 layers [3, 5), tp_rank 0/2 heads [0, 4) kv heads [0, 2) ..."
  std::string DebugString() const;
};

parallel::ModelDims DimsOf(const ModelConfig& config);

// Bytes one token position takes in this shard's KV cache: key and value of
// its layers and KV heads, F32.
uint64_t KvBytesPerToken(const ModelConfig& config, const ModelShard& shard);

// KV blocks of `block_size` tokens when none are asked for: enough for four
// full contexts (max_position_embeddings * 4 tokens), capped at 8 GiB of this
// shard's cache.
int32_t DefaultKvBlocks(const ModelConfig& config, const ModelShard& shard, int32_t block_size);

// The communicators a sharded forward pass uses; each is null where the shard
// has no such neighbour (tp = 1, first or last stage).
struct ShardLinks {
  parallel::Communicator* tensor_parallel = nullptr;  // this stage's TP group
  // Pipeline links (two-rank groups: the lower stage is group rank 0).
  parallel::Communicator* previous_stage = nullptr;
  parallel::Communicator* next_stage = nullptr;
};

}  // namespace strata::model
