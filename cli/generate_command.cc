// strata generate: streams a completion from a server.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/inference_client.h"

namespace strata::cli {
namespace {

struct GenerateFlags {
  std::string server;
  std::string text;
  std::string prompt_ids;
  std::optional<int32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<uint64_t> seed;
  std::optional<int32_t> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool no_special_tokens = false;
  int32_t logprobs = 0;
  std::optional<double> timeout_seconds;
  bool json = false;
};

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const char* flag) {
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": '", std::string(piece), "' is not an integer"));
    }
    ids.push_back(id);
  }
  return ids;
}

nlohmann::json LogprobsJson(const v1::Logprobs& logprobs) {
  const auto token_json = [](const v1::TokenLogprob& token) {
    return nlohmann::json{
        {"id", token.id()}, {"token", token.token()}, {"logprob", token.logprob()}};
  };
  nlohmann::json top = nlohmann::json::array();
  for (const v1::TokenLogprob& token : logprobs.top()) top.push_back(token_json(token));
  nlohmann::json json = token_json(logprobs.chosen());
  json["top"] = std::move(top);
  return json;
}

nlohmann::json ResponseJson(const v1::GenerateResponse& response) {
  nlohmann::json json{{"text", response.text()},
                      {"token_ids", std::vector<int32_t>(response.token_ids().begin(),
                                                         response.token_ids().end())}};
  if (response.logprobs_size() > 0) {
    nlohmann::json logprobs = nlohmann::json::array();
    for (const v1::Logprobs& entry : response.logprobs()) logprobs.push_back(LogprobsJson(entry));
    json["logprobs"] = std::move(logprobs);
  }
  if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    json["finish_reason"] = FinishReasonName(response.finish_reason());
    json["usage"] = {{"prompt_tokens", response.usage().prompt_tokens()},
                     {"completion_tokens", response.usage().completion_tokens()},
                     {"cached_tokens", response.usage().cached_tokens()}};
  }
  return json;
}

int RunGenerate(const GenerateFlags& flags) {
  v1::GenerateRequest request;
  if (!flags.prompt_ids.empty()) {
    if (!flags.text.empty()) {
      return PrintError(absl::InvalidArgumentError("give either a text prompt or --prompt-ids"));
    }
    absl::StatusOr<std::vector<int32_t>> ids = ParseIds(flags.prompt_ids, "--prompt-ids");
    if (!ids.ok()) return PrintError(ids.status());
    request.mutable_token_ids()->mutable_ids()->Add(ids->begin(), ids->end());
  } else {
    request.set_text(flags.text);
  }
  v1::SamplingParams* sampling = request.mutable_sampling();
  if (flags.temperature) sampling->set_temperature(*flags.temperature);
  if (flags.seed) sampling->set_seed(*flags.seed);
  if (flags.top_k) sampling->set_top_k(*flags.top_k);
  if (flags.top_p) sampling->set_top_p(*flags.top_p);
  if (flags.min_p) sampling->set_min_p(*flags.min_p);
  if (flags.repetition_penalty) sampling->set_repetition_penalty(*flags.repetition_penalty);
  v1::StoppingCriteria* stopping = request.mutable_stopping();
  if (flags.max_tokens) stopping->set_max_tokens(*flags.max_tokens);
  for (const std::string& stop : flags.stop) stopping->add_stop(stop);
  stopping->set_ignore_eos(flags.ignore_eos);
  request.mutable_options()->set_return_token_ids(flags.json);
  request.mutable_options()->set_top_logprobs(flags.logprobs);
  if (flags.no_special_tokens) request.mutable_options()->set_add_special_tokens(false);

  std::optional<std::chrono::milliseconds> timeout;
  if (flags.timeout_seconds) {
    timeout = std::chrono::milliseconds(static_cast<int64_t>(*flags.timeout_seconds * 1000));
  }
  InferenceClient client(flags.server, timeout);
  v1::GenerateResponse last;
  const absl::Status status = client.Generate(request, [&](const v1::GenerateResponse& response) {
    if (flags.json) {
      std::printf("%s\n", JsonLine(ResponseJson(response)).c_str());
    } else {
      std::fwrite(response.text().data(), 1, response.text().size(), stdout);
    }
    std::fflush(stdout);
    last = response;
  });
  if (!flags.json && !last.text().empty() && last.text().back() != '\n') std::printf("\n");
  if (!status.ok()) return PrintError(status);
  if (!flags.json && isatty(STDERR_FILENO)) {
    std::fprintf(stderr, "[%s: %d prompt + %d generated tokens]\n",
                 FinishReasonName(last.finish_reason()).c_str(), last.usage().prompt_tokens(),
                 last.usage().completion_tokens());
  }
  return 0;
}

}  // namespace

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* command = app.add_subcommand("generate", "Stream a completion from a server");
  command->add_option("--server", flags->server, "Server address HOST:PORT")->required();
  command->add_option("text", flags->text, "The prompt text");
  command->add_option("--prompt-ids", flags->prompt_ids, "The prompt as token ids: 1,2,3");
  command->add_option("--max-tokens", flags->max_tokens, "Most tokens to generate");
  command->add_option("--temperature", flags->temperature, "0 is greedy (server default 1)");
  command->add_option("--seed", flags->seed, "Sampling seed (same seed, same output)");
  command->add_option("--top-k", flags->top_k, "Sample among the k most likely tokens");
  command->add_option("--top-p", flags->top_p, "Nucleus sampling, in (0, 1]");
  command->add_option("--min-p", flags->min_p, "Drop tokens below min_p times the top one");
  command->add_option("--repetition-penalty", flags->repetition_penalty, "> 0; 1 is off");
  command->add_option("--stop", flags->stop, "Stop string (repeatable)");
  command->add_flag("--ignore-eos", flags->ignore_eos, "Keep going past end-of-sequence");
  command->add_flag("--no-special-tokens", flags->no_special_tokens,
                    "Do not add BOS to a text prompt");
  command->add_option("--logprobs", flags->logprobs,
                      "With --json, the n most likely alternatives of each token (0..20)");
  command->add_option("--timeout", flags->timeout_seconds, "Deadline in seconds");
  command->add_flag("--json", flags->json,
                    "One JSON object per streamed response: {\"text\", \"token_ids\"}; the last "
                    "also \"finish_reason\" and \"usage\"");
  command->callback([flags, exit_code] { *exit_code = RunGenerate(*flags); });
}

}  // namespace strata::cli
