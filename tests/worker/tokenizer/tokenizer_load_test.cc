// Loading: bad files give a clear status naming the file (and the field);
// tokenizer_config.json decides BOS/EOS when it says so.
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh folder under the test temp dir.
std::string MakeFolder(const std::string& name) {
  const std::filesystem::path folder =
      std::filesystem::path(::testing::TempDir()) / ("strata_tokenizer_load_test_" + name);
  std::filesystem::remove_all(folder);
  std::filesystem::create_directories(folder);
  return folder.string();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

// A small valid tokenizer.json: a Llama-2-style layout over a 9-token vocabulary.
std::string TinyTokenizerJson(const std::string& pre_tokenizer = "null",
                              const std::string& model_type = "\"BPE\"") {
  return R"({
    "added_tokens": [
      {"id": 0, "content": "<unk>", "special": true, "normalized": false},
      {"id": 1, "content": "<s>", "special": true, "normalized": false},
      {"id": 2, "content": "</s>", "special": true, "normalized": false}],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "▁"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": )" +
         pre_tokenizer + R"(,
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": )" +
         model_type + R"(, "unk_token": "<unk>", "byte_fallback": true,
      "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "h": 4, "i": 5, "hi": 6, "▁hi": 7,
                "▁h": 8},
      "merges": ["h i", "▁ hi", "▁ h"]}
  })";
}

TEST(TokenizerLoadTest, LoadsAFolderOrItsTokenizerJson) {
  const std::string folder = MakeFolder("valid");
  WriteFile(folder + "/tokenizer.json", TinyTokenizerJson());
  for (const std::string& path : {folder, folder + "/tokenizer.json"}) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(path);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    EXPECT_THAT((*tokenizer)->Encode("hi hi", true), ElementsAre(1, 7, 7));
    EXPECT_THAT((*tokenizer)->Encode("hi", false), ElementsAre(7));
    EXPECT_EQ((*tokenizer)->Decode(std::vector<int32_t>{1, 7, 7}, true), "hi hi");
    EXPECT_EQ((*tokenizer)->bos_token_id(), 1);
    EXPECT_EQ((*tokenizer)->eos_token_id(), std::nullopt);
  }
}

TEST(TokenizerLoadTest, MissingFileIsNotFoundAndNamesTheFile) {
  const std::string folder = MakeFolder("missing");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr(folder + "/tokenizer.json"));
}

TEST(TokenizerLoadTest, BadJsonIsInvalidArgumentAndNamesTheFile) {
  const std::string folder = MakeFolder("bad_json");
  WriteFile(folder + "/tokenizer.json", "{\"model\": {\"vocab\": ");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr(folder + "/tokenizer.json"));
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("not valid JSON"));
}

TEST(TokenizerLoadTest, UnknownModelTypeNamesTheFileAndTheType) {
  const std::string folder = MakeFolder("wordpiece");
  WriteFile(folder + "/tokenizer.json", TinyTokenizerJson("null", "\"WordPiece\""));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  const std::string message(tokenizer.status().message());
  EXPECT_THAT(message, HasSubstr(folder + "/tokenizer.json"));
  EXPECT_THAT(message, HasSubstr("model.type"));
  EXPECT_THAT(message, HasSubstr("WordPiece"));
}

TEST(TokenizerLoadTest, UnknownPreTokenizerNamesItsJsonLocation) {
  const std::string folder = MakeFolder("pre_tokenizer");
  WriteFile(folder + "/tokenizer.json", TinyTokenizerJson(R"({"type": "Sequence", "pretokenizers": [
                {"type": "Digits"}, {"type": "UnicodeScripts"}]})"));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(std::string(tokenizer.status().message()),
              HasSubstr("pre_tokenizer.pretokenizers[1].type: unsupported pre-tokenizer "
                        "\"UnicodeScripts\""));
}

TEST(TokenizerLoadTest, InvalidRegexNamesThePattern) {
  const std::string folder = MakeFolder("regex");
  WriteFile(folder + "/tokenizer.json",
            TinyTokenizerJson(R"({"type": "Split", "pattern": {"Regex": "(unclosed"},
                "behavior": "Isolated"})"));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("pre_tokenizer.pattern"));
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("(unclosed"));
}

TEST(TokenizerLoadTest, MergeOfUnknownTokensNamesTheMerge) {
  const std::string folder = MakeFolder("merge");
  std::string json = TinyTokenizerJson();
  json.replace(json.find("\"h i\""), 5, "\"h x\"");
  WriteFile(folder + "/tokenizer.json", json);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(std::string(tokenizer.status().message()),
              HasSubstr("model.merges[0]: \"x\" is not in the vocabulary"));
}

TEST(TokenizerLoadTest, TokenizerConfigAddEosTokenAppendsEos) {
  const std::string folder = MakeFolder("config_eos");
  WriteFile(folder + "/tokenizer.json", TinyTokenizerJson());
  WriteFile(folder + "/tokenizer_config.json",
            R"({"add_bos_token": false, "add_eos_token": true, "bos_token": "<s>",
                "eos_token": {"content": "</s>", "special": true}})");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT((*tokenizer)->Encode("hi", true), ElementsAre(7, 2));
  EXPECT_THAT((*tokenizer)->Encode("hi", false), ElementsAre(7));
  EXPECT_EQ((*tokenizer)->bos_token_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_token_id(), 2);
}

TEST(TokenizerLoadTest, BadTokenizerConfigNamesThatFile) {
  const std::string folder = MakeFolder("config_bad");
  WriteFile(folder + "/tokenizer.json", TinyTokenizerJson());
  WriteFile(folder + "/tokenizer_config.json", R"({"eos_token": "<nope>"})");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(std::string(tokenizer.status().message()),
              HasSubstr(folder + "/tokenizer_config.json: eos_token: \"<nope>\" is not in the "
                                 "vocabulary"));
  WriteFile(folder + "/tokenizer_config.json", "{");
  tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(std::string(tokenizer.status().message()),
              HasSubstr(folder + "/tokenizer_config.json: not valid JSON"));
}

TEST(TokenizerLoadTest, WrongFieldTypeIsAnErrorNotACrash) {
  const std::string folder = MakeFolder("field_type");
  std::string json = TinyTokenizerJson();
  json.replace(json.find("\"byte_fallback\": true"), 21, "\"byte_fallback\": \"yes\"");
  WriteFile(folder + "/tokenizer.json", json);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(folder);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(std::string(tokenizer.status().message()),
              HasSubstr("model.byte_fallback: must be true or false"));
}

}  // namespace
}  // namespace strata::tokenizer
