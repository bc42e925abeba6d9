// LlamaModel::GatherLogits on a backend whose memory is not host memory (the
// path NCCL needs: pad and all-gather in device scratch, then one copy to the
// host), checked without a GPU: a backend that runs the CPU kernels but does
// not call itself "cpu" takes that path, and tensor-parallel ranks (threads
// with in-process communicators, which accept any address the ranks share)
// must reproduce the single-process logits, with a vocabulary no tp divides.
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
#include "worker/backend/cpu/cpu_backend.h"
#include "worker/model/llama_model.h"
#include "worker/model/model_shard.h"

namespace strata::model {
namespace {

constexpr const char* kConfig = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
  "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8,
  "vocab_size": 1001, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float32",
  "eos_token_id": 0, "hidden_act": "silu"})";

// The CPU backend under another name: models treat its memory as device memory.
class DeviceNamedCpuBackend final : public backend::Backend {
 public:
  DeviceNamedCpuBackend() : cpu_(backend::CpuBackendOptions{.num_threads = 1}) {}
  std::string_view name() const override { return "cpu-as-device"; }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> Allocate(size_t bytes) override {
    return cpu_.Allocate(bytes);
  }
  void CopyToDevice(void* dst, const void* src, size_t bytes) override {
    cpu_.CopyToDevice(dst, src, bytes);
  }
  void CopyToHost(void* dst, const void* src, size_t bytes) override {
    cpu_.CopyToHost(dst, src, bytes);
  }
  absl::StatusOr<backend::Weight> ImportWeight(const void* host, DType dtype, int64_t rows,
                                               int64_t cols) override {
    return cpu_.ImportWeight(host, dtype, rows, cols);
  }
  absl::Status Synchronize() override { return cpu_.Synchronize(); }
  void MatMul(const float* x, int64_t n, const backend::Weight& w, const float* bias,
              float* y) override {
    cpu_.MatMul(x, n, w, bias, y);
  }
  void RmsNorm(const float* x, int64_t n, int64_t d, const float* weight, float eps,
               float* out) override {
    cpu_.RmsNorm(x, n, d, weight, eps, out);
  }
  void AddRmsNorm(float* residual, const float* delta, int64_t n, int64_t d, const float* weight,
                  float eps, float* out) override {
    cpu_.AddRmsNorm(residual, delta, n, d, weight, eps, out);
  }
  void Rope(float* x, int64_t n, int32_t num_heads, int32_t head_dim, const int32_t* positions,
            const float* cos, const float* sin) override {
    cpu_.Rope(x, n, num_heads, head_dim, positions, cos, sin);
  }
  void SiluMul(const float* gate, const float* up, int64_t count, float* out) override {
    cpu_.SiluMul(gate, up, count, out);
  }
  void Add(const float* a, const float* b, int64_t count, float* out) override {
    cpu_.Add(a, b, count, out);
  }
  void Embedding(const backend::Weight& table, int64_t first_id, const int32_t* ids, int64_t n,
                 float* out) override {
    cpu_.Embedding(table, first_id, ids, n, out);
  }
  void GatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m,
                  float* dst) override {
    cpu_.GatherRows(src, d, rows, m, dst);
  }
  void AppendKv(const backend::KvCacheLayer& cache, const backend::AttentionParams& params,
                const float* k, const float* v, const int32_t* slots, int64_t n) override {
    cpu_.AppendKv(cache, params, k, v, slots, n);
  }
  void PagedAttention(const float* q, const backend::AttentionBatch& batch,
                      const backend::KvCacheLayer& cache, const backend::AttentionParams& params,
                      float* out) override {
    cpu_.PagedAttention(q, batch, cache, params, out);
  }

 private:
  backend::CpuBackend cpu_;
};

LoadOptions Options(const std::string& dir) {
  LoadOptions options;
  options.model_dir = dir;
  options.random_weights = true;
  options.random_seed = 3;
  options.weight_dtype = DType::kF32;
  options.kv_block_size = 4;
  options.kv_num_blocks = 32;
  options.num_threads = 1;
  return options;
}

// A prefill of two sequences, then two decode steps: every logits row.
absl::StatusOr<std::vector<std::vector<float>>> RunSteps(Model& model) {
  testing::ModelRunner runner(model, 16);
  testing::TestSequence a = runner.NewSequence();
  testing::TestSequence b = runner.NewSequence();
  std::vector<std::vector<float>> all;
  std::vector<std::vector<std::vector<int32_t>>> steps = {
      {{5, 17, 300, 999, 4}, {1000, 2, 3}}, {{7}, {8}}, {{9}, {10}}};
  for (const auto& chunks : steps) {
    absl::StatusOr<std::vector<std::vector<float>>> rows = runner.Step({&a, &b}, chunks);
    if (!rows.ok()) return rows.status();
    all.insert(all.end(), rows->begin(), rows->end());
  }
  return all;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const LoadOptions& options) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromDirectory(options.model_dir);
  if (!config.ok()) return config.status();
  return LlamaModel::Create(*config, options, std::make_unique<DeviceNamedCpuBackend>());
}

TEST(DeviceLogitsGatherTest, TensorParallelRanksGatherTheSingleProcessLogits) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("config.json"), kConfig);
  auto whole = Load(Options(dir.path()));
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto expected = RunSteps(**whole);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(expected->size(), 6u);

  for (int tp : {2, 4}) {  // 1001 ids: slices of unequal width, so rows are padded
    SCOPED_TRACE(absl::StrCat("tp ", tp));
    parallel::InProcessWorld world(tp, absl::Seconds(30));
    std::vector<absl::StatusOr<std::vector<std::vector<float>>>> results(
        tp, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (int rank = 0; rank < tp; ++rank) {
      threads.emplace_back([&, rank] {
        const parallel::ParallelConfig parallel = *parallel::ParallelConfig::Create(tp, 1, rank);
        std::unique_ptr<parallel::CommunicatorFactory> factory = world.FactoryFor(rank);
        auto groups = parallel::CommunicatorGroups::Create(parallel, *factory);
        if (!groups.ok()) {
          results[rank] = groups.status();
          return;
        }
        LoadOptions options = Options(dir.path());
        auto shard = ModelShard::ForRank(*ModelConfig::FromDirectory(dir.path()), parallel);
        if (!shard.ok()) {
          results[rank] = shard.status();
          return;
        }
        options.shard = *shard;
        options.links.tensor_parallel = &(*groups)->tensor_parallel();
        auto model = Load(options);
        if (!model.ok()) {
          results[rank] = model.status();
          return;
        }
        results[rank] = RunSteps(**model);
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int rank = 0; rank < tp; ++rank) {
      ASSERT_TRUE(results[rank].ok()) << "rank " << rank << ": " << results[rank].status();
      ASSERT_EQ(results[rank]->size(), expected->size());
      for (size_t row = 0; row < expected->size(); ++row) {
        EXPECT_LT(testing::MaxRelativeError((*results[rank])[row], (*expected)[row]), 1e-4)
            << "rank " << rank << " row " << row;
      }
    }
  }
}

}  // namespace
}  // namespace strata::model
