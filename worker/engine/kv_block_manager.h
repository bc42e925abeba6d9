// Bookkeeping of the paged KV cache: which block ids sequences hold (with
// reference counts, since sequences with a common prefix share its blocks) and
// which full blocks hold a known token prefix that a later request may reuse
// (the prefix cache). The model owns the KV memory; this class only hands out
// ids, so every rank of a replica can use the same ids.
//
// Every block is in exactly one state:
//   used   - ref_count > 0: in the block table of one or more sequences;
//   cached - ref_count == 0 and registered under a prefix hash: its content is
//            kept for reuse but it may be evicted at any time;
//   empty  - ref_count == 0 and holding nothing worth keeping.
// "Free" blocks (what new work can take) are cached + empty. Allocate() takes
// an empty block first (lowest id first, so runs are reproducible), then
// evicts the cached block released longest ago (LRU). A sequence releases its
// blocks last to first, so the tail of a prefix is evicted before its head.
//
// Prefix hashes form a chain: block i of a token sequence hashes the hash of
// block i-1 and its block_size token ids, so equal hashes mean equal prefixes
// up to and including the block. A registered block also keeps its token ids,
// and a lookup compares them, so a 64-bit hash collision can never hand out
// the wrong content. Only full blocks whose K/V are computed are registered:
// a registered block is never written again until it is evicted.
//
// Thread-safety: not thread-safe; used by the engine's step thread only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace strata::engine {

class KvBlockManager {
 public:
  // Hash of the (empty) prefix before a sequence's first block.
  static constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ull;

  // REQUIRES: num_blocks >= 0, block_size > 0. With enable_prefix_caching
  // false, Register() and MatchPrefix() do nothing: blocks are never cached.
  KvBlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching);

  int32_t block_size() const { return block_size_; }
  int32_t num_total() const { return static_cast<int32_t>(blocks_.size()); }
  bool prefix_caching_enabled() const { return prefix_caching_enabled_; }

  int32_t num_used() const { return num_used_; }
  int32_t num_cached() const { return num_cached_; }
  // Blocks that Allocate() can take: empty plus cached.
  int32_t num_free() const { return num_total() - num_used_; }

  // Blocks that `num_tokens` positions occupy.
  static int32_t BlocksForTokens(int64_t num_tokens, int32_t block_size);

  // The hash of a block holding `token_ids` after a prefix hashing to `parent`.
  static uint64_t HashBlock(uint64_t parent, std::span<const int32_t> token_ids);

  // The cached blocks holding the longest prefix of `token_ids` made of whole
  // blocks: block i is `block_hashes[i]` and token_ids[i * block_size, +block_size).
  // Takes no reference. REQUIRES: block_hashes.size() * block_size <= token_ids.size().
  std::vector<int32_t> MatchPrefix(std::span<const uint64_t> block_hashes,
                                   std::span<const int32_t> token_ids) const;

  // How many of `block_ids` have no reference (those that Acquire() would
  // take out of the free count).
  int32_t CountUnreferenced(std::span<const int32_t> block_ids) const;

  // Adds a reference to a used or cached block (a prefix-cache hit).
  void Acquire(int32_t block_id);

  // Takes a free block with one reference; evicts the LRU cached block when
  // no empty one is left. REQUIRES: num_free() > 0.
  int32_t Allocate();

  // Drops one reference from each block, last to first. A block left without
  // references becomes cached when registered, else empty.
  // REQUIRES: each id holds a reference owned by the caller.
  void Release(std::span<const int32_t> block_ids);

  // Marks a full, computed block as holding the prefix `hash` with these token
  // ids (block_size of them). Ignored when caching is off, when the block is
  // registered already, or when another block holds that prefix (the block
  // then stays unregistered and is emptied on release).
  // REQUIRES: the block is used.
  void Register(int32_t block_id, uint64_t hash, std::span<const int32_t> token_ids);

  // Most hashes PrefixHashes() reports by default (32 KiB).
  static constexpr size_t kMaxReportedPrefixHashes = 4096;

  // The prefix hashes of registered blocks, at most `max_hashes`: used blocks
  // first (in id order), then cached ones, most recently released first (the
  // last to be evicted). O(num_blocks); for load reports.
  std::vector<uint64_t> PrefixHashes(size_t max_hashes = kMaxReportedPrefixHashes) const;

  int32_t ref_count(int32_t block_id) const { return blocks_[block_id].ref_count; }
  bool is_registered(int32_t block_id) const { return blocks_[block_id].registered; }

  // Recounts every structure (states, free heap, LRU list, hash table) and
  // reports the first inconsistency. O(num_blocks); for tests and debugging.
  absl::Status CheckConsistency() const;

 private:
  struct Block {
    int32_t ref_count = 0;
    bool registered = false;
    uint64_t hash = 0;
    // LRU list links (cached blocks only); -1 at the ends.
    int32_t lru_prev = -1;
    int32_t lru_next = -1;
  };

  void LruPushBack(int32_t block_id);
  void LruRemove(int32_t block_id);
  void PushEmpty(int32_t block_id);
  std::span<const int32_t> TokensOf(int32_t block_id) const;

  int32_t block_size_;
  bool prefix_caching_enabled_;
  std::vector<Block> blocks_;
  // Token ids of registered blocks: [num_blocks * block_size].
  std::vector<int32_t> block_tokens_;
  std::vector<int32_t> empty_heap_;  // min-heap of empty block ids
  int32_t lru_head_ = -1;            // released longest ago: evicted first
  int32_t lru_tail_ = -1;
  absl::flat_hash_map<uint64_t, int32_t> cached_by_hash_;  // registered blocks only
  int32_t num_used_ = 0;
  int32_t num_cached_ = 0;
};

}  // namespace strata::engine
