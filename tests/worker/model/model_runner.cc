#include "tests/worker/model/model_runner.h"

#include <algorithm>
#include <cmath>

#include "gtest/gtest.h"

namespace strata::model::testing {

ModelRunner::ModelRunner(Model& model, int32_t blocks_per_sequence)
    : model_(model), blocks_per_sequence_(blocks_per_sequence) {
  // Odd stride through the block ids: consecutive positions land in
  // non-adjacent blocks.
  const int32_t n = model.kv_num_blocks();
  for (int32_t i = 0; i < n; ++i) free_blocks_.push_back(static_cast<int32_t>((i * 7L + 3) % n));
  if (n % 7 == 0) {
    free_blocks_.clear();
    for (int32_t i = n - 1; i >= 0; --i) free_blocks_.push_back(i);
  }
}

TestSequence ModelRunner::NewSequence() {
  TestSequence seq;
  EXPECT_GE(free_blocks_.size(), static_cast<size_t>(blocks_per_sequence_))
      << "the model's KV cache has too few blocks for another test sequence";
  for (int32_t i = 0; i < blocks_per_sequence_ && !free_blocks_.empty(); ++i) {
    seq.blocks.push_back(free_blocks_.back());
    free_blocks_.pop_back();
  }
  return seq;
}

absl::StatusOr<std::vector<std::vector<float>>> ModelRunner::Step(
    const std::vector<TestSequence*>& sequences, const std::vector<std::vector<int32_t>>& chunks,
    std::vector<bool> wants_logits) {
  if (wants_logits.empty()) wants_logits.assign(sequences.size(), true);
  ForwardBatch batch;
  for (size_t s = 0; s < sequences.size(); ++s) {
    TestSequence& seq = *sequences[s];
    BatchSequence bs;
    bs.first_token = batch.num_tokens();
    bs.num_tokens = static_cast<int32_t>(chunks[s].size());
    bs.context_len = seq.context_len + bs.num_tokens;
    bs.block_table = seq.blocks;
    bs.wants_logits = wants_logits[s];
    for (int32_t i = 0; i < bs.num_tokens; ++i) {
      batch.token_ids.push_back(chunks[s][i]);
      batch.positions.push_back(seq.context_len + i);
    }
    batch.sequences.push_back(std::move(bs));
  }
  std::vector<float> logits;
  if (auto status = model_.Forward(batch, logits); !status.ok()) return status;
  const int32_t vocab = model_.config().vocab_size;
  std::vector<std::vector<float>> rows;
  size_t row = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    sequences[s]->context_len += static_cast<int32_t>(chunks[s].size());
    // A pipeline stage other than the last returns no logits at all.
    if (!wants_logits[s] || logits.empty()) continue;
    rows.emplace_back(logits.begin() + row * vocab, logits.begin() + (row + 1) * vocab);
    ++row;
  }
  return rows;
}

absl::StatusOr<std::vector<float>> ModelRunner::Feed(TestSequence& sequence,
                                                     const std::vector<int32_t>& tokens) {
  auto rows = Step({&sequence}, {tokens});
  if (!rows.ok()) return rows.status();
  return std::move(rows->front());
}

int32_t Argmax(const std::vector<float>& values) {
  return static_cast<int32_t>(std::max_element(values.begin(), values.end()) - values.begin());
}

double MaxRelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  double max_diff = 0.0;
  double max_ref = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[i])));
  }
  if (a.size() != b.size()) return INFINITY;
  return max_ref == 0.0 ? max_diff : max_diff / max_ref;
}

}  // namespace strata::model::testing
