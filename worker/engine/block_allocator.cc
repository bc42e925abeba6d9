#include "worker/engine/block_allocator.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "worker/engine/check.h"

namespace strata::engine {

BlockAllocator::BlockAllocator(int32_t num_blocks, int32_t block_size)
    : num_total_(num_blocks), block_size_(block_size), taken_(num_blocks, false) {
  STRATA_CHECK(num_blocks >= 0, absl::StrCat("num_blocks ", num_blocks));
  STRATA_CHECK(block_size > 0, absl::StrCat("block_size ", block_size));
  // A min-heap (std::greater), so AllocateReserved takes the lowest free id; ascending
  // order is already a valid min-heap.
  free_ids_.reserve(num_blocks);
  for (int32_t id = 0; id < num_blocks; ++id) free_ids_.push_back(id);
}

int32_t BlockAllocator::num_unreserved() const {
  return static_cast<int32_t>(free_ids_.size()) - reserved_;
}

int32_t BlockAllocator::BlocksForTokens(int64_t num_tokens, int32_t block_size) {
  if (num_tokens <= 0) return 0;
  return static_cast<int32_t>((num_tokens + block_size - 1) / block_size);
}

bool BlockAllocator::Reserve(int32_t count) {
  STRATA_CHECK(count >= 0, absl::StrCat("count ", count));
  if (count > num_unreserved()) return false;
  reserved_ += count;
  return true;
}

int32_t BlockAllocator::AllocateReserved() {
  STRATA_CHECK(reserved_ > 0, "AllocateReserved without a reservation");
  STRATA_CHECK(!free_ids_.empty(), "reserved blocks missing from the free list");
  std::pop_heap(free_ids_.begin(), free_ids_.end(), std::greater<int32_t>());
  int32_t id = free_ids_.back();
  free_ids_.pop_back();
  --reserved_;
  taken_[id] = true;
  return id;
}

void BlockAllocator::Free(std::span<const int32_t> block_ids, int32_t unused_reservation) {
  STRATA_CHECK(unused_reservation >= 0 && unused_reservation <= reserved_,
               absl::StrCat("unused_reservation ", unused_reservation, " of ", reserved_));
  reserved_ -= unused_reservation;
  for (int32_t id : block_ids) {
    STRATA_CHECK(id >= 0 && id < num_total_, absl::StrCat("block id ", id, " out of range"));
    STRATA_CHECK(taken_[id], absl::StrCat("block ", id, " freed but not taken"));
    taken_[id] = false;
    free_ids_.push_back(id);
    std::push_heap(free_ids_.begin(), free_ids_.end(), std::greater<int32_t>());
  }
}

}  // namespace strata::engine
