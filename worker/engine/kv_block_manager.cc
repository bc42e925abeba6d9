#include "worker/engine/kv_block_manager.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "worker/engine/check.h"

namespace strata::engine {
namespace {}  // namespace

KvBlockManager::KvBlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching)
    : block_size_(block_size), prefix_caching_enabled_(enable_prefix_caching) {
  STRATA_CHECK(num_blocks >= 0, absl::StrCat("num_blocks ", num_blocks));
  STRATA_CHECK(block_size > 0, absl::StrCat("block_size ", block_size));
  blocks_.resize(num_blocks);
  if (prefix_caching_enabled_) {
    block_tokens_.resize(static_cast<size_t>(num_blocks) * block_size);
  }
  // Ascending order is already a valid min-heap.
  empty_heap_.reserve(num_blocks);
  for (int32_t id = 0; id < num_blocks; ++id) empty_heap_.push_back(id);
}

int32_t KvBlockManager::BlocksForTokens(int64_t num_tokens, int32_t block_size) {
  if (num_tokens <= 0) return 0;
  return static_cast<int32_t>((num_tokens + block_size - 1) / block_size);
}

uint64_t KvBlockManager::HashBlock(uint64_t parent, std::span<const int32_t> token_ids) {
  uint64_t hash = MixBits(parent ^ 0x9e3779b97f4a7c15ull);
  for (int32_t id : token_ids) {
    hash =
        MixBits(hash ^ (static_cast<uint64_t>(static_cast<uint32_t>(id)) + 0x9e3779b97f4a7c15ull));
  }
  return hash;
}

std::span<const int32_t> KvBlockManager::TokensOf(int32_t block_id) const {
  return std::span<const int32_t>(block_tokens_)
      .subspan(static_cast<size_t>(block_id) * block_size_, block_size_);
}

std::vector<int32_t> KvBlockManager::MatchPrefix(std::span<const uint64_t> block_hashes,
                                                 std::span<const int32_t> token_ids) const {
  std::vector<int32_t> matched;
  if (!prefix_caching_enabled_) return matched;
  STRATA_CHECK(
      block_hashes.size() * block_size_ <= token_ids.size(),
      absl::StrCat(block_hashes.size(), " block hashes for ", token_ids.size(), " tokens"));
  for (size_t i = 0; i < block_hashes.size(); ++i) {
    auto it = cached_by_hash_.find(block_hashes[i]);
    if (it == cached_by_hash_.end()) break;
    const std::span<const int32_t> expected = token_ids.subspan(i * block_size_, block_size_);
    const std::span<const int32_t> held = TokensOf(it->second);
    if (!std::equal(expected.begin(), expected.end(), held.begin())) break;  // a collision
    matched.push_back(it->second);
  }
  return matched;
}

int32_t KvBlockManager::CountUnreferenced(std::span<const int32_t> block_ids) const {
  int32_t count = 0;
  for (int32_t id : block_ids) count += blocks_[id].ref_count == 0 ? 1 : 0;
  return count;
}

void KvBlockManager::Acquire(int32_t block_id) {
  Block& block = blocks_[block_id];
  STRATA_CHECK(block.ref_count > 0 || block.registered,
               absl::StrCat("acquiring block ", block_id, " that is neither used nor cached"));
  if (block.ref_count == 0) {
    LruRemove(block_id);
    --num_cached_;
    ++num_used_;
  }
  ++block.ref_count;
}

int32_t KvBlockManager::Allocate() {
  STRATA_CHECK(num_free() > 0, "Allocate with no free block");
  int32_t id;
  if (!empty_heap_.empty()) {
    std::pop_heap(empty_heap_.begin(), empty_heap_.end(), std::greater<int32_t>());
    id = empty_heap_.back();
    empty_heap_.pop_back();
  } else {
    id = lru_head_;
    LruRemove(id);
    Block& evicted = blocks_[id];
    cached_by_hash_.erase(evicted.hash);
    evicted.registered = false;
    evicted.hash = 0;
    --num_cached_;
  }
  Block& block = blocks_[id];
  STRATA_CHECK(block.ref_count == 0 && !block.registered,
               absl::StrCat("allocated block ", id, " is not free"));
  block.ref_count = 1;
  ++num_used_;
  return id;
}

void KvBlockManager::Release(std::span<const int32_t> block_ids) {
  for (auto it = block_ids.rbegin(); it != block_ids.rend(); ++it) {
    const int32_t id = *it;
    STRATA_CHECK(id >= 0 && id < num_total(), absl::StrCat("block id ", id, " out of range"));
    Block& block = blocks_[id];
    STRATA_CHECK(block.ref_count > 0, absl::StrCat("block ", id, " released but not held"));
    if (--block.ref_count > 0) continue;
    --num_used_;
    if (block.registered) {
      LruPushBack(id);
      ++num_cached_;
    } else {
      PushEmpty(id);
    }
  }
}

