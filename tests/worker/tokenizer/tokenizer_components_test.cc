// The pieces under the tokenizer: UTF-8 handling, Unicode normalization, the
// Oniguruma-compatible regex layer, split behaviours.
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/tokenizer/test_tokenizers.h"
#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/regex.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using ::testing::ElementsAre;
using Ranges = std::vector<std::pair<size_t, size_t>>;

std::unique_ptr<Regex> MustCompile(std::string_view pattern, bool literal = false) {
  absl::StatusOr<std::unique_ptr<Regex>> regex = Regex::Compile(pattern, literal);
  EXPECT_TRUE(regex.ok()) << regex.status();
  return std::move(*regex);
}

std::vector<std::string> Pieces(std::string_view text, std::string_view pattern,
                                SplitBehavior behavior, bool invert = false) {
  std::vector<std::string> out;
  for (const auto& [begin, end] : SplitRanges(text, *MustCompile(pattern), behavior, invert)) {
    out.emplace_back(text.substr(begin, end - begin));
  }
  return out;
}

TEST(Utf8Test, LossyReplacesEachMaximalInvalidSubpart) {
  EXPECT_EQ(Utf8Lossy("plain"), "plain");
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F\x99"
                      "b"),
            "a\uFFFD"
            "b");                                              // truncated 4-byte sequence
  EXPECT_EQ(Utf8Lossy("\xC0\x80"), "\uFFFD\uFFFD");            // overlong lead byte
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // surrogate
  EXPECT_EQ(Utf8Lossy("\xE2\x82"), "\uFFFD");                  // truncated at the end
  EXPECT_EQ(Utf8Lossy("\xFF\xE2\x82\xAC"), "\uFFFD\u20AC");
  EXPECT_EQ(ValidUtf8PrefixLength("ab\xE2\x82"), 2u);
}

TEST(Utf8Test, Gpt2ByteSymbolsAreNotInByteOrder) {
  EXPECT_EQ(ByteToSymbol()[' '], U'\u0120');   // Ġ
  EXPECT_EQ(ByteToSymbol()['\n'], U'\u010A');  // Ċ
  EXPECT_EQ(ByteToSymbol()['!'], U'!');
  EXPECT_EQ(ByteToSymbol()[0x00], U'\u0100');
  for (int b = 0; b < 256; ++b) EXPECT_EQ(SymbolToByte(ByteToSymbol()[b]), b);
  EXPECT_EQ(SymbolToByte(U'\u0200'), -1);
}

TEST(UnicodeNormalizationTest, NfcComposesAndReordersMarks) {
  EXPECT_EQ(NormalizeNfc("cafe\u0301"), "caf\u00e9");
  EXPECT_EQ(NormalizeNfc("\u1100\u1161\u11a8"), "\uac01");    // Hangul L V T
  EXPECT_EQ(NormalizeNfc("\u212b"), "\u00c5");                // singleton: Angstrom sign
  EXPECT_EQ(NormalizeNfc("q\u0307\u0323"), "q\u0323\u0307");  // canonical order
  EXPECT_EQ(NormalizeNfc("\u1e0b\u0323"), "\u1e0d\u0307");    // blocked, recomposed
  EXPECT_EQ(NormalizeNfc("ascii only"), "ascii only");
  EXPECT_EQ(NormalizeNfd("\u00e9\uac01"), "e\u0301\u1100\u1161\u11a8");
  EXPECT_EQ(NormalizeNfd("\u0130"), "I\u0307");
  EXPECT_EQ(NormalizeNfd("caf\u00e9"), "cafe\u0301");
}

TEST(UnicodeNormalizationTest, LowercaseIsPerCharacter) {
  EXPECT_EQ(Lowercase("ÀBC ΣΑΣ İ"), "àbc σασ i\u0307");
}

