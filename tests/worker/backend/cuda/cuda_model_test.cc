// Whole-model parity on the CUDA backend: the bundled F32 model (FP32
// products without TF32) reproduces reference.json's greedy ids exactly and
// its first-step logits within 1e-4 (the CPU backend's tolerance), one
// sequence at a time and batched with chunked prefill, with ops launched one
// by one and with steps replayed as CUDA graphs. Also checks how
// Model::Load picks its backend. Labelled "gpu": tests that need a device
// skip without one.

#include "gtest/gtest.h"
#include "tests/worker/model/model_reference.h"
#include "tests/worker/model/model_runner.h"
#include "worker/backend/cuda/cuda_backend.h"
#include "worker/model/llama_model.h"
#include "worker/model/model.h"

namespace strata::model {
namespace {

using testing::Argmax;
using testing::ModelRunner;
using testing::TestSequence;

using testing::IsStop;
using testing::ReadReference;
using testing::ReferenceCase;

// Parameter: whether the backend replays steps as CUDA graphs.
class CudaModelTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    auto backend = backend::CudaBackend::Create({.step_graphs = GetParam()});
    if (!backend.ok())
      GTEST_SKIP() << "no CUDA device, model parity not checked: " << backend.status();
    auto config = ModelConfig::FromDirectory(STRATA_MODEL_DIR);
    ASSERT_TRUE(config.ok()) << config.status();
    LoadOptions options;
    options.model_dir = STRATA_MODEL_DIR;
    backend_ = backend->get();
    auto model = LlamaModel::Create(*config, options, *std::move(backend));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  // With step graphs, decode steps after the first of each shape ran as
  // graphs; without, none did.
  void ExpectGraphsUsedAsConfigured() {
    if (GetParam()) {
      EXPECT_GT(backend_->graphs_captured(), 0);
      EXPECT_GT(backend_->graphs_launched(), backend_->graphs_captured());
    } else {
      EXPECT_EQ(backend_->graphs_launched(), 0);
    }
  }

  backend::CudaBackend* backend_ = nullptr;  // owned by model_
  std::unique_ptr<LlamaModel> model_;
};

INSTANTIATE_TEST_SUITE_P(StepGraphs, CudaModelTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Graphs" : "Eager";
                         });

TEST_P(CudaModelTest, EveryPromptReproducesReferenceGreedyIds) {
  for (const ReferenceCase& c : ReadReference()) {
    SCOPED_TRACE("prompt '" + c.prompt + "'");
    ModelRunner runner(*model_, 17);  // 17 blocks of 16 hold 256 positions
    TestSequence seq = runner.NewSequence();
    auto logits = runner.Feed(seq, c.prompt_ids);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->size(), c.first_step_logits.size());
    EXPECT_LE(testing::MaxRelativeError(*logits, c.first_step_logits), 1e-4);
    const size_t max_new = c.steps - c.prompt_ids.size() + 1;
    std::vector<int32_t> generated = {Argmax(*logits)};
    while (generated.size() < max_new && !IsStop(generated.back())) {
      logits = runner.Feed(seq, {generated.back()});
      ASSERT_TRUE(logits.ok()) << logits.status();
      generated.push_back(Argmax(*logits));
    }
    EXPECT_EQ(generated, c.generated_ids);
  }
  ExpectGraphsUsedAsConfigured();
}

// Prompts fed in chunks of 5 tokens, all sequences in one batch per step
// (prefill chunks and decode tokens mixed), as the engine schedules them.
TEST_P(CudaModelTest, BatchedChunkedPrefillReproducesReferenceGreedyIds) {
  const auto cases = ReadReference();
  ModelRunner runner(*model_, 17);
  std::vector<TestSequence> seqs;
  std::vector<size_t> fed(cases.size(), 0);
  std::vector<std::vector<int32_t>> generated(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) seqs.push_back(runner.NewSequence());
  for (int step = 0; step < 1000; ++step) {
    std::vector<TestSequence*> batch;
    std::vector<std::vector<int32_t>> chunks;
    std::vector<size_t> members;
    for (size_t i = 0; i < cases.size(); ++i) {
      const ReferenceCase& c = cases[i];
      const size_t max_new = c.steps - c.prompt_ids.size() + 1;
      if (fed[i] < c.prompt_ids.size()) {
        const size_t take = std::min<size_t>(5, c.prompt_ids.size() - fed[i]);
        chunks.emplace_back(c.prompt_ids.begin() + fed[i], c.prompt_ids.begin() + fed[i] + take);
        fed[i] += take;
      } else if (generated[i].size() < max_new && !IsStop(generated[i].back())) {
        chunks.push_back({generated[i].back()});
      } else {
        continue;
      }
      batch.push_back(&seqs[i]);
      members.push_back(i);
    }
    if (batch.empty()) break;
    auto rows = runner.Step(batch, chunks);
    ASSERT_TRUE(rows.ok()) << rows.status();
    for (size_t r = 0; r < members.size(); ++r) {
      const size_t i = members[r];
      if (fed[i] == cases[i].prompt_ids.size()) generated[i].push_back(Argmax((*rows)[r]));
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(generated[i], cases[i].generated_ids) << "prompt '" << cases[i].prompt << "'";
  }
}

TEST(ModelLoadDeviceTest, UnknownDeviceIsRefusedByName) {
  LoadOptions options;
  options.model_dir = STRATA_MODEL_DIR;
  options.device = "tpu";
  auto model = Model::Load(options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(model.status().message()).find("'tpu'"), std::string::npos)
      << model.status();
}

// With a device the bundled model loads on it; without one the error says
// why CUDA is unusable instead of falling back silently.
TEST(ModelLoadDeviceTest, CudaDeviceLoadsOrExplainsWhyNot) {
  LoadOptions options;
  options.model_dir = STRATA_MODEL_DIR;
  options.device = "cuda";
  auto model = Model::Load(options);
  if (!model.ok() &&
      std::string(model.status().message()).find("has no CUDA backend") !=
          std::string::npos) {
    GTEST_SKIP() << model.status().message();
  }
  if (backend::CudaBackend::DeviceCount().ok()) {
    EXPECT_TRUE(model.ok()) << model.status();
  } else {
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kUnavailable) << model.status();
  }
}

// "auto" takes the GPU when one is visible and the CPU otherwise (here, on
// a machine without one, it must not fail); either way the model it loads
// computes the reference logits.
TEST(ModelLoadDeviceTest, AutoDeviceLoadsAWorkingModelWithOrWithoutAGpu) {
  LoadOptions options;
  options.model_dir = STRATA_MODEL_DIR;
  options.device = "auto";
  auto model = Model::Load(options);
  ASSERT_TRUE(model.ok()) << model.status();
  const ReferenceCase c = ReadReference().front();
  ModelRunner runner(**model, 17);
  TestSequence seq = runner.NewSequence();
  auto logits = runner.Feed(seq, c.prompt_ids);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LE(testing::MaxRelativeError(*logits, c.first_step_logits), 1e-4);
}

TEST(CudaBackendCreateTest, OutOfRangeDeviceIsUnavailableAndNamed) {
  auto count = backend::CudaBackend::DeviceCount();
  const int device = count.ok() ? *count : 0;
  auto backend = backend::CudaBackend::Create({.device = device});
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kUnavailable) << backend.status();
  if (count.ok()) {
    EXPECT_NE(std::string(backend.status().message()).find(std::to_string(device)),
              std::string::npos);
  }
}

}  // namespace
}  // namespace strata::model
