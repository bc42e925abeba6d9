// Checks a GenerationRequest before the engine accepts it, and works out its
// prompt ids and token limit. Every error names the offending field:
// INVALID_ARGUMENT for bad values, OUT_OF_RANGE for a prompt that does not fit
// the model's context, RESOURCE_EXHAUSTED for one the KV cache can never hold.
//
// Thread-safety: stateless functions; the tokenizer is used read-only.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/engine/request.h"

namespace strata::tokenizer {
class Tokenizer;
}

namespace strata::engine {

inline constexpr int32_t kMaxTopLogprobs = 20;

// What the engine needs to know about the model and its cache to admit a request.
struct RequestLimits {
  int32_t vocab_size = 0;
  int32_t max_context = 0;         // max_position_embeddings
  int64_t kv_capacity_tokens = 0;  // whole KV cache, in token positions
};

// Checks sampling parameters, stop conditions and options; needs no tokenizer.
absl::Status ValidateParameters(const GenerationRequest& request, int32_t vocab_size);

struct PreparedPrompt {
  std::vector<int32_t> prompt_ids;
  // max_tokens clamped to the context left (and, when the request left it
  // unset, to what the KV cache can hold).
  int32_t max_tokens = 0;
};

// ValidateParameters, then the prompt: prompt_ids when given, else
// prompt_text encoded with `tokenizer`.
absl::StatusOr<PreparedPrompt> PrepareRequest(const GenerationRequest& request,
                                              const tokenizer::Tokenizer& tokenizer,
                                              const RequestLimits& limits);

// Positions a sequence with `prompt_tokens` prompt tokens and `max_tokens`
// sampled tokens occupies in the KV cache: the last sampled token is never
// fed back.
int64_t KvTokensNeeded(int64_t prompt_tokens, int64_t max_tokens);

}  // namespace strata::engine