TEST(RegexTest, WhiteSpaceIsUnicodeWhiteSpaceOnly) {
  const auto space = MustCompile(R"(\s)");
  for (const char* yes : {"\t", "\n", "\x0b", "\x0c", "\r", " ", "\u0085", "\u00a0", "\u1680",
                          "\u2000", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"}) {
    EXPECT_EQ(space->FindAll(yes).size(), 1u) << testing::Escaped(yes);
  }
  for (const char* no : {"\x1c", "\x1d", "\x1e", "\x1f", "\u180e", "\u200b", "a", "\ufeff"}) {
    EXPECT_TRUE(space->FindAll(no).empty()) << testing::Escaped(no);
  }
  const auto not_space = MustCompile(R"([^\s\p{L}])");
  EXPECT_THAT(not_space->FindAll("a \x1c"), ElementsAre(std::pair<size_t, size_t>(2, 3)));
}

TEST(RegexTest, RewritesOnlyEscapesThatDifferFromOniguruma) {
  EXPECT_EQ(RewriteForPcre2(R"(\p{L}+|\d)"), R"(\p{L}+|\d)");
  EXPECT_NE(RewriteForPcre2(R"(\s+)"), R"(\s+)");
  EXPECT_EQ(RewriteForPcre2(R"(\\s)"), R"(\\s)");  // an escaped backslash, then "s"
  EXPECT_EQ(RewriteForPcre2(R"(\Q\s\E)"), R"(\Q\s\E)");
  EXPECT_EQ(RewriteForPcre2(R"([]\s])").front(), '[');
}

TEST(RegexTest, EmptyMatchesFollowOnigurumaIteration) {
  // An empty match right after a match is skipped; others are reported.
  EXPECT_EQ(MustCompile("a*")->FindAll("baab"), (Ranges{{0, 0}, {1, 3}, {4, 4}}));
  EXPECT_TRUE(MustCompile("", /*literal=*/true)->FindAll("abc").empty());
}

TEST(RegexTest, Gpt2ContractionsAreCaseSensitive) {
  const auto gpt2 =
      MustCompile(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  std::vector<std::string> pieces;
  const std::string text = "don't DON'T";
  for (const auto& [begin, end] : gpt2->FindAll(text)) {
    pieces.push_back(text.substr(begin, end - begin));
  }
  EXPECT_THAT(pieces, ElementsAre("don", "'t", " DON", "'", "T"));
}

TEST(RegexTest, VeryLongRunsDoNotFail) {
  const auto gpt2_tail = MustCompile(R"(\s+(?!\S)|\s+)");
  const std::string spaces(200000, ' ');
  EXPECT_EQ(gpt2_tail->FindAll(spaces + "x"),
            (Ranges{{0, spaces.size() - 1}, {spaces.size() - 1, spaces.size()}}));
}

TEST(SplitBehaviorTest, MatchesHuggingFaceDocumentation) {
  const std::string text = "the-final--countdown";
  EXPECT_THAT(Pieces(text, "-", SplitBehavior::kRemoved), ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(Pieces(text, "-", SplitBehavior::kIsolated),
              ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(Pieces(text, "-", SplitBehavior::kMergedWithPrevious),
              ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(Pieces(text, "-", SplitBehavior::kMergedWithNext),
              ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(Pieces(text, "-", SplitBehavior::kContiguous),
              ElementsAre("the", "-", "final", "--", "countdown"));
  EXPECT_THAT(Pieces(text, "-", SplitBehavior::kRemoved, /*invert=*/true),
              ElementsAre("-", "-", "-"));
}

TEST(EncodeTest, InvalidUtf8IsEncodedAsReplacementCharacters) {
  const Tokenizer* byte_level = testing::GetTokenizer("llama3-style");
  ASSERT_NE(byte_level, nullptr);
  const std::string invalid = std::string("a") + '\xFF' + "b";
  EXPECT_EQ(byte_level->Encode(invalid, false), byte_level->Encode("a\uFFFDb", false));
}

TEST(EncodeTest, KnownAnswersFromTheNotes) {
  const Tokenizer* phi2 = testing::GetTokenizer("phi-2");
  const Tokenizer* falcon = testing::GetTokenizer("falcon-7b");
  ASSERT_NE(phi2, nullptr);
  ASSERT_NE(falcon, nullptr);
  EXPECT_THAT(phi2->Encode("a   b", false), ElementsAre(64, 50285, 65));
  EXPECT_THAT(phi2->Encode("<|endoftext|>", false), ElementsAre(50256));
  EXPECT_THAT(falcon->Encode("x = 12345", false), ElementsAre(99, 204, 40, 204, 10963, 2617));
  EXPECT_THAT(falcon->Encode("a\x0b"
                             "b",
                             false),
              ElementsAre(76, 77));  // byte missing: dropped
  EXPECT_TRUE(falcon->Encode("\x1c", false).empty());
}

}  // namespace
}  // namespace strata::tokenizer
