#include "tests/fakes/fake_model.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace strata::fakes {
namespace {

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

uint64_t HashHistory(std::span<const int32_t> history) {
  uint64_t hash = 0x9e3779b97f4a7c15ull;
  for (int32_t id : history) hash = Mix(hash ^ static_cast<uint64_t>(id + 1));
  return hash;
}

}  // namespace

FakeModel::FakeModel(FakeModelOptions options) : options_(std::move(options)) {
  config_.architecture = "FakeForCausalLM";
  config_.model_type = "fake";
  config_.hidden_size = 8;
  config_.intermediate_size = 16;
  config_.num_hidden_layers = 1;
  config_.num_attention_heads = 1;
  config_.num_key_value_heads = 1;
  config_.head_dim = 8;
  config_.vocab_size = options_.vocab_size;
  config_.max_position_embeddings = options_.max_position_embeddings;
  config_.bos_token_id = 1;
  config_.eos_token_ids = options_.eos_token_ids;
  if (!options_.next_token) {
    const int32_t vocab = options_.vocab_size;
    options_.next_token = [vocab](std::span<const int32_t> history) {
      return DefaultNextToken(history, vocab);
    };
  }
  kv_slots_.assign(static_cast<size_t>(options_.kv_num_blocks) * options_.kv_block_size, -1);
}

int32_t FakeModel::DefaultNextToken(std::span<const int32_t> history, int32_t vocab_size) {
  return 3 + static_cast<int32_t>(HashHistory(history) % static_cast<uint64_t>(vocab_size - 3));
}

std::vector<float> FakeModel::LogitsFor(std::span<const int32_t> history) const {
  const uint64_t hash = HashHistory(history);
  std::vector<float> logits(options_.vocab_size);
  for (int32_t id = 0; id < options_.vocab_size; ++id) {
    const uint64_t bits = Mix(hash + static_cast<uint64_t>(id) * 0x632be59bd9b4e019ull);
    logits[id] = static_cast<float>(static_cast<double>(bits >> 11) * 0x1.0p-53 * 4.0 - 2.0);
  }
  logits[options_.next_token(history)] += options_.preferred_margin;
  return logits;
}

absl::Status FakeModel::CheckBatch(const model::ForwardBatch& batch) const {
  if (batch.positions.size() != batch.token_ids.size()) {
    return absl::InvalidArgumentError("positions and token_ids differ in length");
  }
  int32_t next_first = 0;
  // A block may be read by several sequences of a step (a shared prefix), but
  // one a sequence writes must be its own.
  absl::flat_hash_map<int32_t, int32_t> readers;  // block -> sequences referencing it
  absl::flat_hash_set<int32_t> written;
  for (const model::BatchSequence& sequence : batch.sequences) {
    if (sequence.first_token != next_first || sequence.num_tokens < 1 ||
        sequence.first_token + sequence.num_tokens > batch.num_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat("bad token range at ", sequence.first_token));
    }
    next_first += sequence.num_tokens;
    if (sequence.context_len > options_.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("context_len ", sequence.context_len, " exceeds the model's context"));
    }
    for (int32_t i = 0; i < sequence.num_tokens; ++i) {
      const int32_t expected = sequence.context_len - sequence.num_tokens + i;
      if (batch.positions[sequence.first_token + i] != expected) {
        return absl::InvalidArgumentError(absl::StrCat("position ", expected, " expected"));
      }
      const int32_t token = batch.token_ids[sequence.first_token + i];
      if (token < 0 || token >= options_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", token, " out of range"));
      }
    }
    const int32_t block_size = options_.kv_block_size;
    const int32_t blocks_needed = (sequence.context_len + block_size - 1) / block_size;
    if (static_cast<int32_t>(sequence.block_table.size()) < blocks_needed) {
      return absl::InvalidArgumentError("block table too short");
    }
    absl::flat_hash_set<int32_t> own;
    for (int32_t b = 0; b < blocks_needed; ++b) {
      const int32_t block = sequence.block_table[b];
      if (block < 0 || block >= options_.kv_num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("block id ", block, " out of range"));
      }
      if (!own.insert(block).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("block ", block, " twice in one block table"));
      }
      ++readers[block];
    }
    const int32_t first_written = (sequence.context_len - sequence.num_tokens) / block_size;
    for (int32_t b = first_written; b < blocks_needed; ++b) {
      written.insert(sequence.block_table[b]);
    }
  }
  for (int32_t block : written) {
    if (readers[block] > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "block ", block, " is written by one sequence and read by another in the same step"));
    }
  }
  if (next_first != batch.num_tokens()) {
    return absl::InvalidArgumentError("tokens not covered by sequences");
  }
  return absl::OkStatus();
}

