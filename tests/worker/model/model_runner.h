// Drives a Model directly for tests: sequences with their own KV blocks,
// prefill (whole or in chunks), decode, and batches of several sequences.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/model.h"

namespace strata::model::testing {

// One sequence's state: its tokens so far and its blocks.
struct TestSequence {
  std::vector<int32_t> blocks;
  int32_t context_len = 0;
};

// Gives each new sequence `blocks_per_sequence` fresh blocks, handed out in a
// scrambled order so block tables are not contiguous.
class ModelRunner {
 public:
  ModelRunner(Model& model, int32_t blocks_per_sequence);

  TestSequence NewSequence();

  // One Forward over several sequences: `chunks[i]` are the next tokens of
  // `*sequences[i]`. Returns one logits row per sequence ([vocab] each), for
  // sequences whose flag in `wants_logits` is true (all when empty).
  absl::StatusOr<std::vector<std::vector<float>>> Step(
      const std::vector<TestSequence*>& sequences, const std::vector<std::vector<int32_t>>& chunks,
      std::vector<bool> wants_logits = {});

  // Feeds tokens to one sequence in one step; returns the last token's logits.
  absl::StatusOr<std::vector<float>> Feed(TestSequence& sequence,
                                          const std::vector<int32_t>& tokens);

 private:
  Model& model_;
  int32_t blocks_per_sequence_;
  std::vector<int32_t> free_blocks_;
};

// Index of the largest value, first on ties.
int32_t Argmax(const std::vector<float>& values);

// max |a - b| / max |b|
double MaxRelativeError(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace strata::model::testing
