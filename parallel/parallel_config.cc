#include "parallel/parallel_config.h"

#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strata::parallel {

absl::StatusOr<ParallelConfig> ParallelConfig::Create(int tp, int pp, int rank) {
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("tp must be >= 1, got ", tp));
  if (pp < 1) return absl::InvalidArgumentError(absl::StrCat("pp must be >= 1, got ", pp));
  if (rank < 0 || rank >= tp * pp) {
    return absl::InvalidArgumentError(absl::StrCat("rank must be in [0, tp*pp = ", tp * pp,
                                                   "), got ", rank, " (tp=", tp, " pp=", pp, ")"));
  }
  return ParallelConfig(tp, pp, rank);
}

std::vector<int> ParallelConfig::TensorParallelGroupRanks(int stage) const {
  std::vector<int> ranks(tp_);
  std::iota(ranks.begin(), ranks.end(), stage * tp_);
  return ranks;
}

std::vector<int> ParallelConfig::WorldRanks() const {
  std::vector<int> ranks(world_size());
  std::iota(ranks.begin(), ranks.end(), 0);
  return ranks;
}

std::optional<int> ParallelConfig::PreviousStageRank() const {
  if (is_first_stage()) return std::nullopt;
  return RankOf(stage() - 1, tp_rank());
}

std::optional<int> ParallelConfig::NextStageRank() const {
  if (is_last_stage()) return std::nullopt;
  return RankOf(stage() + 1, tp_rank());
}

std::string ParallelConfig::DebugString() const {
  return absl::StrCat("tp=", tp_, " pp=", pp_, " rank=", rank_, " (stage ", stage(), ", tp_rank ",
                      tp_rank(), ")");
}

absl::Status ValidateModelForParallelism(const ModelDims& dims, int tp, int pp) {
  if (tp < 1 || pp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp and pp must be >= 1, got tp=", tp, " pp=", pp));
  }
  if (dims.num_attention_heads <= 0 || dims.num_key_value_heads <= 0 ||
      dims.num_hidden_layers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model sizes must be positive: num_attention_heads=", dims.num_attention_heads,
                     " num_key_value_heads=", dims.num_key_value_heads,
                     " num_hidden_layers=", dims.num_hidden_layers));
  }
  if (dims.num_attention_heads % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp=", tp, " does not divide num_attention_heads=", dims.num_attention_heads,
                     "; choose a tp that divides the number of attention heads"));
  }
  const int64_t kv = dims.num_key_value_heads;
  if (kv % tp != 0 && tp % kv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp=", tp, " and num_key_value_heads=", kv,
                     " are incompatible: tp must divide the KV heads, or be a multiple of them "
                     "(KV heads are then replicated)"));
  }
  if (dims.intermediate_size > 0 && dims.intermediate_size < tp) {
    return absl::InvalidArgumentError(
        absl::StrCat("intermediate_size=", dims.intermediate_size, " is smaller than tp=", tp));
  }
  if (dims.vocab_size > 0 && dims.vocab_size < tp) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size=", dims.vocab_size, " is smaller than tp=", tp));
  }
  if (dims.num_hidden_layers < pp) {
    return absl::InvalidArgumentError(
        absl::StrCat("pp=", pp, " exceeds num_hidden_layers=", dims.num_hidden_layers,
                     ": every pipeline stage needs at least one layer"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<IndexRange>> SplitLayers(int64_t num_layers, int pp,
                                                    std::span<const int> explicit_counts) {
  if (pp < 1) return absl::InvalidArgumentError(absl::StrCat("pp must be >= 1, got ", pp));
  if (num_layers < pp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pp=", pp, " exceeds num_hidden_layers=", num_layers, ": every stage needs a layer"));
  }
  std::vector<int64_t> counts(pp);
  if (explicit_counts.empty()) {
    const int64_t base = num_layers / pp;
    const int64_t remainder = num_layers % pp;
    for (int s = 0; s < pp; ++s) counts[s] = base;
    // The remainder goes to the stages just before the last, walking backwards.
    for (int64_t i = 0; i < remainder; ++i) counts[pp - 2 - i] += 1;
  } else {
    if (static_cast<int>(explicit_counts.size()) != pp) {
      return absl::InvalidArgumentError(
          absl::StrCat("--pp-layers has ", explicit_counts.size(), " entries (",
                       absl::StrJoin(explicit_counts, ","), ") but pp=", pp));
    }
    int64_t sum = 0;
    for (int s = 0; s < pp; ++s) {
      if (explicit_counts[s] < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--pp-layers entry ", s, " is ", explicit_counts[s], ": each stage needs >= 1 layer"));
      }
      counts[s] = explicit_counts[s];
      sum += explicit_counts[s];
    }
    if (sum != num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("--pp-layers ", absl::StrJoin(explicit_counts, ","), " sums to ", sum,
                       " but the model has num_hidden_layers=", num_layers));
    }
  }
  std::vector<IndexRange> ranges(pp);
  int64_t begin = 0;
  for (int s = 0; s < pp; ++s) {
    ranges[s] = IndexRange{begin, begin + counts[s]};
    begin += counts[s];
  }
  return ranges;
}

absl::StatusOr<std::vector<int>> ParseLayerCounts(const std::string& text) {
  std::vector<int> counts;
  if (absl::StripAsciiWhitespace(text).empty()) return counts;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    int value = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(piece), &value) || value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--pp-layers must be comma-separated positive integers such as 2,3; got \"",
                       text, "\" (bad entry \"", std::string(piece), "\")"));
    }
    counts.push_back(value);
  }
  return counts;
}

IndexRange BalancedSplit(int64_t total, int parts, int index) {
  const int64_t base = total / parts;
  const int64_t extra = total % parts;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return IndexRange{begin, begin + base + (index < extra ? 1 : 0)};
}

TensorShard ComputeTensorShard(const ModelDims& dims, int tp, int tp_rank) {
  TensorShard shard;
  shard.attention_heads = BalancedSplit(dims.num_attention_heads, tp, tp_rank);
  const int64_t kv = dims.num_key_value_heads;
  if (kv % tp == 0) {
    shard.kv_heads = BalancedSplit(kv, tp, tp_rank);
  } else {
    // tp is a multiple of kv: tp / kv consecutive ranks share one KV head, and
    // their query heads are exactly the ones that attend to it.
    const int64_t ranks_per_kv_head = tp / kv;
    const int64_t head = tp_rank / ranks_per_kv_head;
    shard.kv_heads = IndexRange{head, head + 1};
    shard.kv_heads_replicated = true;
  }
  shard.intermediate = BalancedSplit(dims.intermediate_size, tp, tp_rank);
  shard.vocab = BalancedSplit(dims.vocab_size, tp, tp_rank);
  return shard;
}

}  // namespace strata::parallel
