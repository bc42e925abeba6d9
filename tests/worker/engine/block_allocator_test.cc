#include "worker/engine/block_allocator.h"

#include <vector>

#include "gtest/gtest.h"

namespace strata::engine {
namespace {

TEST(BlockAllocatorTest, CountsBlocksForTokens) {
  EXPECT_EQ(BlockAllocator::BlocksForTokens(0, 16), 0);
  EXPECT_EQ(BlockAllocator::BlocksForTokens(1, 16), 1);
  EXPECT_EQ(BlockAllocator::BlocksForTokens(16, 16), 1);
  EXPECT_EQ(BlockAllocator::BlocksForTokens(17, 16), 2);
}

TEST(BlockAllocatorTest, ReserveFailsWithoutReservingWhenTooFewAreLeft) {
  BlockAllocator blocks(4, 16);
  EXPECT_TRUE(blocks.Reserve(3));
  EXPECT_EQ(blocks.num_unreserved(), 1);
  EXPECT_FALSE(blocks.Reserve(2));
  EXPECT_EQ(blocks.num_unreserved(), 1);
  EXPECT_TRUE(blocks.Reserve(1));
  EXPECT_EQ(blocks.num_unreserved(), 0);
}

TEST(BlockAllocatorTest, TakesLowestIdsFirstAndReusesFreedOnes) {
  BlockAllocator blocks(4, 16);
  ASSERT_TRUE(blocks.Reserve(3));
  std::vector<int32_t> taken = {blocks.AllocateReserved(), blocks.AllocateReserved(),
                                blocks.AllocateReserved()};
  EXPECT_EQ(taken, (std::vector<int32_t>{0, 1, 2}));
  blocks.Free(std::vector<int32_t>{1}, 0);
  ASSERT_TRUE(blocks.Reserve(2));
  EXPECT_EQ(blocks.AllocateReserved(), 1);
  EXPECT_EQ(blocks.AllocateReserved(), 3);
}

TEST(BlockAllocatorTest, FreeDropsTheUnusedReservation) {
  BlockAllocator blocks(8, 4);
  ASSERT_TRUE(blocks.Reserve(5));
  std::vector<int32_t> taken = {blocks.AllocateReserved(), blocks.AllocateReserved()};
  EXPECT_EQ(blocks.num_unreserved(), 3);
  blocks.Free(taken, 3);
  EXPECT_EQ(blocks.num_unreserved(), 8);
}

TEST(BlockAllocatorDeathTest, DoubleFreeIsABug) {
  BlockAllocator blocks(2, 4);
  ASSERT_TRUE(blocks.Reserve(1));
  std::vector<int32_t> taken = {blocks.AllocateReserved()};
  blocks.Free(taken, 0);
  EXPECT_DEATH(blocks.Free(taken, 0), "freed but not taken");
}

}  // namespace
}  // namespace strata::engine
