// A scripted engine::Engine for testing the gRPC adapter without a model:
// a byte tokenizer (ids 0..255 are bytes, 256 is BOS) and a step thread that
// emits one token per running request per step, the letters 'a'..'z' in turn.
//
// Thread-safety: as engine::Engine; the setters may be called before Submit.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "worker/engine/engine.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::service::testing {

class ByteTokenizer final : public tokenizer::Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return 257; }
  std::optional<int32_t> bos_token_id() const override { return kBos; }
  std::optional<int32_t> eos_token_id() const override { return std::nullopt; }
  bool IsSpecial(int32_t id) const override { return id == kBos; }
  std::string IdToToken(int32_t id) const override;
};

class FakeEngine final : public engine::Engine {
 public:
  // Generates this many tokens when the request does not set max_tokens.
  static constexpr int32_t kDefaultMaxTokens = 8;

  explicit FakeEngine(std::chrono::milliseconds step_interval = std::chrono::milliseconds(1));
  ~FakeEngine() override;

  // Requests fail with `error` after emitting `tokens` tokens.
  void FailAfterTokensForTest(int32_t tokens, absl::Status error);

  absl::Status Submit(engine::GenerationRequest request, OutputCallback on_output) override;
  void Cancel(std::string_view request_id) override;
  engine::EngineStats Stats() const override;
  const tokenizer::Tokenizer& tokenizer() const override { return tokenizer_; }
  const model::ModelConfig& model_config() const override { return config_; }
  void Shutdown() override;

  // Requests as submitted, in order.
  std::vector<engine::GenerationRequest> submitted() const;
  // Ids passed to Cancel, in order.
  std::vector<std::string> cancelled() const;

 private:
  struct Running {
    engine::GenerationRequest request;
    OutputCallback on_output;
    int32_t prompt_tokens = 0;
    int32_t generated = 0;
    bool cancel_requested = false;
  };

  void StepLoop();

  const std::chrono::milliseconds step_interval_;
  ByteTokenizer tokenizer_;
  model::ModelConfig config_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::map<std::string, Running> running_;
  std::vector<engine::GenerationRequest> submitted_;
  std::vector<std::string> cancelled_;
  std::optional<int32_t> fail_after_tokens_;
  absl::Status failure_;
  uint64_t finished_ = 0;
  uint64_t generated_tokens_ = 0;
  bool shutting_down_ = false;
  std::thread step_thread_;
};

}  // namespace strata::service::testing
