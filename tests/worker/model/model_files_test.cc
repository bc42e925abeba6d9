// Bad model folders: Model::Load fails with ONE line that names the file and
// the problem (the worker prints it and exits non-zero).
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker/model/test_checkpoint.h"
#include "worker/model/model.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

class ModelFilesTest : public ::testing::Test {
 protected:
  ModelFilesTest() { testing::CopyDir(STRATA_MODEL_DIR, dir_.path()); }

  // Loads the folder; returns the one-line error.
  std::string LoadError() {
    LoadOptions options;
    options.model_dir = dir_.path();
    options.num_threads = 1;
    auto model = Model::Load(options);
    EXPECT_FALSE(model.ok()) << "loaded a bad model folder";
    if (model.ok()) return "";
    const std::string message(model.status().message());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }

  void EditConfig(const std::function<void(nlohmann::json&)>& edit) {
    auto json = nlohmann::json::parse(ReadFile(dir_.File("config.json")));
    edit(json);
    WriteFile(dir_.File("config.json"), json.dump(2));
  }

  TempDir dir_;
};

TEST_F(ModelFilesTest, BundledCopyLoads) {
  LoadOptions options;
  options.model_dir = dir_.path();
  EXPECT_TRUE(Model::Load(options).ok());
}

TEST_F(ModelFilesTest, MissingConfigNamesConfigJson) {
  std::filesystem::remove(dir_.File("config.json"));
  EXPECT_THAT(LoadError(), HasSubstr(dir_.File("config.json") + ": cannot open"));
}

TEST_F(ModelFilesTest, MissingSafetensorsNamesTheFolder) {
  std::filesystem::remove(dir_.File("model.safetensors"));
  EXPECT_THAT(LoadError(),
              HasSubstr(dir_.path() + ": no model.safetensors or model.safetensors.index.json"));
}

TEST_F(ModelFilesTest, TruncatedSafetensorsNamesFileAndTensor) {
  const std::string bytes = ReadFile(dir_.File("model.safetensors"));
  WriteFile(dir_.File("model.safetensors"), bytes.substr(0, bytes.size() / 2));
  const std::string message = LoadError();
  EXPECT_THAT(message, HasSubstr(dir_.File("model.safetensors") + ": tensor '"));
  EXPECT_THAT(message, HasSubstr("run past the end of the file"));
  EXPECT_THAT(message, HasSubstr("truncated?"));
}

TEST_F(ModelFilesTest, HeaderOffsetsPastTheFileNameFileAndTensor) {
  // Same size on disk, but one tensor claims data beyond the end.
  std::string bytes = ReadFile(dir_.File("model.safetensors"));
  const std::string from = "\"data_offsets\":[1039872,1040128]";
  const std::string to = "\"data_offsets\":[1039872,1940128]";
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, from.size(), to);
  WriteFile(dir_.File("model.safetensors"), bytes);
  const std::string message = LoadError();
  EXPECT_THAT(message, HasSubstr(dir_.File("model.safetensors") +
                                 ": tensor 'model.norm.weight' has data_offsets [1039872, "
                                 "1940128] that run past the end of the file"));
}

TEST_F(ModelFilesTest, ShapeDisagreeingWithConfigNamesTensorAndShapes) {
  EditConfig([](nlohmann::json& json) { json["intermediate_size"] = 128; });
  EXPECT_THAT(LoadError(),
              HasSubstr(dir_.File("model.safetensors") +
                        ": tensor 'model.layers.0.mlp.gate_proj.weight' has shape [172, 64], "
                        "expected [128, 64] from config.json"));
}

TEST_F(ModelFilesTest, MissingTensorNamesTheTensor) {
  EditConfig([](nlohmann::json& json) { json["num_hidden_layers"] = 6; });
  EXPECT_THAT(LoadError(), HasSubstr(dir_.File("model.safetensors") +
                                     ": missing tensor 'model.layers.5.input_layernorm.weight'"));
}

TEST_F(ModelFilesTest, UnsupportedArchitectureNamesConfigJson) {
  EditConfig([](nlohmann::json& json) { json["architectures"] = {"FalconForCausalLM"}; });
  EXPECT_THAT(LoadError(), HasSubstr(dir_.File("config.json") +
                                     ": unsupported architecture 'FalconForCausalLM' (supported: "
                                     "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
}

TEST_F(ModelFilesTest, UnsupportedDtypeNamesFileAndTensor) {
  std::string bytes = ReadFile(dir_.File("model.safetensors"));
  // F64 has the same spelling length as F32 and the header stays valid JSON.
  const std::string from = "\"model.norm.weight\":{\"dtype\":\"F32\"";
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, from.size(), "\"model.norm.weight\":{\"dtype\":\"F64\"");
  WriteFile(dir_.File("model.safetensors"), bytes);
  EXPECT_THAT(LoadError(), HasSubstr(dir_.File("model.safetensors") +
                                     ": tensor 'model.norm.weight' has unsupported dtype 'F64'"));
}

}  // namespace
}  // namespace strata::model
