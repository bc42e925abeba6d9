#include "worker/model/model_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_checkpoint.h"

namespace strata::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr const char* kMinimal = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100,
  "max_position_embeddings": 128)";

std::string With(const std::string& extra) { return std::string(kMinimal) + extra + "}"; }

TEST(ModelConfigTest, ReadsBundledModelWithGenerationConfig) {
  auto config = ModelConfig::FromDirectory(STRATA_MODEL_DIR);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "LlamaForCausalLM");
  EXPECT_EQ(config->hidden_size, 64);
  EXPECT_EQ(config->intermediate_size, 172);
  EXPECT_EQ(config->num_hidden_layers, 5);
  EXPECT_EQ(config->num_attention_heads, 8);
  EXPECT_EQ(config->num_key_value_heads, 4);
  EXPECT_EQ(config->head_dim, 8);
  EXPECT_EQ(config->vocab_size, 512);
  EXPECT_FLOAT_EQ(config->rms_norm_eps, 1e-5f);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_FALSE(config->attention_bias);
  EXPECT_FALSE(config->rope_scaling.has_value());
  EXPECT_EQ(config->torch_dtype, DType::kF32);
  EXPECT_EQ(config->bos_token_id, 1);
  // config.json says 2, generation_config.json [1, 2]: the union.
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2, 1));
  EXPECT_EQ(config->ParameterCount(), 260032);
}

TEST(ModelConfigTest, DefaultsHeadDimAndKvHeads) {
  auto config = ModelConfig::FromJson(With(""), "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 8);
  EXPECT_EQ(config->num_key_value_heads, 8);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_TRUE(config->eos_token_ids.empty());
}

TEST(ModelConfigTest, EosTokenIdMayBeAList) {
  auto config =
      ModelConfig::FromJson(With(R"(, "eos_token_id": [128001, 128008, 128009])"), "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->eos_token_ids, ElementsAre(128001, 128008, 128009));
}

TEST(ModelConfigTest, GenerationConfigEosIsUnitedWithConfigEos) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("config.json"), With(R"(, "eos_token_id": 5)"));
  testing::WriteFile(dir.File("generation_config.json"), R"({"eos_token_id": [6, 5, 7]})");
  auto config = ModelConfig::FromDirectory(dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->eos_token_ids, ElementsAre(5, 6, 7));
}

TEST(ModelConfigTest, ParsesLlama3RopeScaling) {
  auto config = ModelConfig::FromJson(
      With(R"(, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
              "original_max_position_embeddings": 8192, "rope_type": "llama3"},
              "rope_theta": 500000.0)"),
      "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_EQ(config->rope_scaling->type, "llama3");
  EXPECT_FLOAT_EQ(config->rope_scaling->factor, 32.0f);
  EXPECT_EQ(config->rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_FLOAT_EQ(config->rope_theta, 500000.0f);
}

TEST(ModelConfigTest, RefusesOtherRopeScalingTypes) {
  auto config = ModelConfig::FromJson(With(R"(, "rope_scaling": {"type": "yarn", "factor": 4.0})"),
                                      "config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("config.json: field 'rope_scaling' has type 'yarn'"));
}

TEST(ModelConfigTest, Qwen2AlwaysHasAttentionBias) {
  std::string json = With("");
  json.replace(json.find("LlamaForCausalLM"), 16, "Qwen2ForCausalLM");
  auto config = ModelConfig::FromJson(json, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->attention_bias);
}

TEST(ModelConfigTest, AcceptsMistral) {
  std::string json = With(R"(, "sliding_window": 4096, "num_key_value_heads": 2)");
  json.replace(json.find("LlamaForCausalLM"), 16, "MistralForCausalLM");
  auto config = ModelConfig::FromJson(json, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_key_value_heads, 2);
}

TEST(ModelConfigTest, RefusesUnsupportedArchitectureNamingTheSupportedOnes) {
  std::string json = With("");
  json.replace(json.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel");
  auto config = ModelConfig::FromJson(json, "config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "config.json: unsupported architecture 'GPT2LMHeadModel' (supported: "
            "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
}

TEST(ModelConfigTest, ErrorsNameTheFileAndField) {
  struct Case {
    std::string json;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"architectures": ["LlamaForCausalLM"]})", "field 'hidden_size' is missing"},
      {With(R"(, "num_key_value_heads": 3)"), "field 'num_key_value_heads' (3) must divide"},
      {With(R"(, "hidden_act": "gelu")"), "field 'hidden_act' must be \"silu\""},
      {With(R"(, "rms_norm_eps": "small")"), "field 'rms_norm_eps' must be a number"},
      {With(R"(, "eos_token_id": "x")"), "field 'eos_token_id' must be a token id"},
      {With(R"(, "head_dim": 7)"), "field 'head_dim' must be even"},
      {With(R"(, "mlp_bias": true)"), "field 'mlp_bias' is true"},
      {"{\"hidden_size\": -1}", "field 'architectures' is missing"},
      {"not json", "my/config.json: not valid JSON"},
  };
  for (const Case& c : cases) {
    auto config = ModelConfig::FromJson(c.json, "my/config.json");
    ASSERT_FALSE(config.ok()) << c.json;
    const std::string message(config.status().message());
    EXPECT_THAT(message, HasSubstr(c.expected));
    EXPECT_THAT(message, HasSubstr("my/config.json"));
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
  std::string bad_size = With("");
  bad_size.replace(bad_size.find("\"hidden_size\": 64"), 17, "\"hidden_size\": -64");
  auto config = ModelConfig::FromJson(bad_size, "config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("field 'hidden_size' must be a positive integer, got -64"));
}

}  // namespace
}  // namespace strata::model