void KvBlockManager::Register(int32_t block_id, uint64_t hash, std::span<const int32_t> token_ids) {
  if (!prefix_caching_enabled_) return;
  Block& block = blocks_[block_id];
  STRATA_CHECK(block.ref_count > 0,
               absl::StrCat("registering block ", block_id, " that is unused"));
  STRATA_CHECK(
      static_cast<int32_t>(token_ids.size()) == block_size_,
      absl::StrCat("registering ", token_ids.size(), " tokens in a block of ", block_size_));
  if (block.registered) return;
  if (!cached_by_hash_.emplace(hash, block_id).second) return;
  block.registered = true;
  block.hash = hash;
  std::copy(token_ids.begin(), token_ids.end(),
            block_tokens_.begin() + static_cast<size_t>(block_id) * block_size_);
}

std::vector<uint64_t> KvBlockManager::PrefixHashes(size_t max_hashes) const {
  std::vector<uint64_t> hashes;
  for (const Block& block : blocks_) {
    if (hashes.size() >= max_hashes) return hashes;
    if (block.registered && block.ref_count > 0) hashes.push_back(block.hash);
  }
  for (int32_t id = lru_tail_; id != -1 && hashes.size() < max_hashes; id = blocks_[id].lru_prev) {
    hashes.push_back(blocks_[id].hash);
  }
  return hashes;
}

void KvBlockManager::LruPushBack(int32_t block_id) {
  Block& block = blocks_[block_id];
  block.lru_prev = lru_tail_;
  block.lru_next = -1;
  if (lru_tail_ >= 0) {
    blocks_[lru_tail_].lru_next = block_id;
  } else {
    lru_head_ = block_id;
  }
  lru_tail_ = block_id;
}

void KvBlockManager::LruRemove(int32_t block_id) {
  Block& block = blocks_[block_id];
  if (block.lru_prev >= 0) {
    blocks_[block.lru_prev].lru_next = block.lru_next;
  } else {
    lru_head_ = block.lru_next;
  }
  if (block.lru_next >= 0) {
    blocks_[block.lru_next].lru_prev = block.lru_prev;
  } else {
    lru_tail_ = block.lru_prev;
  }
  block.lru_prev = -1;
  block.lru_next = -1;
}

void KvBlockManager::PushEmpty(int32_t block_id) {
  empty_heap_.push_back(block_id);
  std::push_heap(empty_heap_.begin(), empty_heap_.end(), std::greater<int32_t>());
}

absl::Status KvBlockManager::CheckConsistency() const {
  const int32_t n = num_total();
  std::vector<int> in_empty(n, 0);
  for (int32_t id : empty_heap_) {
    if (id < 0 || id >= n) return absl::InternalError(absl::StrCat("empty list holds id ", id));
    if (++in_empty[id] > 1) return absl::InternalError(absl::StrCat("block ", id, " empty twice"));
  }
  if (!std::is_heap(empty_heap_.begin(), empty_heap_.end(), std::greater<int32_t>())) {
    return absl::InternalError("empty list is not a min-heap");
  }
  std::vector<int> in_lru(n, 0);
  int32_t previous = -1;
  int32_t lru_length = 0;
  for (int32_t id = lru_head_; id >= 0; id = blocks_[id].lru_next) {
    if (id >= n || ++in_lru[id] > 1 || lru_length > n) {
      return absl::InternalError(absl::StrCat("LRU list broken at block ", id));
    }
    if (blocks_[id].lru_prev != previous) {
      return absl::InternalError(absl::StrCat("LRU back link of block ", id));
    }
    previous = id;
    ++lru_length;
  }
  if (previous != lru_tail_) return absl::InternalError("LRU tail is not the last block");
  int32_t used = 0, cached = 0, registered = 0;
  for (int32_t id = 0; id < n; ++id) {
    const Block& block = blocks_[id];
    if (block.ref_count < 0) {
      return absl::InternalError(absl::StrCat("block ", id, " ref_count ", block.ref_count));
    }
    const bool is_used = block.ref_count > 0;
    const bool is_cached = !is_used && block.registered;
    const bool is_empty = !is_used && !block.registered;
    used += is_used;
    cached += is_cached;
    if (in_lru[id] != (is_cached ? 1 : 0)) {
      return absl::InternalError(absl::StrCat("block ", id, " cached ", is_cached ? 1 : 0,
                                              " but in the LRU list ", in_lru[id]));
    }
    if (in_empty[id] != (is_empty ? 1 : 0)) {
      return absl::InternalError(absl::StrCat("block ", id, " empty ", is_empty ? 1 : 0,
                                              " but in the empty list ", in_empty[id]));
    }
    if (block.registered) {
      ++registered;
      auto it = cached_by_hash_.find(block.hash);
      if (it == cached_by_hash_.end() || it->second != id) {
        return absl::InternalError(absl::StrCat("registered block ", id, " not in the hash table"));
      }
    }
  }
  if (registered != static_cast<int32_t>(cached_by_hash_.size())) {
    return absl::InternalError(
        absl::StrCat(cached_by_hash_.size(), " hashes for ", registered, " registered blocks"));
  }
  if (used != num_used_ || cached != num_cached_) {
    return absl::InternalError(absl::StrCat("counted ", used, " used and ", cached,
                                            " cached blocks, tracked ", num_used_, " and ",
                                            num_cached_));
  }
  return absl::OkStatus();
}

}  // namespace strata::engine
