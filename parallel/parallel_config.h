// Rank arithmetic of one replica cut into tp × pp shards, in one place.
//
// A replica has world_size = tp · pp ranks; rank = stage · tp + tp_rank. Rank 0
// is the leader (gRPC endpoint, scheduler) and also the (stage 0, tp 0) shard.
// Stage s holds a contiguous range of decoder layers; the tp ranks of a stage
// split attention heads, MLP columns and the vocabulary (Megatron-style).
// Pipeline links join ranks with the same tp_rank in neighbouring stages.
//
// Everything here is a pure function of (tp, pp, rank) and the model's sizes:
// value types, safe to copy and to use from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata::parallel {

// A half-open range [begin, end) of indices (layers, heads, columns, vocab ids).
struct IndexRange {
  int64_t begin = 0;
  int64_t end = 0;

  int64_t size() const { return end - begin; }
  bool Contains(int64_t i) const { return i >= begin && i < end; }
  bool operator==(const IndexRange&) const = default;
};

// The sizes of a model that decide how it can be sharded. Filled by the caller
// from the model's config (this layer does not depend on worker/model).
struct ModelDims {
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
};

// What one tensor-parallel rank holds of each layer.
struct TensorShard {
  IndexRange attention_heads;        // query heads (and o_proj input columns / head_dim)
  IndexRange kv_heads;               // key/value heads; size 1 and shared when replicated
  bool kv_heads_replicated = false;  // tp > num_key_value_heads
  IndexRange intermediate;           // gate/up rows, down_proj columns
  IndexRange vocab;                  // embedding rows and lm_head rows
};

class ParallelConfig {
 public:
  // Fails with INVALID_ARGUMENT when tp < 1, pp < 1 or rank is outside [0, tp·pp).
  static absl::StatusOr<ParallelConfig> Create(int tp, int pp, int rank);

  int tp() const { return tp_; }
  int pp() const { return pp_; }
  int rank() const { return rank_; }
  int world_size() const { return tp_ * pp_; }
  int stage() const { return StageOf(rank_); }
  int tp_rank() const { return TpRankOf(rank_); }

  static constexpr int kLeaderRank = 0;
  bool is_leader() const { return rank_ == kLeaderRank; }
  bool is_first_stage() const { return stage() == 0; }
  bool is_last_stage() const { return stage() == pp_ - 1; }

  // REQUIRES: 0 <= rank < world_size().
  int StageOf(int rank) const { return rank / tp_; }
  int TpRankOf(int rank) const { return rank % tp_; }
  // REQUIRES: 0 <= stage < pp, 0 <= tp_rank < tp.
  int RankOf(int stage, int tp_rank) const { return stage * tp_ + tp_rank; }

  // The tp ranks of `stage`, in tp_rank order (group rank = tp_rank).
  std::vector<int> TensorParallelGroupRanks(int stage) const;
  std::vector<int> MyTensorParallelGroup() const { return TensorParallelGroupRanks(stage()); }
  // All ranks, in rank order.
  std::vector<int> WorldRanks() const;

  // The rank with my tp_rank in the previous / next stage; nullopt at the ends.
  std::optional<int> PreviousStageRank() const;
  std::optional<int> NextStageRank() const;

  // "tp=2 pp=2 rank=3 (stage 1, tp_rank 1)".
  std::string DebugString() const;

 private:
  ParallelConfig(int tp, int pp, int rank) : tp_(tp), pp_(pp), rank_(rank) {}
  int tp_;
  int pp_;
  int rank_;
};

// Checks up front that a model can be cut into tp × pp shards: heads divisible
// by tp; KV heads divisible by tp, or tp a multiple of the KV heads (then each
// KV head is replicated on tp / kv ranks); at least one layer per stage. The
// MLP columns and the vocabulary may split unevenly (BalancedSplit), since
// their partial results are summed or gathered; each rank needs at least one.
absl::Status ValidateModelForParallelism(const ModelDims& dims, int tp, int pp);

// Layer counts per stage. Empty `explicit_counts` means the default even split:
// floor(L / pp) each, with the remainder given one layer at a time to the
// stages before the last (the last stage also runs the lm_head), so 5 layers
// over 3 stages is {2, 2, 1}. Explicit counts must be pp positive numbers that
// sum to num_layers.
absl::StatusOr<std::vector<IndexRange>> SplitLayers(int64_t num_layers, int pp,
                                                    std::span<const int> explicit_counts = {});

// Parses "--pp-layers" text: comma-separated positive integers, e.g. "2,3".
absl::StatusOr<std::vector<int>> ParseLayerCounts(const std::string& text);

// Balanced split of `total` items into `parts`: the first total % parts parts
// get one extra. REQUIRES: parts >= 1, 0 <= index < parts, total >= 0.
IndexRange BalancedSplit(int64_t total, int parts, int index);

// The heads, columns and vocabulary that tensor-parallel rank `tp_rank` holds.
// REQUIRES: ValidateModelForParallelism(dims, tp, any pp) is OK.
TensorShard ComputeTensorShard(const ModelDims& dims, int tp, int tp_rank);

}  // namespace strata::parallel
