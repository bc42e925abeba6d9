// Plain value types of the engine API: what a caller submits and what it gets
// back. No gRPC here; the service adapter maps these to and from protobuf.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::engine {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;  // unset: random
};

struct StoppingCriteria {
  std::optional<int32_t> max_tokens;  // unset: the rest of the context
  std::vector<std::string> stop;      // stop strings
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
};

struct GenerationRequest {
  std::string request_id;  // unique among requests in flight; the engine makes one if empty
  // Exactly one of prompt_text / prompt_ids is used: prompt_ids when non-empty.
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  bool add_special_tokens = true;  // for prompt_text
  SamplingParams sampling;
  StoppingCriteria stopping;
  int32_t top_logprobs = 0;  // 0..20
  int32_t priority = 0;      // higher first, for admission and preemption
  // When set and passed, the request ends with DEADLINE_EXCEEDED at the next
  // step and its KV blocks are freed (the gRPC adapter passes the call's).
  std::optional<std::chrono::system_clock::time_point> deadline;
};

enum class FinishReason { kNone, kLength, kStop, kEos, kCancelled };

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
};

struct TokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // most likely first
};

// One streamed piece of a generation. The last one of a request has
// finished == true, and then either finish_reason != kNone and usage set, or
// a non-OK error (the request failed after it was accepted).
struct GenerationOutput {
  std::string request_id;
  std::string text;                // new final text (whole UTF-8 characters)
  std::vector<int32_t> token_ids;  // new token ids
  std::vector<TokenLogprobs> logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Usage usage;
  absl::Status error;
  // On the request's first output only: when a step first included it (it
  // left the engine's queue), for the replica_queue / prefill split. Unset
  // when it never ran (refused, cancelled or expired while waiting).
  std::optional<std::chrono::steady_clock::time_point> first_scheduled;
};

}  // namespace strata::engine
