// A deterministic stand-in for model::Model with a paged "KV cache" of token
// ids, for engine tests that must not depend on real weights.
//
// Forward() checks the ForwardBatch invariants (positions, block tables, no
// block that one sequence of a step writes is in another's table: shared
// prefix blocks are read-only), stores each token at its
// position's slot, then computes a sequence's logits from its whole history
// read back through its block table, so a wrong block table or a block reused
// while still in use changes the output. Logits are pseudo-random in [-2, 2]
// per (history, id), plus `preferred_margin` on the token next_token(history)
// chooses: greedy decoding follows next_token exactly.
//
// Thread-safety: Forward() from one thread at a time; the counters may be
// read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <vector>

#include "worker/model/model.h"

namespace strata::fakes {

struct FakeModelOptions {
  int32_t vocab_size = 64;
  int32_t max_position_embeddings = 256;
  std::vector<int32_t> eos_token_ids = {2};
  int32_t kv_block_size = 4;
  int32_t kv_num_blocks = 256;
  // The token greedy decoding picks after `history` (prompt + generated ids).
  // Default: a hash of the history, never 0, 1 or 2 (unk, BOS, EOS).
  std::function<int32_t(std::span<const int32_t> history)> next_token;
  float preferred_margin = 6.0f;
  // This Forward() call fails (counting from 1); 0: none.
  int64_t fail_on_call = 0;
  // > 1: behaves like a pipelined replica (StartForward / FinishForward)
  // taking this many batches at once, and refuses a batch that writes a KV
  // block a batch still in flight writes (a sequence in two micro-batches).
  int32_t batches_in_flight = 1;
};

class FakeModel final : public model::Model {
 public:
  explicit FakeModel(FakeModelOptions options);

  const model::ModelConfig& config() const override { return config_; }
  int32_t kv_block_size() const override { return options_.kv_block_size; }
  int32_t kv_num_blocks() const override { return options_.kv_num_blocks; }
  uint64_t weight_bytes() const override { return 0; }
  uint64_t decode_read_bytes() const override { return 0; }
  DType weight_dtype() const override { return DType::kF32; }
  absl::Status Forward(const model::ForwardBatch& batch, std::vector<float>& logits) override;
  int32_t max_batches_in_flight() const override { return options_.batches_in_flight; }
  absl::Status StartForward(const model::ForwardBatch& batch) override;
  absl::Status FinishForward(std::vector<float>& logits) override;

  // The logits Forward() gives after `history`; tests use it to predict outputs.
  std::vector<float> LogitsFor(std::span<const int32_t> history) const;
  static int32_t DefaultNextToken(std::span<const int32_t> history, int32_t vocab_size);

  int64_t forward_calls() const { return forward_calls_.load(); }
  int32_t max_sequences_per_step() const { return max_sequences_per_step_.load(); }
  int32_t max_tokens_per_step() const { return max_tokens_per_step_.load(); }
  // Most batches started and not finished at once (pipelined mode).
  int32_t max_batches_outstanding() const { return max_batches_outstanding_.load(); }

 private:
  absl::Status CheckBatch(const model::ForwardBatch& batch) const;

  FakeModelOptions options_;
  model::ModelConfig config_;
  std::vector<int32_t> kv_slots_;  // [kv_num_blocks * kv_block_size] token ids, -1: empty
  std::atomic<int64_t> forward_calls_{0};
  std::atomic<int32_t> max_sequences_per_step_{0};
  std::atomic<int32_t> max_tokens_per_step_{0};
  std::atomic<int32_t> max_batches_outstanding_{0};
  // Pipelined mode: batches started, oldest first.
  struct Outstanding {
    std::vector<int32_t> written_blocks;
    absl::Status status;
    std::vector<float> logits;
  };
  std::deque<Outstanding> outstanding_;
};

}  // namespace strata::fakes