absl::Status FakeModel::StartForward(const model::ForwardBatch& batch) {
  if (static_cast<int32_t>(outstanding_.size()) >= options_.batches_in_flight) {
    return absl::FailedPreconditionError(absl::StrCat("StartForward with ", outstanding_.size(),
                                                      " batches in flight already (most ",
                                                      options_.batches_in_flight, ")"));
  }
  Outstanding started;
  for (const model::BatchSequence& sequence : batch.sequences) {
    for (int32_t position = sequence.context_len - sequence.num_tokens;
         position < sequence.context_len; ++position) {
      started.written_blocks.push_back(sequence.block_table[position / options_.kv_block_size]);
    }
  }
  for (const Outstanding& other : outstanding_) {
    for (int32_t block : started.written_blocks) {
      if (std::find(other.written_blocks.begin(), other.written_blocks.end(), block) !=
          other.written_blocks.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("block ", block, " is written by two batches in flight"));
      }
    }
  }
  started.status = Forward(batch, started.logits);
  outstanding_.push_back(std::move(started));
  max_batches_outstanding_.store(
      std::max(max_batches_outstanding_.load(), static_cast<int32_t>(outstanding_.size())));
  return absl::OkStatus();
}

absl::Status FakeModel::FinishForward(std::vector<float>& logits) {
  if (outstanding_.empty())
    return absl::FailedPreconditionError("FinishForward: nothing in flight");
  Outstanding finished = std::move(outstanding_.front());
  outstanding_.pop_front();
  logits = std::move(finished.logits);
  return finished.status;
}

absl::Status FakeModel::Forward(const model::ForwardBatch& batch, std::vector<float>& logits) {
  const int64_t call = ++forward_calls_;
  if (call == options_.fail_on_call) {
    return absl::InternalError("fake model failure injected");
  }
  if (absl::Status status = CheckBatch(batch); !status.ok()) return status;
  max_sequences_per_step_.store(
      std::max(max_sequences_per_step_.load(), static_cast<int32_t>(batch.sequences.size())));
  max_tokens_per_step_.store(std::max(max_tokens_per_step_.load(), batch.num_tokens()));

  const int32_t block_size = options_.kv_block_size;
  auto slot = [&](const model::BatchSequence& sequence, int32_t position) -> int32_t& {
    return kv_slots_[static_cast<size_t>(sequence.block_table[position / block_size]) * block_size +
                     position % block_size];
  };
  logits.clear();
  logits.reserve(static_cast<size_t>(batch.NumLogitRows()) * options_.vocab_size);
  for (const model::BatchSequence& sequence : batch.sequences) {
    for (int32_t i = 0; i < sequence.num_tokens; ++i) {
      slot(sequence, batch.positions[sequence.first_token + i]) =
          batch.token_ids[sequence.first_token + i];
    }
    if (!sequence.wants_logits) continue;
    std::vector<int32_t> history(sequence.context_len);
    for (int32_t position = 0; position < sequence.context_len; ++position) {
      history[position] = slot(sequence, position);
      if (history[position] < 0) {
        return absl::InternalError(
            absl::StrCat("KV slot of position ", position, " never written"));
      }
    }
    std::vector<float> row = LogitsFor(history);
    logits.insert(logits.end(), row.begin(), row.end());
  }
  return absl::OkStatus();
}

}  // namespace strata::fakes
