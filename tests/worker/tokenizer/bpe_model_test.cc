// BPE details real files rarely show: unknown-token fusing and subword
// affixes. Expected ids were checked against Hugging Face tokenizers 0.23.2.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/hugging_face_tokenizer.h"

namespace strata::tokenizer {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<HuggingFaceTokenizer> Build(nlohmann::json model,
                                            nlohmann::json decoder = nullptr) {
  const nlohmann::json tokenizer = {{"added_tokens", nlohmann::json::array()},
                                    {"normalizer", nullptr},
                                    {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
                                    {"post_processor", nullptr},
                                    {"decoder", decoder},
                                    {"model", model}};
  absl::StatusOr<std::unique_ptr<HuggingFaceTokenizer>> built =
      HuggingFaceTokenizer::FromJson(tokenizer, nullptr);
  EXPECT_TRUE(built.ok()) << built.status();
  return built.ok() ? std::move(*built) : nullptr;
}

nlohmann::json UnknownModel(bool fuse_unk) {
  return {{"type", "BPE"},
          {"unk_token", "<unk>"},
          {"fuse_unk", fuse_unk},
          {"byte_fallback", false},
          {"vocab", {{"<unk>", 0}, {"h", 1}, {"i", 2}, {"hi", 3}}},
          {"merges", {"h i"}}};
}

TEST(BpeModelTest, ConsecutiveUnknownCharactersFuseIntoOneUnkWhenAsked) {
  auto fused = Build(UnknownModel(true));
  ASSERT_NE(fused, nullptr);
  EXPECT_THAT(fused->Encode("hi", false), ElementsAre(3));
  EXPECT_THAT(fused->Encode("h€€i", false), ElementsAre(1, 0, 2));
  EXPECT_THAT(fused->Encode("€€ hi €", false), ElementsAre(0, 3, 0));
  EXPECT_THAT(fused->Encode("x€i", false), ElementsAre(0, 2));
  auto separate = Build(UnknownModel(false));
  ASSERT_NE(separate, nullptr);
  EXPECT_THAT(separate->Encode("h€€i", false), ElementsAre(1, 0, 0, 2));
  EXPECT_THAT(separate->Encode("x€i", false), ElementsAre(0, 0, 2));
}

TEST(BpeModelTest, ContinuingSubwordPrefixAndEndOfWordSuffixShapeTheSymbols) {
  const nlohmann::json model = {
      {"type", "BPE"},
      {"unk_token", "<unk>"},
      {"continuing_subword_prefix", "##"},
      {"end_of_word_suffix", "</w>"},
      {"vocab",
       {{"<unk>", 0},
        {"h", 1},
        {"##i</w>", 2},
        {"hi</w>", 3},
        {"##i", 4},
        {"i</w>", 5},
        {"h</w>", 6},
        {"##h", 7},
        {"##hi</w>", 8},
        {"hi", 9}}},
      // A merged token drops the right side's prefix: "h" + "##i</w>" -> "hi</w>".
      {"merges", nlohmann::json::array({nlohmann::json::array({"h", "##i</w>"}),
                                        nlohmann::json::array({"##h", "##i</w>"})})}};
  auto tokenizer = Build(model, {{"type", "BPEDecoder"}, {"suffix", "</w>"}});
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(tokenizer->Encode("hi", false), ElementsAre(3));
  EXPECT_THAT(tokenizer->Encode("hhi", false), ElementsAre(1, 8));
  EXPECT_THAT(tokenizer->Encode("i", false), ElementsAre(5));
  EXPECT_THAT(tokenizer->Encode("h hi", false), ElementsAre(6, 3));
  EXPECT_EQ(tokenizer->Decode(std::vector<int32_t>{1, 8}, false), "h##hi");
  EXPECT_EQ(tokenizer->Decode(std::vector<int32_t>{6, 3}, false), "h hi");
}

TEST(BpeModelTest, WithoutUnkOrByteFallbackUnknownCharactersAreDropped) {
  nlohmann::json model = UnknownModel(false);
  model.erase("unk_token");
  auto tokenizer = Build(model);
  ASSERT_NE(tokenizer, nullptr);
  // The dropped character leaves its neighbours adjacent: they merge.
  EXPECT_THAT(tokenizer->Encode("h€i", false), ElementsAre(3));
  EXPECT_THAT(tokenizer->Encode("h€ i", false), ElementsAre(1, 2));
}

}  // namespace
}  // namespace strata::tokenizer
