// Turns one row of logits into the next token of one sequence.
//
// Processing order (as vLLM and Hugging Face apply them):
//   1. repetition penalty (Hugging Face semantics) over prompt + output tokens:
//      a seen token's logit is divided by the penalty when positive and
//      multiplied by it when negative;
//   2. presence / frequency penalties (OpenAI semantics) over output tokens:
//      logit -= presence * (count > 0) + frequency * count;
//   3. temperature 0 (below 1e-5): greedy, the argmax (first index on ties);
//      otherwise logits / temperature, then top_k, top_p, min_p filtering and
//      a draw from what is left.
// Logprobs are the log-softmax of that processed distribution: for greedy, of
// the penalised logits; otherwise of the tempered logits over the tokens the
// filters kept (filtered tokens have probability 0 and are never listed).
//
// The random stream is std::mt19937_64 from the request's seed (or a random
// seed when unset), read as doubles in [0, 1) with 53 bits, so a seed gives
// the same tokens on every machine.
//
// Thread-safety: one Sampler per sequence; not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "worker/engine/request.h"

namespace strata::engine {

struct SampleResult {
  int32_t token_id = 0;
  // Set when the Sampler was built with want_logprobs.
  std::optional<TokenLogprobs> logprobs;
};

class Sampler {
 public:
  // `params` must be valid (see ValidateRequest). `prompt_ids` seed the
  // repetition penalty's set of seen tokens. With `want_logprobs`, every result
  // carries the chosen token's logprob and the `top_logprobs` most likely.
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt_ids, bool want_logprobs,
          int32_t top_logprobs);

  // Samples from `logits` ([vocab], processed in place) and records the chosen
  // token as part of the output for later penalties.
  SampleResult Sample(std::span<float> logits);

  uint64_t seed() const { return seed_; }

 private:
  SamplingParams params_;
  bool want_logprobs_;
  int32_t top_logprobs_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  absl::flat_hash_set<int32_t> seen_tokens_;                   // prompt + output
  absl::flat_hash_map<int32_t, int32_t> output_token_counts_;  // output only
  std::vector<int32_t> candidates_;                            // scratch
};

// The steps of Sample(), exposed for tests.
namespace sampling {

// Temperatures below this are greedy (dividing by them would overflow).
inline constexpr float kGreedyTemperature = 1e-5f;

void ApplyRepetitionPenalty(std::span<float> logits, const absl::flat_hash_set<int32_t>& seen,
                            float penalty);
void ApplyPresenceFrequencyPenalties(std::span<float> logits,
                                     const absl::flat_hash_map<int32_t, int32_t>& counts,
                                     float presence, float frequency);
// Index of the largest logit; the first one on ties.
int32_t Argmax(std::span<const float> logits);

// The tokens top_k, top_p and min_p keep from `logits` (already divided by the
// temperature), most likely first (ties: lower id first). Never empty.
// top_k 0 = off; top_p 1 = off; min_p 0 = off.
std::vector<int32_t> KeptTokens(std::span<const float> logits, int32_t top_k, float top_p,
                                float min_p);

// log(sum(exp(logits[i]))) over `ids`, or over every entry when `ids` is empty.
double LogSumExp(std::span<const float> logits, std::span<const int32_t> ids);

}  // namespace sampling

}  // namespace strata::engine
