// One forward step's input: tokens of several sequences flattened into one
// batch (decode tokens and prefill chunks alike), and where each sequence's
// attention state lives in the paged KV cache.
//
// Invariants: sequences occupy consecutive, non-overlapping token ranges in
// order; for each sequence, the tokens are at positions
// [context_len - num_tokens, context_len) and its block table has at least
// ceil(context_len / block_size) entries.
#pragma once

#include <cstdint>
#include <vector>

namespace strata::model {

struct BatchSequence {
  int32_t first_token = 0;           // index of its first token in ForwardBatch::token_ids
  int32_t num_tokens = 0;            // tokens of this sequence in this step (>= 1)
  int32_t context_len = 0;           // tokens in the KV cache after this step, these included
  std::vector<int32_t> block_table;  // KV block ids, in order of position
  bool wants_logits = true;          // false for a prefill chunk that is not the prompt's last
};

struct ForwardBatch {
  std::vector<int32_t> token_ids;  // [num_tokens]
  std::vector<int32_t> positions;  // [num_tokens]
  std::vector<BatchSequence> sequences;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  // Number of sequences with wants_logits, i.e. rows of the logits output.
  int32_t NumLogitRows() const {
    int32_t rows = 0;
    for (const auto& s : sequences) rows += s.wants_logits ? 1 : 0;
    return rows;
  }
};

}  // namespace strata::model
