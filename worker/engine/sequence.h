// The engine's state of one accepted request, from Submit to its last output:
// its tokens, where they live in the KV cache, and the per-request sampler,
// stop checker and streaming detokenizer that turn logits into outputs.
//
// Invariants: 0 <= num_computed <= num_tokens(); block_table covers
// num_computed positions; num_output() <= max_tokens(); tokens are only ever
// appended, so hashes of full blocks stay valid for the sequence's life.
//
// Thread-safety: created by the submitting thread, then owned and used by the
// engine's step thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "worker/engine/engine.h"
#include "worker/engine/request.h"
#include "worker/engine/request_validator.h"
#include "worker/engine/sampler.h"
#include "worker/engine/stop_checker.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::engine {

class Sequence {
 public:
  // `eos_token_ids`: the model's EOS list (StopChecker drops it on ignore_eos).
  Sequence(std::string request_id, const GenerationRequest& request, PreparedPrompt prompt,
           Engine::OutputCallback on_output, std::vector<int32_t> eos_token_ids,
           const tokenizer::Tokenizer& tokenizer, uint64_t arrival_order);

  const std::string& request_id() const { return request_id_; }
  int32_t priority() const { return priority_; }
  uint64_t arrival_order() const { return arrival_order_; }
  const std::shared_ptr<Engine::OutputCallback>& on_output() const { return on_output_; }

  std::span<const int32_t> token_ids() const { return token_ids_; }  // prompt + output
  int32_t num_tokens() const { return static_cast<int32_t>(token_ids_.size()); }
  int32_t prompt_len() const { return prompt_len_; }
  int32_t num_output() const { return num_tokens() - prompt_len_; }
  int32_t max_tokens() const { return max_tokens_; }
  const std::optional<std::chrono::system_clock::time_point>& deadline() const { return deadline_; }
  bool finished() const { return finished_; }

  // Tokens that are not in the KV cache yet: the prompt's rest during prefill,
  // then the one token sampled last.
  int32_t num_uncomputed() const { return num_tokens() - num_computed; }

  // Samples the next token from `logits` ([vocab], overwritten), applies the
  // stop conditions and detokenizes; fills `output` (new text, the id, its
  // logprobs and, when the sequence ends, finish_reason and usage).
  // REQUIRES: !finished(), num_uncomputed() == 0.
  void AppendFromLogits(std::span<float> logits, GenerationOutput& output);

  // Ends the sequence without a new token (cancel, shutdown): `output` gets
  // finish_reason `reason` and usage; held-back text is dropped.
  void FinishWithoutToken(FinishReason reason, GenerationOutput& output);

  // Ends the sequence on an error after it was accepted.
  void FinishWithError(absl::Status error, GenerationOutput& output);

  // Scheduling and KV cache bookkeeping, maintained by the Scheduler.
  enum class State { kNew, kWaiting, kRunning, kRemoved };
  State state = State::kNew;
  // Scheduled in a plan that has not completed yet: neither scheduled again
  // nor preempted until then.
  bool in_flight = false;
  int32_t num_computed = 0;          // tokens whose K/V are in the cache
  std::vector<int32_t> block_table;  // block ids, in order of position
  // Leading blocks of block_table registered in (or found in) the prefix cache.
  int32_t num_registered_blocks = 0;
  // Prefix hashes of the first full blocks of token_ids(), extended on demand.
  std::vector<uint64_t> block_hashes;
  // Prompt tokens found in the prefix cache at the first admission (usage);
  // -1 before it.
  int32_t cached_prompt_tokens = -1;
  int32_t num_preemptions = 0;
  // When a step first included it, and whether an output has reported that.
  std::optional<std::chrono::steady_clock::time_point> first_scheduled;
  bool first_scheduled_reported = false;

 private:
  void Finish(FinishReason reason, GenerationOutput& output);

  std::string request_id_;
  int32_t priority_;
  uint64_t arrival_order_;
  std::shared_ptr<Engine::OutputCallback> on_output_;
  std::vector<int32_t> token_ids_;
  int32_t prompt_len_;
  int32_t max_tokens_;
  std::optional<std::chrono::system_clock::time_point> deadline_;
  bool finished_ = false;
  Sampler sampler_;
  StopChecker stop_checker_;
  tokenizer::StreamingDecoder decoder_;
};

}  // namespace strata::engine
