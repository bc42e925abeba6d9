// KV cache block ids: a free list plus reservations. The model owns the KV
// memory; the engine decides which block ids each sequence's positions use.
//
// A sequence reserves, at admission, every block it could ever need, then
// takes blocks out of its reservation as its context grows. Reserving up front
// means a running sequence can never run out of blocks, so no preemption is
// needed; a scheduler that preempts can allocate without reserving instead.
//
// Invariant: free_ids_.size() == num_unreserved() + reserved_
// (reserved blocks stay in the free list until taken).
//
// Thread-safety: not thread-safe; used by the engine's step thread only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace strata::engine {

class BlockAllocator {
 public:
  // REQUIRES: num_blocks >= 0, block_size > 0.
  BlockAllocator(int32_t num_blocks, int32_t block_size);

  int32_t block_size() const { return block_size_; }
  int32_t num_total() const { return num_total_; }
  // Blocks neither taken nor reserved: what a new sequence can still reserve.
  int32_t num_unreserved() const;

  // Blocks that `num_tokens` positions occupy.
  static int32_t BlocksForTokens(int64_t num_tokens, int32_t block_size);

  // Reserves `count` blocks for later AllocateReserved() calls. Returns false,
  // reserving nothing, when fewer than `count` are unreserved.
  bool Reserve(int32_t count);

  // Takes one block out of a reservation.
  // REQUIRES: a reservation made by Reserve() that is not used up.
  int32_t AllocateReserved();

  // Returns taken blocks to the free list and drops what is left of their
  // owner's reservation.
  // REQUIRES: every id was returned by AllocateReserved() and not freed since;
  // unused_reservation <= the blocks reserved and not taken.
  void Free(std::span<const int32_t> block_ids, int32_t unused_reservation);

 private:
  int32_t num_total_;
  int32_t block_size_;
  // Free ids; the lowest ids are taken first so allocation is reproducible.
  std::vector<int32_t> free_ids_;
  int32_t reserved_ = 0;
  std::vector<bool> taken_;  // [num_total]: catches double frees
};

}  // namespace strata::engine
