#include "worker/engine/request_validator.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::engine {
namespace {

std::string FormatFloat(float value) { return absl::StrFormat("%g", value); }

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status CheckIds(const std::vector<int32_t>& ids, const char* field, int32_t vocab_size) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Invalid(absl::StrCat(field, "[", i, "] = ", ids[i], " is outside the vocabulary [0, ",
                                  vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int64_t KvTokensNeeded(int64_t prompt_tokens, int64_t max_tokens) {
  return prompt_tokens + max_tokens - 1;
}

absl::Status ValidateParameters(const GenerationRequest& request, int32_t vocab_size) {
  const SamplingParams& s = request.sampling;
  const StoppingCriteria& stop = request.stopping;
  if (stop.max_tokens.has_value() && *stop.max_tokens <= 0) {
    return Invalid(absl::StrCat("max_tokens must be positive, got ", *stop.max_tokens));
  }
  if (!std::isfinite(s.temperature) || s.temperature < 0.0f) {
    return Invalid(absl::StrCat("temperature must be a finite number >= 0 (0 is greedy), got ",
                                FormatFloat(s.temperature)));
  }
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) {
    return Invalid(absl::StrCat("top_p must be in (0, 1], got ", FormatFloat(s.top_p)));
  }
  if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) {
    return Invalid(absl::StrCat("min_p must be in [0, 1], got ", FormatFloat(s.min_p)));
  }
  if (s.top_k < 0) {
    return Invalid(absl::StrCat("top_k must be >= 0 (0 turns it off), got ", s.top_k));
  }
  if (!std::isfinite(s.repetition_penalty) || s.repetition_penalty <= 0.0f) {
    return Invalid(
        absl::StrCat("repetition_penalty must be a finite number > 0 (1 turns it off), got ",
                     FormatFloat(s.repetition_penalty)));
  }
  if (!(s.presence_penalty >= -2.0f && s.presence_penalty <= 2.0f)) {
    return Invalid(
        absl::StrCat("presence_penalty must be in [-2, 2], got ", FormatFloat(s.presence_penalty)));
  }
  if (!(s.frequency_penalty >= -2.0f && s.frequency_penalty <= 2.0f)) {
    return Invalid(absl::StrCat("frequency_penalty must be in [-2, 2], got ",
                                FormatFloat(s.frequency_penalty)));
  }
  if (request.top_logprobs < 0 || request.top_logprobs > kMaxTopLogprobs) {
    return Invalid(absl::StrCat("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ",
                                request.top_logprobs));
  }
  for (size_t i = 0; i < stop.stop.size(); ++i) {
    if (stop.stop[i].empty()) return Invalid(absl::StrCat("stop[", i, "] is an empty string"));
  }
  if (absl::Status status = CheckIds(stop.stop_token_ids, "stop_token_ids", vocab_size);
      !status.ok()) {
    return status;
  }
  if (request.prompt_ids.empty() && request.prompt_text.empty()) {
    return Invalid("prompt is empty: set prompt_text or prompt_ids");
  }
  return CheckIds(request.prompt_ids, "prompt_ids", vocab_size);
}

absl::StatusOr<PreparedPrompt> PrepareRequest(const GenerationRequest& request,
                                              const tokenizer::Tokenizer& tokenizer,
                                              const RequestLimits& limits) {
  if (absl::Status status = ValidateParameters(request, limits.vocab_size); !status.ok()) {
    return status;
  }
  PreparedPrompt prepared;
  if (!request.prompt_ids.empty()) {
    prepared.prompt_ids = request.prompt_ids;
  } else {
    prepared.prompt_ids = tokenizer.Encode(request.prompt_text, request.add_special_tokens);
    if (prepared.prompt_ids.empty()) return Invalid("prompt_text encodes to no tokens");
    if (absl::Status status = CheckIds(prepared.prompt_ids, "prompt_text token", limits.vocab_size);
        !status.ok()) {
      return status;
    }
  }
  const auto prompt_tokens = static_cast<int64_t>(prepared.prompt_ids.size());
  if (prompt_tokens >= limits.max_context) {
    return absl::OutOfRangeError(absl::StrCat(
        "prompt has ", prompt_tokens,
        " tokens but the model's context (max_position_embeddings) is ", limits.max_context,
        " tokens, so at most ", limits.max_context - 1, " prompt tokens leave room to generate"));
  }
  const int64_t context_left = limits.max_context - prompt_tokens;
  const std::optional<int32_t>& requested = request.stopping.max_tokens;
  int64_t max_tokens =
      requested.has_value() ? std::min<int64_t>(*requested, context_left) : context_left;
  const int64_t cache_left = limits.kv_capacity_tokens - prompt_tokens + 1;
  if (KvTokensNeeded(prompt_tokens, max_tokens) > limits.kv_capacity_tokens) {
    if (requested.has_value() || cache_left <= 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "prompt (", prompt_tokens, " tokens) plus max_tokens (", max_tokens, ") needs ",
          KvTokensNeeded(prompt_tokens, max_tokens),
          " KV cache positions but the whole cache holds ", limits.kv_capacity_tokens));
    }
    max_tokens = cache_left;
  }
  prepared.max_tokens = static_cast<int32_t>(max_tokens);
  return prepared;
}

}  // namespace strata::engine
