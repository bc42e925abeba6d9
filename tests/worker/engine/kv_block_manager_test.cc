#include "worker/engine/kv_block_manager.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace strata::engine {
namespace {

// Hashes of the full blocks of `tokens`.
std::vector<uint64_t> ChainHashes(const std::vector<int32_t>& tokens, int32_t block_size) {
  std::vector<uint64_t> hashes;
  uint64_t parent = KvBlockManager::kRootHash;
  for (size_t start = 0; start + block_size <= tokens.size(); start += block_size) {
    parent = KvBlockManager::HashBlock(parent,
                                       std::span<const int32_t>(tokens).subspan(start, block_size));
    hashes.push_back(parent);
  }
  return hashes;
}

std::vector<int32_t> Iota(int32_t count, int32_t first) {
  std::vector<int32_t> ids(count);
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

TEST(KvBlockManagerTest, CountsBlocksForTokens) {
  EXPECT_EQ(KvBlockManager::BlocksForTokens(0, 16), 0);
  EXPECT_EQ(KvBlockManager::BlocksForTokens(1, 16), 1);
  EXPECT_EQ(KvBlockManager::BlocksForTokens(16, 16), 1);
  EXPECT_EQ(KvBlockManager::BlocksForTokens(17, 16), 2);
}

TEST(KvBlockManagerTest, AllocatesLowestEmptyIdsFirst) {
  KvBlockManager blocks(4, 2, true);
  EXPECT_EQ(blocks.Allocate(), 0);
  EXPECT_EQ(blocks.Allocate(), 1);
  EXPECT_EQ(blocks.Allocate(), 2);
  blocks.Release(std::vector<int32_t>{1});
  EXPECT_EQ(blocks.Allocate(), 1);
  EXPECT_EQ(blocks.num_used(), 3);
  EXPECT_EQ(blocks.num_free(), 1);
  EXPECT_TRUE(blocks.CheckConsistency().ok());
}

TEST(KvBlockManagerTest, ReleasedRegisteredBlocksStayCachedAndMatch) {
  KvBlockManager blocks(8, 2, true);
  const std::vector<int32_t> tokens = {5, 6, 7, 8, 9};
  const std::vector<uint64_t> hashes = ChainHashes(tokens, 2);
  ASSERT_EQ(hashes.size(), 2u);
  std::vector<int32_t> table = {blocks.Allocate(), blocks.Allocate(), blocks.Allocate()};
  blocks.Register(table[0], hashes[0], std::span<const int32_t>(tokens).subspan(0, 2));
  blocks.Register(table[1], hashes[1], std::span<const int32_t>(tokens).subspan(2, 2));
  blocks.Release(table);
  EXPECT_EQ(blocks.num_used(), 0);
  EXPECT_EQ(blocks.num_cached(), 2);
  EXPECT_EQ(blocks.num_free(), 8);
  EXPECT_EQ(blocks.MatchPrefix(hashes, tokens), (std::vector<int32_t>{table[0], table[1]}));
  // A different second block matches only the first.
  const std::vector<int32_t> other = {5, 6, 7, 1, 9};
  EXPECT_EQ(blocks.MatchPrefix(ChainHashes(other, 2), other), (std::vector<int32_t>{table[0]}));
  EXPECT_TRUE(blocks.CheckConsistency().ok());
}

TEST(KvBlockManagerTest, MatchStopsAtTheFirstMissingBlock) {
  KvBlockManager blocks(8, 2, true);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  const std::vector<uint64_t> hashes = ChainHashes(tokens, 2);
  std::vector<int32_t> table = {blocks.Allocate(), blocks.Allocate(), blocks.Allocate()};
  blocks.Register(table[0], hashes[0], std::span<const int32_t>(tokens).subspan(0, 2));
  blocks.Register(table[2], hashes[2], std::span<const int32_t>(tokens).subspan(4, 2));
  EXPECT_EQ(blocks.MatchPrefix(hashes, tokens), (std::vector<int32_t>{table[0]}));
  blocks.Release(table);
}

TEST(KvBlockManagerTest, AHashCollisionIsNotAHit) {
  KvBlockManager blocks(4, 2, true);
  const std::vector<int32_t> tokens = {1, 2};
  const int32_t block = blocks.Allocate();
  blocks.Register(block, /*hash=*/42, tokens);
  // Same hash, other content.
  const std::vector<uint64_t> forged = {42};
  EXPECT_TRUE(blocks.MatchPrefix(forged, std::vector<int32_t>{1, 3}).empty());
  EXPECT_EQ(blocks.MatchPrefix(forged, tokens), std::vector<int32_t>{block});
  blocks.Release(std::vector<int32_t>{block});
}

TEST(KvBlockManagerTest, SharedBlocksAreReferenceCounted) {
  KvBlockManager blocks(4, 2, true);
  const std::vector<int32_t> tokens = {3, 4};
  const int32_t block = blocks.Allocate();
  blocks.Register(block, ChainHashes(tokens, 2)[0], tokens);
  blocks.Acquire(block);
  EXPECT_EQ(blocks.ref_count(block), 2);
  blocks.Release(std::vector<int32_t>{block});
  EXPECT_EQ(blocks.ref_count(block), 1);
  EXPECT_EQ(blocks.num_used(), 1);
  blocks.Release(std::vector<int32_t>{block});
  EXPECT_EQ(blocks.num_used(), 0);
  EXPECT_EQ(blocks.num_cached(), 1);
  // A cached block comes back into use on a hit.
  blocks.Acquire(block);
  EXPECT_EQ(blocks.num_cached(), 0);
  EXPECT_EQ(blocks.num_used(), 1);
  blocks.Release(std::vector<int32_t>{block});
  EXPECT_TRUE(blocks.CheckConsistency().ok());
}

TEST(KvBlockManagerTest, EmptyBlocksGoBeforeCachedOnesAndCachedOnesLeastRecentlyReleasedFirst) {
  KvBlockManager blocks(4, 1, true);
  std::vector<int32_t> first = {blocks.Allocate(), blocks.Allocate()};   // 0, 1
  std::vector<int32_t> second = {blocks.Allocate(), blocks.Allocate()};  // 2, 3
  for (int32_t id : first) blocks.Register(id, 100 + id, std::vector<int32_t>{id});
  for (int32_t id : second) blocks.Register(id, 100 + id, std::vector<int32_t>{id});
  blocks.Release(first);   // cached: 1 then 0 (last to first)
  blocks.Release(second);  // cached: 3 then 2
  EXPECT_EQ(blocks.num_cached(), 4);
  // The tail of the older sequence goes first, its head next.
  EXPECT_EQ(blocks.Allocate(), 1);
  EXPECT_EQ(blocks.Allocate(), 0);
  EXPECT_EQ(blocks.num_cached(), 2);
  // An evicted block is unregistered: its prefix no longer matches.
  EXPECT_TRUE(blocks.MatchPrefix(std::vector<uint64_t>{101}, std::vector<int32_t>{1}).empty());
  // Emptied blocks are preferred to cached ones.
  blocks.Release(std::vector<int32_t>{1});
  EXPECT_EQ(blocks.Allocate(), 1);
  EXPECT_EQ(blocks.num_cached(), 2);
  EXPECT_TRUE(blocks.CheckConsistency().ok());
}

TEST(KvBlockManagerTest, ADuplicatePrefixIsNotRegisteredTwice) {
  KvBlockManager blocks(4, 2, true);
  const std::vector<int32_t> tokens = {7, 7};
  const uint64_t hash = ChainHashes(tokens, 2)[0];
  const int32_t a = blocks.Allocate();
  const int32_t b = blocks.Allocate();
  blocks.Register(a, hash, tokens);
  blocks.Register(b, hash, tokens);
  EXPECT_TRUE(blocks.is_registered(a));
  EXPECT_FALSE(blocks.is_registered(b));
  blocks.Release(std::vector<int32_t>{a, b});
  EXPECT_EQ(blocks.num_cached(), 1);
  EXPECT_TRUE(blocks.CheckConsistency().ok());
}

TEST(KvBlockManagerTest, WithCachingOffNothingIsCached) {
  KvBlockManager blocks(4, 2, false);
  const std::vector<int32_t> tokens = {1, 2};
  const std::vector<uint64_t> hashes = ChainHashes(tokens, 2);
  const int32_t block = blocks.Allocate();
  blocks.Register(block, hashes[0], tokens);
  blocks.Release(std::vector<int32_t>{block});
  EXPECT_EQ(blocks.num_cached(), 0);
  EXPECT_TRUE(blocks.MatchPrefix(hashes, tokens).empty());
}

TEST(KvBlockManagerTest, HashChainsDependOnTheWholePrefix) {
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> b = {9, 2, 3, 4};
  EXPECT_NE(ChainHashes(a, 2)[1], ChainHashes(b, 2)[1]);
  EXPECT_EQ(ChainHashes(a, 2)[1], ChainHashes(Iota(4, 1), 2)[1]);
}

TEST(KvBlockManagerDeathTest, ReleasingABlockNotHeldIsABug) {
  KvBlockManager blocks(2, 4, true);
  std::vector<int32_t> taken = {blocks.Allocate()};
  blocks.Release(taken);
  EXPECT_DEATH(blocks.Release(taken), "released but not held");
}

}  // namespace
}  // namespace strata::engine
