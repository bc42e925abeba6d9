#include "bench/load/engine_target.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace strata::bench {

RequestResult EngineTarget::Run(const BenchRequest& request) {
  engine::GenerationRequest generation;
  generation.request_id = absl::StrCat("bench-", next_id_.fetch_add(1));
  generation.prompt_ids = request.prompt_ids;
  generation.sampling.temperature = temperature_;
  generation.stopping.max_tokens = request.max_tokens;
  generation.stopping.ignore_eos = true;

  RequestResult result;
  result.prompt_tokens = static_cast<int32_t>(request.prompt_ids.size());
  RequestTimer timer;
  absl::Notification done;
  const absl::Status submitted =
      engine_.Submit(std::move(generation), [&](engine::GenerationOutput output) {
        timer.OnTokens(static_cast<int32_t>(output.token_ids.size()), result);
        if (!output.finished) return;
        timer.OnEnd(result);
        result.cached_tokens = output.usage.cached_tokens;
        if (!output.error.ok()) {
          result.code = output.error.code();
          result.error_message = std::string(output.error.message());
        }
        done.Notify();
      });
  if (!submitted.ok()) {
    timer.OnEnd(result);
    result.code = submitted.code();
    result.error_message = std::string(submitted.message());
    return result;
  }
  done.WaitForNotification();
  return result;
}

}  // namespace strata::bench
