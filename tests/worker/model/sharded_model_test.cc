// Tensor- and pipeline-parallel shards of one model, each rank a thread with
// in-process communicators: together they compute the single-process logits,
// and each rank holds only its share of the weights.
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "parallel/communicator_groups.h"
#include "parallel/in_process_communicator.h"
#include "parallel/parallel_config.h"
#include "tests/worker/model/model_runner.h"
#include "tests/worker/model/test_checkpoint.h"
#include "worker/model/llama_weights.h"
#include "worker/model/model.h"
#include "worker/model/model_shard.h"

namespace strata::model {
namespace {

// 8 KV heads (split up to tp 8, replicated beyond), q/k/v biases, an untied
// LM head, and a vocabulary of 1001 ids that no tp > 1 divides.
constexpr const char* kConfig = R"({
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
  "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4,
  "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 8,
  "vocab_size": 1001, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float32",
  "eos_token_id": 0, "hidden_act": "silu"})";

constexpr int32_t kBlocksPerSequence = 16;

std::vector<int32_t> Tokens(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 1001);
  return tokens;
}

// Two sequences prefilled together, then three decode steps: every logits
// row the last stage produced, in order.
absl::StatusOr<std::vector<std::vector<float>>> RunSteps(Model& model) {
  testing::ModelRunner runner(model, kBlocksPerSequence);
  testing::TestSequence a = runner.NewSequence();
  testing::TestSequence b = runner.NewSequence();
  std::vector<std::vector<float>> all;
  auto step = [&](std::vector<std::vector<int32_t>> chunks) -> absl::Status {
    absl::StatusOr<std::vector<std::vector<float>>> rows = runner.Step({&a, &b}, chunks);
    if (!rows.ok()) return rows.status();
    all.insert(all.end(), rows->begin(), rows->end());
    return absl::OkStatus();
  };
  if (absl::Status s = step({Tokens(7, 1), Tokens(12, 2)}); !s.ok()) return s;
  for (int i = 0; i < 3; ++i) {
    if (absl::Status s = step({Tokens(1, 10 + i), Tokens(1, 20 + i)}); !s.ok()) return s;
  }
  return all;
}

LoadOptions Options(const std::string& dir, bool random_weights) {
  LoadOptions options;
  options.model_dir = dir;
  options.random_weights = random_weights;
  options.random_seed = 7;
  options.weight_dtype = DType::kF32;
  options.kv_block_size = 4;
  options.kv_num_blocks = 2 * kBlocksPerSequence;
  options.num_threads = 1;
  return options;
}

struct RankResult {
  absl::Status status;
  uint64_t weight_bytes = 0;
  std::vector<std::vector<float>> logits;  // last stage only
};

// Runs tp * pp ranks as threads; each loads its shard and runs RunSteps.
std::vector<RankResult> RunSharded(const LoadOptions& base, int tp, int pp) {
  const int world = tp * pp;
  parallel::InProcessWorld in_process(world, absl::Seconds(30));
  std::vector<RankResult> results(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      RankResult& result = results[rank];
      const parallel::ParallelConfig parallel = *parallel::ParallelConfig::Create(tp, pp, rank);
      std::unique_ptr<parallel::CommunicatorFactory> factory = in_process.FactoryFor(rank);
      absl::StatusOr<std::unique_ptr<parallel::CommunicatorGroups>> groups =
          parallel::CommunicatorGroups::Create(parallel, *factory);
      if (!groups.ok()) {
        result.status = groups.status();
        return;
      }
      absl::StatusOr<ModelConfig> config = ModelConfig::FromDirectory(base.model_dir);
      absl::StatusOr<ModelShard> shard = ModelShard::ForRank(*config, parallel);
      if (!shard.ok()) {
        result.status = shard.status();
        return;
      }
      LoadOptions options = base;
      options.shard = *shard;
      options.links.tensor_parallel = &(*groups)->tensor_parallel();
      options.links.previous_stage = (*groups)->previous_stage();
      options.links.next_stage = (*groups)->next_stage();
      absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(options);
      if (!model.ok()) {
        result.status = model.status();
        return;
      }
      result.weight_bytes = (*model)->weight_bytes();
      absl::StatusOr<std::vector<std::vector<float>>> logits = RunSteps(**model);
      result.status = logits.status();
      if (logits.ok()) result.logits = *std::move(logits);
    });
  }
  for (std::thread& thread : threads) thread.join();
  return results;
}

class ShardedModelTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    random_weights_ = GetParam();
    if (random_weights_) {
      testing::WriteFile(dir_.File("config.json"), kConfig);
    } else {
      testing::WriteRandomCheckpoint(dir_.path(), kConfig, DType::kF32, /*seed=*/5);
    }
    absl::StatusOr<std::unique_ptr<Model>> whole =
        Model::Load(Options(dir_.path(), random_weights_));
    ASSERT_TRUE(whole.ok()) << whole.status();
    whole_bytes_ = (*whole)->weight_bytes();
    absl::StatusOr<std::vector<std::vector<float>>> logits = RunSteps(**whole);
    ASSERT_TRUE(logits.ok()) << logits.status();
    expected_ = *std::move(logits);
    ASSERT_EQ(expected_.size(), 8u);
  }

  testing::TempDir dir_;
  bool random_weights_ = false;
  uint64_t whole_bytes_ = 0;
  std::vector<std::vector<float>> expected_;
};

TEST_P(ShardedModelTest, ShardsTogetherComputeTheSingleProcessLogits) {
  // tp 16 > 8 KV heads: each KV head is replicated on two ranks.
  for (auto [tp, pp] :
       std::vector<std::pair<int, int>>{{2, 1}, {4, 1}, {16, 1}, {1, 2}, {2, 2}, {1, 3}, {4, 3}}) {
    SCOPED_TRACE(absl::StrCat("tp ", tp, " pp ", pp));
    const std::vector<RankResult> results =
        RunSharded(Options(dir_.path(), random_weights_), tp, pp);
    for (const RankResult& result : results) ASSERT_TRUE(result.status.ok()) << result.status;
    const parallel::ParallelConfig config = *parallel::ParallelConfig::Create(tp, pp, 0);
    for (int rank = 0; rank < tp * pp; ++rank) {
      // Every rank of the last stage ends with the whole gathered logits;
      // the other stages return none.
      if (config.StageOf(rank) != pp - 1) {
        EXPECT_TRUE(results[rank].logits.empty()) << "rank " << rank;
        continue;
      }
      ASSERT_EQ(results[rank].logits.size(), expected_.size()) << "rank " << rank;
      for (size_t row = 0; row < expected_.size(); ++row) {
        EXPECT_LT(testing::MaxRelativeError(results[rank].logits[row], expected_[row]), 1e-4)
            << "rank " << rank << " row " << row;
        EXPECT_EQ(testing::Argmax(results[rank].logits[row]), testing::Argmax(expected_[row]));
      }
    }
  }
}

TEST_P(ShardedModelTest, EachRankHoldsItsShareOfTheWeights) {
  const absl::StatusOr<ModelConfig> config = ModelConfig::FromDirectory(dir_.path());
  ASSERT_TRUE(config.ok());
  // Norms are replicated on every TP rank of their stage (F32, small).
  const uint64_t norm_bytes =
      static_cast<uint64_t>(config->hidden_size) * (2 * config->num_hidden_layers + 1) * 4;
  for (auto [tp, pp] : std::vector<std::pair<int, int>>{{2, 1}, {4, 1}, {2, 2}, {4, 2}}) {
    SCOPED_TRACE(absl::StrCat("tp ", tp, " pp ", pp));
    const std::vector<RankResult> results =
        RunSharded(Options(dir_.path(), random_weights_), tp, pp);
    uint64_t sum = 0;
    const double share = static_cast<double>(whole_bytes_) / (tp * pp);
    for (size_t rank = 0; rank < results.size(); ++rank) {
      ASSERT_TRUE(results[rank].status.ok()) << results[rank].status;
      sum += results[rank].weight_bytes;
      // Uneven vocabulary and MLP splits differ by one row or column.
      EXPECT_NEAR(static_cast<double>(results[rank].weight_bytes), share,
                  0.03 * share + static_cast<double>(norm_bytes))
          << "rank " << rank;
    }
    // Every matrix element is held exactly once; only norms repeat.
    EXPECT_GE(sum, whole_bytes_);
    EXPECT_LE(sum, whole_bytes_ + static_cast<uint64_t>(tp) * norm_bytes);
  }
}

INSTANTIATE_TEST_SUITE_P(RandomAndCheckpointWeights, ShardedModelTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "RandomWeights" : "Checkpoint";
                         });

}  // namespace
}  // namespace strata::model
