// The fast forward pass against the plain reference (reference_llama.h):
// max |fast - ref| / max |ref| <= 1e-4 on logits, for the bundled model and
// small random-weights configs, F32 and BF16 weights, single sequences,
// batches of several sequences, and chunked prefill.
#include "worker/model/llama_model.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker/model/model_runner.h"
#include "tests/worker/model/reference_llama.h"
#include "tests/worker/model/test_checkpoint.h"
#include "worker/backend/cpu/gemv_kernels.h"
#include "worker/model/safetensors.h"

namespace strata::model {
namespace {

using testing::Argmax;
using testing::MaxRelativeError;
using testing::ModelRunner;
using testing::ReferenceLlama;
using testing::TempDir;
using testing::TestSequence;

constexpr double kTolerance = 1e-4;
// With AVX512-BF16 the backend multiplies BF16 matrices with activations
// rounded to BF16, and so does the reference; but an activation that the two
// sum in a different order can round to a neighbouring BF16 value (2^-8
// apart), which moves logits by about 1e-3 of their range. Wrong maths (a
// bad RoPE, a missing norm) is off by far more.
constexpr double kBf16ActivationTolerance = 1e-2;

// Qwen2-style: q/k/v bias (implied by the architecture), tied embeddings, GQA,
// sizes that are not multiples of the vector widths.
constexpr const char* kQwen2Config = R"({
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
  "hidden_size": 80, "intermediate_size": 136, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
  "vocab_size": 160, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
  "rope_theta": 1000000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "eos_token_id": 151643, "hidden_act": "silu"})";

// Llama 3.1-style: untied lm_head, llama3 rope scaling, 8 query heads per KV head.
constexpr const char* kLlama3Config = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 64, "intermediate_size": 100, "num_hidden_layers": 2,
  "num_attention_heads": 8, "num_key_value_heads": 1,
  "vocab_size": 96, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
  "rope_theta": 500000.0, "tie_word_embeddings": false,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32}})";

