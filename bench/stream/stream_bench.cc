// strata-stream-bench: single-stream latency of a Strata server (worker or
// router), as a client sees it over gRPC.
//
// Each run sends one Generate (greedy by default, ignore_eos, fixed
// max_tokens) and times it: TTFT is send -> first response carrying a token;
// decode rate is the tokens after the first response divided by the time
// from the first to the last response. Runs are sequential; --warmup runs
// are not counted. Prints each run and the medians.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli/inference_client.h"

namespace {

using Clock = std::chrono::steady_clock;

struct RunResult {
  double ttft_seconds = 0;
  double decode_tokens_per_second = 0;
  int32_t completion_tokens = 0;
  int32_t prompt_tokens = 0;
  int32_t responses = 0;  // streamed messages that carried tokens
};

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

absl::StatusOr<RunResult> RunOnce(strata::cli::InferenceClient& client,
                                  const strata::v1::GenerateRequest& request) {
  RunResult result;
  const Clock::time_point start = Clock::now();
  Clock::time_point first;
  Clock::time_point last;
  int32_t tokens_in_first = 0;
  int32_t tokens = 0;
  const absl::Status status =
      client.Generate(request, [&](const strata::v1::GenerateResponse& response) {
        const Clock::time_point now = Clock::now();
        if (response.token_ids_size() == 0) return;
        if (tokens == 0) {
          first = now;
          tokens_in_first = response.token_ids_size();
        }
        tokens += response.token_ids_size();
        ++result.responses;
        last = now;
        if (response.has_usage()) {
          result.completion_tokens = response.usage().completion_tokens();
          result.prompt_tokens = response.usage().prompt_tokens();
        }
      });
  if (!status.ok()) return status;
  if (tokens == 0) return absl::InternalError("the server generated no tokens");
  result.ttft_seconds = std::chrono::duration<double>(first - start).count();
  const double decode_seconds = std::chrono::duration<double>(last - first).count();
  if (tokens > tokens_in_first && decode_seconds > 0) {
    result.decode_tokens_per_second = (tokens - tokens_in_first) / decode_seconds;
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"strata-stream-bench: single-stream TTFT and decode tokens/s of a Strata server"};
  std::string server;
  std::string prompt = "Once upon a time";
  int32_t max_tokens = 128;
  int runs = 5;
  int warmup = 1;
  float temperature = 0.0f;
  app.add_option("--server", server, "Server address HOST:PORT (worker or router)")->required();
  app.add_option("--prompt", prompt, "Prompt text")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "Tokens per run (EOS ignored)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--runs", runs, "Measured runs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", warmup, "Runs before measuring")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--temperature", temperature, "0 is greedy")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  strata::v1::GenerateRequest request;
  request.set_text(prompt);
  request.mutable_sampling()->set_temperature(temperature);
  request.mutable_sampling()->set_seed(1);
  request.mutable_stopping()->set_max_tokens(max_tokens);
  request.mutable_stopping()->set_ignore_eos(true);
  request.mutable_options()->set_return_token_ids(true);

  strata::cli::InferenceClient client(server);
  absl::StatusOr<strata::v1::ModelInfo> info = client.GetModelInfo();
  if (!info.ok()) {
    std::fprintf(stderr, "strata-stream-bench: %s: %s\n",
                 absl::StatusCodeToString(info.status().code()).c_str(),
                 std::string(info.status().message()).c_str());
    return 1;
  }
  std::printf("server %s: %s (%s, %lld parameters, %s)\n", server.c_str(),
              info->model_name().c_str(), info->architecture().c_str(),
              static_cast<long long>(info->parameter_count()), info->dtype().c_str());

  std::vector<double> ttfts;
  std::vector<double> rates;
  for (int i = 0; i < warmup + runs; ++i) {
    absl::StatusOr<RunResult> result = RunOnce(client, request);
    if (!result.ok()) {
      std::fprintf(stderr, "strata-stream-bench: %s: %s\n",
                   absl::StatusCodeToString(result.status().code()).c_str(),
                   std::string(result.status().message()).c_str());
      return 1;
    }
    const bool measured = i >= warmup;
    std::printf(
        "%s %d: prompt %d tokens, generated %d in %d responses, TTFT %.2f ms, decode %.1f "
        "tokens/s\n",
        measured ? "run" : "warmup", measured ? i - warmup + 1 : i + 1, result->prompt_tokens,
        result->completion_tokens, result->responses, result->ttft_seconds * 1e3,
        result->decode_tokens_per_second);
    if (measured) {
      ttfts.push_back(result->ttft_seconds);
      rates.push_back(result->decode_tokens_per_second);
    }
  }
  std::printf("median of %d runs: TTFT %.2f ms, decode %.1f tokens/s (%.2f ms/token)\n", runs,
              Median(ttfts) * 1e3, Median(rates), Median(rates) > 0 ? 1e3 / Median(rates) : 0.0);
  return 0;
}
