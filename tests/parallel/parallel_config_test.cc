#include "parallel/parallel_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata::parallel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParallelConfigTest, RankIsStageTimesTpPlusTpRank) {
  auto config = ParallelConfig::Create(/*tp=*/2, /*pp=*/3, /*rank=*/5);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->world_size(), 6);
  EXPECT_EQ(config->stage(), 2);
  EXPECT_EQ(config->tp_rank(), 1);
  EXPECT_EQ(config->RankOf(2, 1), 5);
  EXPECT_TRUE(config->is_last_stage());
  EXPECT_FALSE(config->is_first_stage());
  EXPECT_FALSE(config->is_leader());
  for (int rank = 0; rank < 6; ++rank) {
    EXPECT_EQ(config->RankOf(config->StageOf(rank), config->TpRankOf(rank)), rank);
  }
}

TEST(ParallelConfigTest, LeaderIsRankZeroOnTheFirstStage) {
  auto config = ParallelConfig::Create(4, 2, 0);
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->is_leader());
  EXPECT_TRUE(config->is_first_stage());
  EXPECT_EQ(config->tp_rank(), 0);
}

TEST(ParallelConfigTest, TensorParallelGroupHoldsTheRanksOfOneStage) {
  auto config = ParallelConfig::Create(4, 2, 6);
  ASSERT_TRUE(config.ok());
  EXPECT_THAT(config->MyTensorParallelGroup(), ElementsAre(4, 5, 6, 7));
  EXPECT_THAT(config->TensorParallelGroupRanks(0), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(config->WorldRanks(), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
}

TEST(ParallelConfigTest, StageNeighboursShareTheTpRank) {
  auto middle = ParallelConfig::Create(2, 3, 3);  // stage 1, tp_rank 1
  ASSERT_TRUE(middle.ok());
  EXPECT_EQ(middle->PreviousStageRank(), 1);
  EXPECT_EQ(middle->NextStageRank(), 5);
  auto first = ParallelConfig::Create(2, 3, 0);
  EXPECT_EQ(first->PreviousStageRank(), std::nullopt);
  EXPECT_EQ(first->NextStageRank(), 2);
  auto last = ParallelConfig::Create(2, 3, 4);
  EXPECT_EQ(last->NextStageRank(), std::nullopt);
  EXPECT_EQ(last->PreviousStageRank(), 2);
}

TEST(ParallelConfigTest, RejectsRankOutsideTheWorld) {
  auto config = ParallelConfig::Create(2, 2, 4);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("rank must be in [0, tp*pp = 4)"));
  EXPECT_FALSE(ParallelConfig::Create(0, 1, 0).ok());
  EXPECT_FALSE(ParallelConfig::Create(1, 0, 0).ok());
  EXPECT_FALSE(ParallelConfig::Create(1, 1, -1).ok());
}

TEST(SplitLayersTest, FiveLayersOverThreeStagesGivesTheLastStageFewest) {
  auto ranges = SplitLayers(5, 3);
  ASSERT_TRUE(ranges.ok()) << ranges.status();
  EXPECT_THAT(*ranges, ElementsAre(IndexRange{0, 2}, IndexRange{2, 4}, IndexRange{4, 5}));
}

TEST(SplitLayersTest, EvenSplitsAreContiguousAndCoverEveryLayer) {
  for (int layers = 1; layers <= 40; ++layers) {
    for (int pp = 1; pp <= std::min(layers, 8); ++pp) {
      auto ranges = SplitLayers(layers, pp);
      ASSERT_TRUE(ranges.ok());
      ASSERT_EQ(static_cast<int>(ranges->size()), pp);
      int64_t next = 0;
      int64_t smallest = layers, largest = 0;
      for (const IndexRange& range : *ranges) {
        EXPECT_EQ(range.begin, next);
        EXPECT_GE(range.size(), 1);
        smallest = std::min(smallest, range.size());
        largest = std::max(largest, range.size());
        next = range.end;
      }
      EXPECT_EQ(next, layers);
      EXPECT_LE(largest - smallest, 1) << layers << " layers over " << pp;
      EXPECT_EQ(ranges->back().size(), smallest) << "the last stage also runs the lm_head";
    }
  }
}

TEST(SplitLayersTest, ExplicitCountsAreUsedAsGiven) {
  const std::vector<int> counts = {2, 3};
  auto ranges = SplitLayers(5, 2, counts);
  ASSERT_TRUE(ranges.ok());
  EXPECT_THAT(*ranges, ElementsAre(IndexRange{0, 2}, IndexRange{2, 5}));
}

TEST(SplitLayersTest, ExplicitCountsMustSumToTheLayerCount) {
  const std::vector<int> counts = {2, 2};
  auto ranges = SplitLayers(5, 2, counts);
  ASSERT_FALSE(ranges.ok());
  EXPECT_THAT(std::string(ranges.status().message()),
              HasSubstr("--pp-layers 2,2 sums to 4 but the model has num_hidden_layers=5"));
}

TEST(SplitLayersTest, ExplicitCountsMustMatchPp) {
  const std::vector<int> counts = {1, 2, 2};
  auto ranges = SplitLayers(5, 2, counts);
  ASSERT_FALSE(ranges.ok());
  EXPECT_THAT(std::string(ranges.status().message()), HasSubstr("3 entries (1,2,2) but pp=2"));
}

TEST(SplitLayersTest, MoreStagesThanLayersIsRefused) {
  auto ranges = SplitLayers(2, 3);
  ASSERT_FALSE(ranges.ok());
  EXPECT_THAT(std::string(ranges.status().message()), HasSubstr("pp=3 exceeds"));
}

TEST(ParseLayerCountsTest, ParsesCommaSeparatedPositiveIntegers) {
  auto counts = ParseLayerCounts("2, 3,1");
  ASSERT_TRUE(counts.ok());
  EXPECT_THAT(*counts, ElementsAre(2, 3, 1));
  EXPECT_TRUE(ParseLayerCounts("")->empty());
}

TEST(ParseLayerCountsTest, RejectsJunkNamingTheEntry) {
  auto counts = ParseLayerCounts("2,x");
  ASSERT_FALSE(counts.ok());
  EXPECT_THAT(std::string(counts.status().message()), HasSubstr("bad entry \"x\""));
  EXPECT_FALSE(ParseLayerCounts("2,0").ok());
  EXPECT_FALSE(ParseLayerCounts("2,,3").ok());
}

ModelDims Stories260k() {
  // GQA 8 heads / 4 KV heads, 5 layers, vocab 512.
  return ModelDims{.num_hidden_layers = 5,
                   .num_attention_heads = 8,
                   .num_key_value_heads = 4,
                   .intermediate_size = 172,
                   .vocab_size = 512};
}

TEST(ValidateModelForParallelismTest, AcceptsTheBundledModelShapes) {
  for (int tp : {1, 2, 4, 8}) {
    for (int pp : {1, 2, 3, 5}) {
      EXPECT_TRUE(ValidateModelForParallelism(Stories260k(), tp, pp).ok()) << tp << "x" << pp;
    }
  }
}

TEST(ValidateModelForParallelismTest, RefusesTpThatDoesNotDivideHeads) {
  absl::Status status = ValidateModelForParallelism(Stories260k(), 3, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("tp=3 does not divide num_attention_heads=8"));
}

TEST(ValidateModelForParallelismTest, RefusesKvHeadsNeitherSplitNorReplicable) {
  ModelDims dims = Stories260k();
  dims.num_attention_heads = 12;
  dims.num_key_value_heads = 4;
  dims.intermediate_size = 0;
  absl::Status status = ValidateModelForParallelism(dims, 6, 1);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("tp=6 and num_key_value_heads=4 are incompatible"));
}

