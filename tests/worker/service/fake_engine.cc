#include "tests/worker/service/fake_engine.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace strata::service::testing {

std::vector<int32_t> ByteTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  if (add_special_tokens) ids.push_back(kBos);
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::string ByteTokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string text;
  for (int32_t id : ids) {
    if (id == kBos) {
      if (!skip_special_tokens) text += "<s>";
    } else if (id >= 0 && id < kBos) {
      text += static_cast<char>(id);
    }
  }
  return text;
}

std::string ByteTokenizer::IdToToken(int32_t id) const {
  if (id == kBos) return "<s>";
  if (id < 0 || id > kBos) return "";
  return std::string(1, static_cast<char>(id));
}

FakeEngine::FakeEngine(std::chrono::milliseconds step_interval) : step_interval_(step_interval) {
  config_.architecture = "LlamaForCausalLM";
  config_.model_type = "llama";
  config_.vocab_size = tokenizer_.vocab_size();
  config_.max_position_embeddings = 64;
  config_.bos_token_id = ByteTokenizer::kBos;
  config_.eos_token_ids = {};
  step_thread_ = std::thread([this] { StepLoop(); });
}

FakeEngine::~FakeEngine() { Shutdown(); }

void FakeEngine::FailAfterTokensForTest(int32_t tokens, absl::Status error) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_after_tokens_ = tokens;
  failure_ = std::move(error);
}

absl::Status FakeEngine::Submit(engine::GenerationRequest request, OutputCallback on_output) {
  if (request.stopping.max_tokens && *request.stopping.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be > 0, got ", *request.stopping.max_tokens));
  }
  std::vector<int32_t> prompt = request.prompt_ids;
  if (prompt.empty()) prompt = tokenizer_.Encode(request.prompt_text, request.add_special_tokens);
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: empty");
  std::lock_guard<std::mutex> lock(mu_);
  if (shutting_down_) return absl::UnavailableError("engine is shutting down");
  submitted_.push_back(request);
  if (running_.count(request.request_id) > 0) {
    return absl::AlreadyExistsError(absl::StrCat("request_id ", request.request_id, " in flight"));
  }
  Running running{std::move(request), std::move(on_output), static_cast<int32_t>(prompt.size())};
  const std::string id = running.request.request_id;
  running_.emplace(id, std::move(running));
  wake_.notify_all();
  return absl::OkStatus();
}

void FakeEngine::Cancel(std::string_view request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_.emplace_back(request_id);
  auto it = running_.find(std::string(request_id));
  if (it != running_.end()) it->second.cancel_requested = true;
}

engine::EngineStats FakeEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  engine::EngineStats stats;
  stats.running = static_cast<int32_t>(running_.size());
  stats.kv_blocks_total = 64;
  stats.kv_blocks_free = 64 - 2 * stats.running;
  stats.requests_finished = finished_;
  stats.generated_tokens = generated_tokens_;
  return stats;
}

void FakeEngine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_ && !step_thread_.joinable()) return;
    shutting_down_ = true;
    wake_.notify_all();
  }
  if (step_thread_.joinable()) step_thread_.join();
}

std::vector<engine::GenerationRequest> FakeEngine::submitted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return submitted_;
}

std::vector<std::string> FakeEngine::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void FakeEngine::StepLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_.wait(lock, [this] { return shutting_down_ || !running_.empty(); });
    // Outputs of one step, delivered with the lock released as the real
    // engine's step thread does.
    std::vector<std::pair<OutputCallback, engine::GenerationOutput>> outputs;
    for (auto it = running_.begin(); it != running_.end();) {
      Running& running = it->second;
      engine::GenerationOutput output;
      output.request_id = running.request.request_id;
      const int32_t max_tokens = running.request.stopping.max_tokens.value_or(kDefaultMaxTokens);
      if (shutting_down_ || running.cancel_requested) {
        output.finished = true;
        output.finish_reason = engine::FinishReason::kCancelled;
      } else if (fail_after_tokens_ && running.generated >= *fail_after_tokens_) {
        output.finished = true;
        output.error = failure_;
      } else {
        const int32_t id = 'a' + running.generated % 26;
        ++running.generated;
        ++generated_tokens_;
        output.token_ids.push_back(id);
        output.text = tokenizer_.IdToToken(id);
        if (running.request.top_logprobs > 0) {
          engine::TokenLogprobs logprobs;
          logprobs.chosen = {id, -0.5f};
          for (int32_t k = 0; k < running.request.top_logprobs; ++k) {
            logprobs.top.push_back({id + k, -0.5f - static_cast<float>(k)});
          }
          output.logprobs.push_back(std::move(logprobs));
        }
        if (running.generated >= max_tokens) {
          output.finished = true;
          output.finish_reason = engine::FinishReason::kLength;
        }
      }
      if (output.finished) {
        output.usage = {running.prompt_tokens, running.generated, 0};
        ++finished_;
        outputs.emplace_back(std::move(running.on_output), std::move(output));
        it = running_.erase(it);
      } else {
        outputs.emplace_back(running.on_output, std::move(output));
        ++it;
      }
    }
    const bool stop = shutting_down_ && running_.empty();
    lock.unlock();
    for (auto& [callback, output] : outputs) callback(std::move(output));
    if (stop) return;
    std::this_thread::sleep_for(step_interval_);
    lock.lock();
  }
}

}  // namespace strata::service::testing
