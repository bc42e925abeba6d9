#include "worker/engine/sequence.h"

#include <algorithm>
#include <utility>

#include "worker/engine/check.h"

namespace strata::engine {

Sequence::Sequence(std::string request_id, const GenerationRequest& request, PreparedPrompt prompt,
                   Engine::OutputCallback on_output, std::vector<int32_t> eos_token_ids,
                   const tokenizer::Tokenizer& tokenizer, uint64_t arrival_order)
    : request_id_(std::move(request_id)),
      priority_(request.priority),
      arrival_order_(arrival_order),
      on_output_(std::make_shared<Engine::OutputCallback>(std::move(on_output))),
      token_ids_(std::move(prompt.prompt_ids)),
      prompt_len_(static_cast<int32_t>(token_ids_.size())),
      max_tokens_(prompt.max_tokens),
      deadline_(request.deadline),
      sampler_(request.sampling, token_ids_, request.top_logprobs > 0, request.top_logprobs),
      stop_checker_(request.stopping, std::move(eos_token_ids)),
      decoder_(tokenizer, /*skip_special_tokens=*/true, token_ids_) {
  token_ids_.reserve(static_cast<size_t>(prompt_len_) + max_tokens_);
}

void Sequence::AppendFromLogits(std::span<float> logits, GenerationOutput& output) {
  STRATA_CHECK(!finished_ && num_uncomputed() == 0, "sampling a sequence that is not ready");
  output.request_id = request_id_;
  SampleResult sample = sampler_.Sample(logits);
  const int32_t token = sample.token_id;
  token_ids_.push_back(token);
  output.token_ids.push_back(token);
  if (sample.logprobs.has_value()) output.logprobs.push_back(std::move(*sample.logprobs));

  // A stop token or EOS ends the sequence before its text counts.
  if (FinishReason reason = stop_checker_.CheckToken(token); reason != FinishReason::kNone) {
    StopChecker::TextResult rest = stop_checker_.Finish(decoder_.Flush());
    output.text += rest.text;
    Finish(rest.stopped ? FinishReason::kStop : reason, output);
    return;
  }
  StopChecker::TextResult text = stop_checker_.AddText(decoder_.Append(token));
  output.text += text.text;
  if (text.stopped) {
    Finish(FinishReason::kStop, output);
  } else if (num_output() >= max_tokens_) {
    StopChecker::TextResult rest = stop_checker_.Finish(decoder_.Flush());
    output.text += rest.text;
    Finish(rest.stopped ? FinishReason::kStop : FinishReason::kLength, output);
  }
}

void Sequence::FinishWithoutToken(FinishReason reason, GenerationOutput& output) {
  output.request_id = request_id_;
  Finish(reason, output);
}

void Sequence::FinishWithError(absl::Status error, GenerationOutput& output) {
  output.request_id = request_id_;
  output.error = std::move(error);
  Finish(FinishReason::kNone, output);
}

void Sequence::Finish(FinishReason reason, GenerationOutput& output) {
  finished_ = true;
  output.finished = true;
  output.finish_reason = reason;
  output.usage.prompt_tokens = prompt_len_;
  output.usage.completion_tokens = num_output();
  output.usage.cached_tokens = std::max(0, cached_prompt_tokens);
}

}  // namespace strata::engine