TEST(ValidateModelForParallelismTest, RefusesMoreStagesThanLayers) {
  absl::Status status = ValidateModelForParallelism(Stories260k(), 1, 6);
  EXPECT_THAT(std::string(status.message()), HasSubstr("pp=6 exceeds num_hidden_layers=5"));
}

TEST(ValidateModelForParallelismTest, RefusesMoreTpRanksThanMlpColumns) {
  ModelDims dims = Stories260k();
  dims.num_attention_heads = 16;
  dims.num_key_value_heads = 16;
  dims.intermediate_size = 12;
  absl::Status status = ValidateModelForParallelism(dims, 16, 1);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("intermediate_size=12 is smaller than tp=16"));
}

TEST(ComputeTensorShardTest, SplitsKvHeadsWhenTpDividesThem) {
  const TensorShard shard = ComputeTensorShard(Stories260k(), 2, 1);
  EXPECT_EQ(shard.attention_heads, (IndexRange{4, 8}));
  EXPECT_EQ(shard.kv_heads, (IndexRange{2, 4}));
  EXPECT_FALSE(shard.kv_heads_replicated);
  EXPECT_EQ(shard.intermediate, (IndexRange{86, 172}));
  EXPECT_EQ(shard.vocab, (IndexRange{256, 512}));
}

TEST(ComputeTensorShardTest, ReplicatesKvHeadsWhenTpExceedsThem) {
  // tp 8 over 4 KV heads: ranks 2k and 2k+1 share KV head k, and their query
  // heads (one each) are exactly the two that attend to it.
  const ModelDims dims = Stories260k();
  for (int t = 0; t < 8; ++t) {
    const TensorShard shard = ComputeTensorShard(dims, 8, t);
    EXPECT_TRUE(shard.kv_heads_replicated);
    EXPECT_EQ(shard.kv_heads, (IndexRange{t / 2, t / 2 + 1}));
    EXPECT_EQ(shard.attention_heads, (IndexRange{t, t + 1}));
    const int64_t group = dims.num_attention_heads / dims.num_key_value_heads;
    EXPECT_EQ(shard.attention_heads.begin / group, shard.kv_heads.begin);
  }
}

TEST(ComputeTensorShardTest, UnevenMlpColumnsDifferByAtMostOne) {
  // 172 columns over 8 ranks: 4 ranks hold 22, 4 hold 21.
  int64_t next = 0;
  for (int t = 0; t < 8; ++t) {
    const IndexRange columns = ComputeTensorShard(Stories260k(), 8, t).intermediate;
    EXPECT_EQ(columns.begin, next);
    EXPECT_EQ(columns.size(), t < 4 ? 22 : 21);
    next = columns.end;
  }
  EXPECT_EQ(next, 172);
}

TEST(ComputeTensorShardTest, UnevenVocabularyIsCoveredExactlyOnce) {
  ModelDims dims = Stories260k();
  dims.vocab_size = 32003;
  int64_t next = 0;
  for (int t = 0; t < 8; ++t) {
    const IndexRange vocab = ComputeTensorShard(dims, 8, t).vocab;
    EXPECT_EQ(vocab.begin, next);
    EXPECT_TRUE(vocab.size() == 4000 || vocab.size() == 4001);
    next = vocab.end;
  }
  EXPECT_EQ(next, 32003);
}

}  // namespace
}  // namespace strata::parallel
