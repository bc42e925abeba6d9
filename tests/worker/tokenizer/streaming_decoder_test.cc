// StreamingDecoder: the stream equals the full decode (in the prompt's
// context), and no chunk ever ends with half a character.
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/worker/tokenizer/test_tokenizers.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using ::strata::tokenizer::testing::AllTokenizerNames;
using ::strata::tokenizer::testing::Escaped;
using ::strata::tokenizer::testing::GetTokenizer;

// Random ids biased toward the hard cases: special tokens and, for
// sentencepiece-style vocabularies, <0xXX> byte pieces (ids 3..258).
std::vector<int32_t> RandomIds(const Tokenizer& tokenizer, std::mt19937& rng, size_t count) {
  std::uniform_int_distribution<int32_t> any(0, tokenizer.vocab_size() - 1);
  std::uniform_int_distribution<int32_t> low(0, 258);
  std::uniform_int_distribution<int32_t> top(std::max(0, tokenizer.vocab_size() - 40),
                                             tokenizer.vocab_size() - 1);
  std::uniform_int_distribution<int> kind(0, 9);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < count; ++i) {
    const int k = kind(rng);
    ids.push_back(k < 3 ? low(rng) : k == 3 ? top(rng) : any(rng));
  }
  return ids;
}

// Decode(prompt + generated) without its longest common prefix with
// Decode(prompt), cut at a character boundary: the StreamingDecoder contract.
std::string ExpectedStream(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                           const std::vector<int32_t>& generated, bool skip_special) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string full = tokenizer.Decode(all, skip_special);
  if (prompt.empty()) return full;
  const std::string context = tokenizer.Decode(prompt, skip_special);
  size_t common = 0;
  while (common < full.size() && common < context.size() && full[common] == context[common]) {
    ++common;
  }
  while (common > 0 && common < full.size() &&
         (static_cast<unsigned char>(full[common]) & 0xC0) == 0x80) {
    --common;
  }
  return full.substr(common);
}

class StreamingDecoderTest : public ::testing::TestWithParam<std::string> {};

// One test per tokenizer (loading the large ones dominates the run time):
// seeded random ids, with and without prompt context and special tokens, and
// the ids of a real text.
TEST_P(StreamingDecoderTest, StreamEqualsFullDecode) {
  const Tokenizer* tokenizer = GetTokenizer(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> prompt_length(1, 24);
  size_t total_ids = 0;
  for (int stream = 0; stream < 24; ++stream) {
    const bool skip_special = stream % 2 == 0;
    const bool with_prompt = stream % 4 >= 2;
    const std::vector<int32_t> prompt =
        with_prompt ? RandomIds(*tokenizer, rng, prompt_length(rng)) : std::vector<int32_t>{};
    const std::vector<int32_t> generated = RandomIds(*tokenizer, rng, 200);
    total_ids += generated.size();

    StreamingDecoder decoder(*tokenizer, skip_special, prompt);
    std::string streamed;
    for (int32_t id : generated) {
      const std::string chunk = decoder.Append(id);
      ASSERT_EQ(ValidUtf8PrefixLength(chunk), chunk.size()) << "half a character streamed";
      ASSERT_FALSE(EndsWithReplacementCharacter(chunk)) << "an incomplete tail was streamed";
      streamed += chunk;
    }
    streamed += decoder.Flush();
    EXPECT_EQ(Escaped(streamed),
              Escaped(ExpectedStream(*tokenizer, prompt, generated, skip_special)))
        << "stream " << stream << " skip_special " << skip_special << " prompt " << with_prompt;
  }
  EXPECT_GE(total_ids, 4000u);

  const std::string text = "Hi there 🙂 — naïve 東京\n  x = 12345; done.";
  const std::vector<int32_t> ids = tokenizer->Encode(text, false);
  StreamingDecoder decoder(*tokenizer, /*skip_special_tokens=*/true);
  std::string streamed;
  for (int32_t id : ids) streamed += decoder.Append(id);
  streamed += decoder.Flush();
  EXPECT_EQ(streamed, tokenizer->Decode(ids, true));
}

INSTANTIATE_TEST_SUITE_P(AllTokenizers, StreamingDecoderTest,
                         ::testing::ValuesIn(AllTokenizerNames()), [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(StreamingDecoderUtf8Test, HoldsBackAnEmojiUntilItsLastByteArrives) {
  const Tokenizer* byte_level = GetTokenizer("llama3-style");
  ASSERT_NE(byte_level, nullptr);
  const std::vector<int32_t> ids = byte_level->Encode("🙂", false);
  ASSERT_GT(ids.size(), 1u);  // the emoji's four bytes span several tokens
  StreamingDecoder decoder(*byte_level, false);
  for (size_t i = 0; i + 1 < ids.size(); ++i) EXPECT_EQ(decoder.Append(ids[i]), "");
  EXPECT_EQ(decoder.Append(ids.back()), "🙂");
  EXPECT_EQ(decoder.Flush(), "");
}

TEST(StreamingDecoderUtf8Test, HoldsBackByteFallbackPiecesUntilTheirGroupEnds) {
  const Tokenizer* stories = GetTokenizer("stories260k");
  ASSERT_NE(stories, nullptr);
  // "é" is not in the vocabulary: <0xC3><0xA9> byte pieces.
  const std::vector<int32_t> ids = stories->Encode("Lily é", false);
  StreamingDecoder decoder(*stories, true);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string chunk = decoder.Append(id);
    if (stories->DecodeDependsOnNext(id)) {
      EXPECT_EQ(chunk, "");
    }
    streamed += chunk;
  }
  streamed += decoder.Flush();
  EXPECT_EQ(streamed, "Lily é");
}

TEST(StreamingDecoderUtf8Test, FlushEmitsAnIncompleteTailAsDecoded) {
  const Tokenizer* byte_level = GetTokenizer("llama3-style");
  ASSERT_NE(byte_level, nullptr);
  const std::vector<int32_t> ids = byte_level->Encode("🙂", false);
  StreamingDecoder decoder(*byte_level, false);
  EXPECT_EQ(decoder.Append(ids[0]), "");
  EXPECT_EQ(decoder.Flush(), byte_level->Decode(std::vector<int32_t>{ids[0]}, false));
}

TEST(StreamingDecoderUtf8Test, CompletesACharacterThePromptLeftOpen) {
  const Tokenizer* byte_level = GetTokenizer("llama3-style");
  ASSERT_NE(byte_level, nullptr);
  const std::vector<int32_t> ids = byte_level->Encode("ab🙂", false);
  ASSERT_GE(ids.size(), 3u);
  // The prompt ends inside the emoji; the generated ids finish it.
  const std::vector<int32_t> prompt(ids.begin(), ids.end() - 1);
  StreamingDecoder decoder(*byte_level, false, prompt);
  EXPECT_EQ(decoder.Append(ids.back()) + decoder.Flush(), "🙂");
}

}  // namespace
}  // namespace strata::tokenizer
