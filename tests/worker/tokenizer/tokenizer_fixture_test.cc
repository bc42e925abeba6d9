// Encode and Decode agree with Hugging Face tokenizers (fixtures made with its
// npm package by tests/data/tokenizers/generate_fixtures.mjs), and the bundled
// model's tokenizer reproduces reference.json.
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker/tokenizer/test_tokenizers.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::tokenizer {
namespace {

using ::strata::tokenizer::testing::AllTokenizerNames;
using ::strata::tokenizer::testing::Escaped;
using ::strata::tokenizer::testing::GetTokenizer;
using ::strata::tokenizer::testing::Ids;
using ::strata::tokenizer::testing::ReadFixture;
using ::testing::ElementsAreArray;

class HuggingFaceFixtureTest : public ::testing::TestWithParam<std::string> {};

// One test per tokenizer (loading the large ones dominates the run time).
TEST_P(HuggingFaceFixtureTest, EncodesAndDecodesLikeHuggingFace) {
  const Tokenizer* tokenizer = GetTokenizer(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  const auto lines = ReadFixture(GetParam(), "encode");
  EXPECT_GE(lines.size(), 300u);
  for (const auto& line : lines) {
    const std::string text = line["text"].get<std::string>();
    EXPECT_THAT(tokenizer->Encode(text, /*add_special_tokens=*/true),
                ElementsAreArray(Ids(line["ids"])))
        << "text " << Escaped(text);
    EXPECT_THAT(tokenizer->Encode(text, /*add_special_tokens=*/false),
                ElementsAreArray(Ids(line["ids_plain"])))
        << "text " << Escaped(text);
    EXPECT_EQ(Escaped(tokenizer->Decode(Ids(line["ids_plain"]), false)),
              Escaped(line["decoded"].get<std::string>()));
    EXPECT_EQ(Escaped(tokenizer->Decode(Ids(line["ids"]), true)),
              Escaped(line["decoded_skip"].get<std::string>()));
  }
  for (const auto& line : ReadFixture(GetParam(), "decode")) {
    const std::vector<int32_t> ids = Ids(line["ids"]);
    EXPECT_EQ(Escaped(tokenizer->Decode(ids, false)), Escaped(line["text"].get<std::string>()))
        << "ids " << line["ids"].dump();
    EXPECT_EQ(Escaped(tokenizer->Decode(ids, true)), Escaped(line["text_skip"].get<std::string>()))
        << "ids " << line["ids"].dump();
  }
}

INSTANTIATE_TEST_SUITE_P(AllTokenizers, HuggingFaceFixtureTest,
                         ::testing::ValuesIn(AllTokenizerNames()), [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

class ByteLevelRoundTripTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ByteLevelRoundTripTest, DecodeOfEncodeGivesTheTextBack) {
  const Tokenizer* tokenizer = GetTokenizer(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  for (const auto& line : ReadFixture(GetParam(), "encode")) {
    const std::string text = line["text"].get<std::string>();
    EXPECT_EQ(Escaped(tokenizer->Decode(tokenizer->Encode(text, false), false)), Escaped(text));
  }
}

INSTANTIATE_TEST_SUITE_P(Gpt2AndPhi2, ByteLevelRoundTripTest,
                         ::testing::Values("gpt2", "phi-2", "llama3-style"), [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(ConcurrentEncodeTest, ThreadsSharingATokenizerGetTheSameIds) {
  const Tokenizer* tokenizer = GetTokenizer("qwen2-style");
  ASSERT_NE(tokenizer, nullptr);
  const auto lines = ReadFixture("qwen2-style", "encode");
  std::vector<std::vector<std::vector<int32_t>>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (const auto& line : lines) {
          results[t].push_back(tokenizer->Encode(line["text"].get<std::string>(), true));
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& result : results) {
    ASSERT_EQ(result.size(), 3 * lines.size());
    for (size_t i = 0; i < result.size(); ++i) {
      EXPECT_EQ(result[i], Ids(lines[i % lines.size()]["ids"]));
    }
  }
}

nlohmann::json ReadReference() {
  std::ifstream in(std::string(STRATA_MODEL_DIR) + "/reference.json");
  std::stringstream content;
  content << in.rdbuf();
  return nlohmann::json::parse(content.str());
}

TEST(StoriesReferenceTest, EncodesEveryReferencePromptToItsPromptIds) {
  const Tokenizer* tokenizer = GetTokenizer("stories260k");
  ASSERT_NE(tokenizer, nullptr);
  const nlohmann::json reference = ReadReference();
  ASSERT_FALSE(reference["prompts"].empty());
  for (const auto& prompt : reference["prompts"]) {
    EXPECT_THAT(tokenizer->Encode(prompt["prompt"].get<std::string>(), true),
                ElementsAreArray(Ids(prompt["prompt_ids"])))
        << "prompt " << prompt["prompt"];
  }
}

TEST(StoriesReferenceTest, DecodesPromptAndGeneratedIdsToDecodedText) {
  const Tokenizer* tokenizer = GetTokenizer("stories260k");
  ASSERT_NE(tokenizer, nullptr);
  for (const auto& prompt : ReadReference()["prompts"]) {
    std::vector<int32_t> ids = Ids(prompt["prompt_ids"]);
    const std::vector<int32_t> generated = Ids(prompt["generated_ids"]);
    ids.insert(ids.end(), generated.begin(), generated.end());
    EXPECT_EQ(tokenizer->Decode(ids, /*skip_special_tokens=*/true),
              prompt["decoded_text"].get<std::string>());
  }
}

TEST(StoriesReferenceTest, StreamsTheCompletionTextInThePromptsContext) {
  const Tokenizer* tokenizer = GetTokenizer("stories260k");
  ASSERT_NE(tokenizer, nullptr);
  for (const auto& prompt : ReadReference()["prompts"]) {
    StreamingDecoder decoder(*tokenizer, /*skip_special_tokens=*/true, Ids(prompt["prompt_ids"]));
    std::string streamed;
    for (int32_t id : Ids(prompt["generated_ids"])) streamed += decoder.Append(id);
    streamed += decoder.Flush();
    // run.c's completion is the decoded text minus the decoded prompt.
    EXPECT_EQ(streamed, prompt["completion_text"].get<std::string>()) << prompt["prompt"];
  }
}

TEST(StoriesReferenceTest, TokenizerConfigDecidesBosAndEos) {
  const Tokenizer* tokenizer = GetTokenizer("stories260k");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_token_id(), 1);
  EXPECT_EQ(tokenizer->eos_token_id(), 2);
  EXPECT_EQ(tokenizer->vocab_size(), 512);
  EXPECT_TRUE(tokenizer->IsSpecial(1));
  EXPECT_FALSE(tokenizer->IsSpecial(300));
  EXPECT_EQ(tokenizer->IdToToken(13), "<0x0A>");
  EXPECT_EQ(tokenizer->IdToToken(100000), "");
}

}  // namespace
}  // namespace strata::tokenizer
