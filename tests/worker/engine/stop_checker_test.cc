#include "worker/engine/stop_checker.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace strata::engine {
namespace {

StopChecker WithStops(std::vector<std::string> stops) {
  StoppingCriteria stopping;
  stopping.stop = std::move(stops);
  return StopChecker(stopping, {});
}

TEST(StopCheckerTest, TextBeforeAStopStringInOnePieceIsKept) {
  StopChecker checker = WithStops({"lo w"});
  StopChecker::TextResult result = checker.AddText("hello world");
  EXPECT_TRUE(result.stopped);
  EXPECT_EQ(result.text, "hel");
}

TEST(StopCheckerTest, StopStringSpanningPiecesIsNeverStreamed) {
  StopChecker checker = WithStops({"abc"});
  std::string streamed;
  StopChecker::TextResult result = checker.AddText("xa");
  streamed += result.text;
  EXPECT_EQ(result.text, "x");
  EXPECT_FALSE(result.stopped);
  result = checker.AddText("b");
  streamed += result.text;
  EXPECT_EQ(result.text, "");
  EXPECT_EQ(checker.held_back_size(), 2u);
  result = checker.AddText("c and more");
  streamed += result.text;
  EXPECT_TRUE(result.stopped);
  EXPECT_EQ(streamed, "x");
}

TEST(StopCheckerTest, HeldBackTextIsReleasedOnceItCannotStartAStop) {
  StopChecker checker = WithStops({"abc"});
  EXPECT_EQ(checker.AddText("xab").text, "x");
  StopChecker::TextResult result = checker.AddText("d");
  EXPECT_FALSE(result.stopped);
  EXPECT_EQ(result.text, "abd");
  EXPECT_EQ(checker.held_back_size(), 0u);
}

TEST(StopCheckerTest, HoldsTheLongestTailThatStartsAStop) {
  // "aab" could start "aabx" only through its whole tail; "ab" alone cannot.
  StopChecker checker = WithStops({"aabx"});
  EXPECT_EQ(checker.AddText("zaab").text, "z");
  EXPECT_EQ(checker.AddText("x").text, "");
}

TEST(StopCheckerTest, EarliestOfSeveralStopStringsWins) {
  StopChecker checker = WithStops({"cd", "bc"});
  StopChecker::TextResult result = checker.AddText("abcd");
  EXPECT_TRUE(result.stopped);
  EXPECT_EQ(result.text, "a");
}

TEST(StopCheckerTest, FinishReleasesHeldText) {
  StopChecker checker = WithStops({"abc"});
  EXPECT_EQ(checker.AddText("xab").text, "x");
  StopChecker::TextResult result = checker.Finish("");
  EXPECT_FALSE(result.stopped);
  EXPECT_EQ(result.text, "ab");
}

TEST(StopCheckerTest, FinishFindsAStopCompletedByTheTail) {
  StopChecker checker = WithStops({"abc"});
  EXPECT_EQ(checker.AddText("xab").text, "x");
  StopChecker::TextResult result = checker.Finish("cd");
  EXPECT_TRUE(result.stopped);
  EXPECT_EQ(result.text, "");
}

TEST(StopCheckerTest, WithoutStopStringsTextPassesThrough) {
  StopChecker checker = WithStops({});
  EXPECT_EQ(checker.AddText("anything").text, "anything");
  EXPECT_EQ(checker.held_back_size(), 0u);
}

TEST(StopCheckerTest, StopTokenIdsAndEosAreTold) {
  StoppingCriteria stopping;
  stopping.stop_token_ids = {7};
  StopChecker checker(stopping, {1, 2});
  EXPECT_EQ(checker.CheckToken(7), FinishReason::kStop);
  EXPECT_EQ(checker.CheckToken(1), FinishReason::kEos);
  EXPECT_EQ(checker.CheckToken(2), FinishReason::kEos);
  EXPECT_EQ(checker.CheckToken(3), FinishReason::kNone);
}

TEST(StopCheckerTest, IgnoreEosDropsTheEosListButNotStopTokens) {
  StoppingCriteria stopping;
  stopping.stop_token_ids = {2};
  stopping.ignore_eos = true;
  StopChecker checker(stopping, {1, 2});
  EXPECT_EQ(checker.CheckToken(1), FinishReason::kNone);
  EXPECT_EQ(checker.CheckToken(2), FinishReason::kStop);
}

}  // namespace
}  // namespace strata::engine