std::unique_ptr<Model> LoadModel(const std::string& dir, std::optional<DType> dtype,
                                 int32_t num_blocks = 64) {
  LoadOptions options;
  options.model_dir = dir;
  options.weight_dtype = dtype;
  options.kv_block_size = 4;  // small blocks: sequences span many of them
  options.kv_num_blocks = num_blocks;
  options.num_threads = 2;
  auto model = Model::Load(options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(model).value() : nullptr;
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

// Prefill `prompt`, then decode `decode_steps` greedy tokens; at every step
// the fast logits must match the reference's.
void ExpectParity(const std::string& dir, std::optional<DType> dtype,
                  const std::vector<std::vector<int32_t>>& prompts, int decode_steps) {
  auto model = LoadModel(dir, dtype);
  ASSERT_NE(model, nullptr);
  auto reference = ReferenceLlama::Load(dir, dtype, backend::CpuHasAvx512Bf16());
  ASSERT_TRUE(reference.ok()) << reference.status();
  const double tolerance = reference->rounds_activations() ? kBf16ActivationTolerance : kTolerance;
  ModelRunner runner(*model, 16);
  for (const auto& prompt : prompts) {
    SCOPED_TRACE(::testing::Message() << "prompt of " << prompt.size() << " tokens");
    reference->Reset();
    std::vector<float> expected;
    for (size_t i = 0; i < prompt.size(); ++i) expected = reference->Forward(prompt[i], i);
    TestSequence seq = runner.NewSequence();
    auto logits = runner.Feed(seq, prompt);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LE(MaxRelativeError(*logits, expected), tolerance) << "after prefill";
    for (int step = 0; step < decode_steps; ++step) {
      const int32_t next = Argmax(expected);
      expected = reference->Forward(next, seq.context_len);
      logits = runner.Feed(seq, {next});
      ASSERT_TRUE(logits.ok()) << logits.status();
      EXPECT_LE(MaxRelativeError(*logits, expected), tolerance) << "decode step " << step;
    }
  }
}

const std::vector<std::vector<int32_t>> kBundledPrompts = {
    {1}, {1, 403, 407, 261, 378}, {1, 317, 391, 266, 267, 291, 376, 400, 428, 286, 261, 376}};

TEST(LlamaModelTest, BundledModelMatchesReferenceWithF32Weights) {
  ExpectParity(STRATA_MODEL_DIR, std::nullopt, kBundledPrompts, 6);
}

TEST(LlamaModelTest, BundledModelMatchesReferenceWithBf16Weights) {
  ExpectParity(STRATA_MODEL_DIR, DType::kBF16, kBundledPrompts, 6);
}

TEST(LlamaModelTest, BundledModelMatchesReferenceWithF16Weights) {
  ExpectParity(STRATA_MODEL_DIR, DType::kF16, {kBundledPrompts[2]}, 3);
}

TEST(LlamaModelTest, Qwen2StyleModelWithBiasAndTiedEmbeddingsMatchesReferenceF32) {
  TempDir dir;
  testing::WriteRandomCheckpoint(dir.path(), kQwen2Config, DType::kF32, 11);
  ExpectParity(dir.path(), std::nullopt, {RandomTokens(3, 160, 1), RandomTokens(21, 160, 2)}, 5);
}

TEST(LlamaModelTest, Qwen2StyleModelWithBiasAndTiedEmbeddingsMatchesReferenceBf16) {
  TempDir dir;
  testing::WriteRandomCheckpoint(dir.path(), kQwen2Config, DType::kBF16, 12);
  ExpectParity(dir.path(), std::nullopt, {RandomTokens(2, 160, 3), RandomTokens(17, 160, 4)}, 5);
}

TEST(LlamaModelTest, Llama3ScaledRopeUntiedHeadMatchesReference) {
  TempDir dir;
  testing::WriteRandomCheckpoint(dir.path(), kLlama3Config, DType::kF32, 13);
  ExpectParity(dir.path(), std::nullopt, {RandomTokens(40, 96, 5)}, 4);
  ExpectParity(dir.path(), DType::kBF16, {RandomTokens(12, 96, 6)}, 2);
}

// Several sequences in one batch: prefills of different lengths together,
// then decode steps of all of them together, then a step mixing one
// sequence's prefill with the others' decode tokens.
void ExpectBatchParity(const std::string& dir, std::optional<DType> dtype, int vocab) {
  auto model = LoadModel(dir, dtype);
  ASSERT_NE(model, nullptr);
  auto reference = ReferenceLlama::Load(dir, dtype, backend::CpuHasAvx512Bf16());
  ASSERT_TRUE(reference.ok()) << reference.status();
  const double tolerance = reference->rounds_activations() ? kBf16ActivationTolerance : kTolerance;
  const std::vector<std::vector<int32_t>> prompts = {
      RandomTokens(7, vocab, 21), RandomTokens(1, vocab, 22), RandomTokens(12, vocab, 23)};
  const std::vector<int32_t> late_prompt = RandomTokens(5, vocab, 24);
  constexpr int kSteps = 3;
  const std::vector<std::vector<int32_t>> continuations = {RandomTokens(kSteps + 1, vocab, 31),
                                                           RandomTokens(kSteps + 1, vocab, 32),
                                                           RandomTokens(kSteps + 1, vocab, 33)};

  // Expected: each sequence alone through the reference.
  auto run_reference = [&](const std::vector<int32_t>& tokens) {
    std::vector<std::vector<float>> out;
    reference->Reset();
    for (size_t i = 0; i < tokens.size(); ++i) out.push_back(reference->Forward(tokens[i], i));
    return out;
  };

  ModelRunner runner(*model, 16);
  std::vector<TestSequence> seqs = {runner.NewSequence(), runner.NewSequence(),
                                    runner.NewSequence()};
  std::vector<TestSequence*> all = {&seqs[0], &seqs[1], &seqs[2]};
  auto rows = runner.Step(all, prompts);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::vector<std::vector<int32_t>> fed = prompts;
  for (int s = 0; s < 3; ++s) {
    EXPECT_LE(MaxRelativeError((*rows)[s], run_reference(fed[s]).back()), tolerance)
        << "prefill, sequence " << s;
  }
  for (int step = 0; step < kSteps; ++step) {
    std::vector<std::vector<int32_t>> tokens;
    for (int s = 0; s < 3; ++s) {
      tokens.push_back({continuations[s][step]});
      fed[s].push_back(continuations[s][step]);
    }
    rows = runner.Step(all, tokens);
    ASSERT_TRUE(rows.ok()) << rows.status();
    for (int s = 0; s < 3; ++s) {
      EXPECT_LE(MaxRelativeError((*rows)[s], run_reference(fed[s]).back()), tolerance)
          << "decode step " << step << ", sequence " << s;
    }
  }
  // Mixed: a new sequence's prefill between two decode tokens.
  TestSequence late = runner.NewSequence();
  rows = runner.Step({&seqs[0], &late, &seqs[2]},
                     {{continuations[0][kSteps]}, late_prompt, {continuations[2][kSteps]}});
  ASSERT_TRUE(rows.ok()) << rows.status();
  fed[0].push_back(continuations[0][kSteps]);
  fed[2].push_back(continuations[2][kSteps]);
  EXPECT_LE(MaxRelativeError((*rows)[0], run_reference(fed[0]).back()), tolerance);
  EXPECT_LE(MaxRelativeError((*rows)[1], run_reference(late_prompt).back()), tolerance);
  EXPECT_LE(MaxRelativeError((*rows)[2], run_reference(fed[2]).back()), tolerance);
}

TEST(LlamaModelTest, BatchOfSequencesMatchesReferenceOnBundledModel) {
  ExpectBatchParity(STRATA_MODEL_DIR, std::nullopt, 512);
}

TEST(LlamaModelTest, BatchOfSequencesMatchesReferenceOnQwen2StyleBf16) {
  TempDir dir;
  testing::WriteRandomCheckpoint(dir.path(), kQwen2Config, DType::kBF16, 14);
  ExpectBatchParity(dir.path(), std::nullopt, 160);
}

// A prompt split across two Forward calls (the first chunk wanting no
// logits) gives the same logits as the whole prompt in one call, and the
// sequence decodes on identically afterwards.
void ExpectChunkedPrefillEqualsWhole(const std::string& dir, std::optional<DType> dtype,
                                     int vocab) {
  auto model = LoadModel(dir, dtype);
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> prompt = RandomTokens(30, vocab, 41);
  for (size_t split : {1, 9, 13, 29}) {
    SCOPED_TRACE(::testing::Message() << "split at " << split);
    ModelRunner runner(*model, 16);
    TestSequence whole = runner.NewSequence();
    auto expected = runner.Feed(whole, prompt);
    ASSERT_TRUE(expected.ok()) << expected.status();

    TestSequence chunked = runner.NewSequence();
    auto first = runner.Step(
        {&chunked}, {std::vector<int32_t>(prompt.begin(), prompt.begin() + split)}, {false});
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_TRUE(first->empty());
    auto logits = runner.Feed(chunked, std::vector<int32_t>(prompt.begin() + split, prompt.end()));
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LE(MaxRelativeError(*logits, *expected), kTolerance);

    const int32_t next = Argmax(*expected);
    auto a = runner.Feed(whole, {next});
    auto b = runner.Feed(chunked, {next});
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LE(MaxRelativeError(*b, *a), kTolerance);
  }
}

TEST(LlamaModelTest, ChunkedPrefillEqualsWholePrefillOnBundledModel) {
  ExpectChunkedPrefillEqualsWhole(STRATA_MODEL_DIR, std::nullopt, 512);
}

TEST(LlamaModelTest, ChunkedPrefillEqualsWholePrefillOnQwen2StyleBf16) {
  TempDir dir;
  testing::WriteRandomCheckpoint(dir.path(), kQwen2Config, DType::kBF16, 15);
  ExpectChunkedPrefillEqualsWhole(dir.path(), std::nullopt, 160);
}

TEST(LlamaModelTest, ShardedCheckpointLoadsLikeSingleFile) {
  TempDir single;
  testing::WriteRandomCheckpoint(single.path(), kQwen2Config, DType::kF32, 16);
  // Split the same tensors over two shards with an index.
  TempDir sharded;
  testing::WriteFile(sharded.File("config.json"), kQwen2Config);
  // Re-read the tensors to redistribute them.
  auto file = SafetensorsFile::Open(single.File("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<testing::TestTensor> shard[2];
  nlohmann::json weight_map;
  int i = 0;
  for (const TensorView& t : (*file)->tensors()) {
    testing::TestTensor tensor{
        t.name, "F32", t.shape,
        std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(t.data),
                             reinterpret_cast<const uint8_t*>(t.data) + t.size_bytes)};
    const int which = (i++ % 2);
    weight_map[t.name] =
        which == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    shard[which].push_back(std::move(tensor));
  }
  testing::WriteFile(sharded.File("model-00001-of-00002.safetensors"),
                     testing::SafetensorsBytes(shard[0]));
  testing::WriteFile(sharded.File("model-00002-of-00002.safetensors"),
                     testing::SafetensorsBytes(shard[1]));
  testing::WriteFile(
      sharded.File("model.safetensors.index.json"),
      nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());

  auto a = LoadModel(single.path(), std::nullopt);
  auto b = LoadModel(sharded.path(), std::nullopt);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t> prompt = RandomTokens(6, 160, 51);
  ModelRunner runner_a(*a, 16);
  ModelRunner runner_b(*b, 16);
  TestSequence sa = runner_a.NewSequence();
  TestSequence sb = runner_b.NewSequence();
  auto la = runner_a.Feed(sa, prompt);
  auto lb = runner_b.Feed(sb, prompt);
  ASSERT_TRUE(la.ok() && lb.ok());
  EXPECT_EQ(*la, *lb);
}

TEST(LlamaModelTest, RandomWeightsAreSeededAndNeedNoSafetensors) {
  TempDir dir;
  testing::WriteFile(dir.File("config.json"), kQwen2Config);
  auto load = [&](uint64_t seed, std::optional<DType> dtype) {
    LoadOptions options;
    options.model_dir = dir.path();
    options.random_weights = true;
    options.random_seed = seed;
    options.weight_dtype = dtype;
    options.kv_num_blocks = 16;
    options.num_threads = 2;
    auto model = Model::Load(options);
    EXPECT_TRUE(model.ok()) << model.status();
    return std::move(model).value();
  };
  auto logits_of = [](Model& model) {
    ModelRunner runner(model, 4);
    TestSequence seq = runner.NewSequence();
    auto logits = runner.Feed(seq, {1, 2, 3, 4, 5});
    EXPECT_TRUE(logits.ok()) << logits.status();
    return *logits;
  };
  auto a = load(7, std::nullopt);
  auto b = load(7, std::nullopt);
  auto c = load(8, std::nullopt);
  EXPECT_EQ(a->weight_dtype(), DType::kBF16);  // the default for random weights
  const std::vector<float> la = logits_of(*a);
  EXPECT_EQ(la, logits_of(*b));
  EXPECT_NE(la, logits_of(*c));
  for (float v : la) ASSERT_TRUE(std::isfinite(v));

  auto f32 = load(7, DType::kF32);
  EXPECT_EQ(f32->weight_dtype(), DType::kF32);
  const ModelConfig& config = f32->config();
  // Tied: the embedding is the only vocab-sized matrix; vectors are F32.
  const uint64_t params = config.ParameterCount();
  EXPECT_EQ(f32->weight_bytes(), params * 4);
  // Norms and biases: per layer 2 norms and q/k/v biases (64 + 32 + 32), plus the final norm.
  const uint64_t vector_params =
      config.num_hidden_layers * (2 * config.hidden_size + 64 + 32 + 32) + config.hidden_size;
  EXPECT_EQ(a->weight_bytes(), (params - vector_params) * 2 + vector_params * 4);
}

TEST(LlamaModelTest, ForwardRejectsInconsistentBatches) {
  auto model = LoadModel(STRATA_MODEL_DIR, std::nullopt, 8);
  ASSERT_NE(model, nullptr);
  std::vector<float> logits;
  auto batch_of = [](std::vector<int32_t> ids, std::vector<int32_t> positions, int32_t context,
                     std::vector<int32_t> blocks) {
    ForwardBatch batch;
    batch.token_ids = std::move(ids);
    batch.positions = std::move(positions);
    BatchSequence seq;
    seq.num_tokens = static_cast<int32_t>(batch.token_ids.size());
    seq.context_len = context;
    seq.block_table = std::move(blocks);
    batch.sequences.push_back(seq);
    return batch;
  };
  using ::testing::HasSubstr;
  auto status = model->Forward(batch_of({1, 600}, {0, 1}, 2, {0}), logits);
  EXPECT_THAT(std::string(status.message()), HasSubstr("token id 600"));
  status = model->Forward(batch_of({1, 2}, {0, 2}, 2, {0}), logits);
  EXPECT_THAT(std::string(status.message()), HasSubstr("position"));
  status = model->Forward(batch_of({1, 2, 3, 4, 5}, {0, 1, 2, 3, 4}, 5, {0}), logits);
  EXPECT_THAT(std::string(status.message()), HasSubstr("block table"));
  status = model->Forward(batch_of({1}, {0}, 1, {99}), logits);
  EXPECT_THAT(std::string(status.message()), HasSubstr("block id 99"));
  status = model->Forward(ForwardBatch{}, logits);
  EXPECT_FALSE(status.ok());
  // The model still works after refusing.
  EXPECT_TRUE(model->Forward(batch_of({1, 2}, {0, 1}, 2, {3}), logits).ok());
  EXPECT_EQ(logits.size(), 512u);
}

}  // namespace
}  // namespace strata::model
