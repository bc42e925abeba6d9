// Router -> worker over gRPC on the bundled model, as real processes: greedy
// reference outputs, bad requests, cancellation, metrics and the `strata` CLI.
#include <signal.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/inference_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"
#include "tests/integration/reference_cases.h"
#include "tests/integration/test_servers.h"

namespace strata::testing {
namespace {

using ::testing::AnyOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// One worker and one router on the bundled model for the whole suite.
class EndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    logs_ = new TempDir();
    absl::StatusOr<ServerProcess> worker = LaunchWorker(STRATA_MODEL_DIR, {}, logs_->path());
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = new ServerProcess(*std::move(worker));
    ASSERT_TRUE(WaitUntilServing(*worker_).ok());
    absl::StatusOr<ServerProcess> router = LaunchRouter(worker_->address, logs_->path());
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = new ServerProcess(*std::move(router));
    ASSERT_TRUE(WaitUntilServing(*router_).ok());
  }

  static void TearDownTestSuite() {
    delete router_;
    delete worker_;
    delete logs_;
    router_ = nullptr;
    worker_ = nullptr;
    logs_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(router_, nullptr);
    ASSERT_NE(worker_, nullptr);
  }

  static TempDir* logs_;
  static ServerProcess* worker_;
  static ServerProcess* router_;
};

TempDir* EndToEndTest::logs_ = nullptr;
ServerProcess* EndToEndTest::worker_ = nullptr;
ServerProcess* EndToEndTest::router_ = nullptr;

TEST_F(EndToEndTest, GreedyTokenIdPromptsReproduceTheReferenceThroughTheRouter) {
  for (const ReferenceCase& reference : LoadReference()) {
    SCOPED_TRACE(absl::StrCat("prompt '", reference.prompt, "'"));
    v1::GenerateRequest request = ReferenceRequest(reference);
    request.mutable_token_ids()->mutable_ids()->Add(reference.prompt_ids.begin(),
                                                    reference.prompt_ids.end());
    const Generation generation = Generate(router_->address, request);
    ASSERT_TRUE(generation.status.ok()) << generation.status;
    EXPECT_THAT(generation.ids, ElementsAreArray(ExpectedIds(reference)));
    EXPECT_EQ(generation.text, reference.completion_text);
    EXPECT_EQ(generation.last.finish_reason(),
              reference.stop_reason == "bos" ? v1::FINISH_REASON_EOS : v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(generation.last.usage().prompt_tokens(),
              static_cast<int>(reference.prompt_ids.size()));
    EXPECT_EQ(generation.last.usage().completion_tokens(),
              static_cast<int>(reference.generated_ids.size()));
    EXPECT_GT(generation.responses, 1);  // streamed, not sent at the end
  }
}

TEST_F(EndToEndTest, GreedyTextPromptsReproduceTheReferenceThroughTheRouter) {
  for (const ReferenceCase& reference : LoadReference()) {
    if (reference.prompt.empty()) continue;  // an empty text prompt is refused
    SCOPED_TRACE(absl::StrCat("prompt '", reference.prompt, "'"));
    v1::GenerateRequest request = ReferenceRequest(reference);
    request.set_text(reference.prompt);
    const Generation generation = Generate(router_->address, request);
    ASSERT_TRUE(generation.status.ok()) << generation.status;
    EXPECT_THAT(generation.ids, ElementsAreArray(ExpectedIds(reference)));
    EXPECT_EQ(generation.text, reference.completion_text);
    EXPECT_EQ(generation.last.usage().prompt_tokens(),
              static_cast<int>(reference.prompt_ids.size()));
  }
}

TEST_F(EndToEndTest, TokenizesReferencePromptsThroughTheRouter) {
  cli::InferenceClient client(router_->address);
  for (const ReferenceCase& reference : LoadReference()) {
    v1::TokenizeRequest request;
    request.set_text(reference.prompt);
    absl::StatusOr<v1::TokenizeResponse> response = client.Tokenize(request);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_THAT(response->ids(), ElementsAreArray(reference.prompt_ids));
  }
  absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model_name(), "stories260k");
  EXPECT_EQ(info->architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info->vocab_size(), 512);
  EXPECT_EQ(info->max_context_length(), 512);
}

struct BadRequest {
  std::string name;
  v1::GenerateRequest request;
  std::string field;  // the message names it
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;
};

std::vector<BadRequest> BadRequests() {
  const auto text_request = [](const std::string& text) {
    v1::GenerateRequest request;
    request.set_text(text);
    request.mutable_stopping()->set_max_tokens(4);
    return request;
  };
  std::vector<BadRequest> bad;
  {
    v1::GenerateRequest request = text_request("Once");
    request.mutable_stopping()->set_max_tokens(0);
    bad.push_back({"max_tokens 0", request, "max_tokens"});
    request.mutable_stopping()->set_max_tokens(-3);
    bad.push_back({"max_tokens -3", request, "max_tokens"});
  }
  {
    v1::GenerateRequest request = text_request("Once");
    request.mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
    bad.push_back({"temperature NaN", request, "temperature"});
    request.mutable_sampling()->set_temperature(-1.0f);
    bad.push_back({"temperature -1", request, "temperature"});
  }
  {
    v1::GenerateRequest request = text_request("Once");
    request.mutable_sampling()->set_top_p(0.0f);
    bad.push_back({"top_p 0", request, "top_p"});
    request.mutable_sampling()->set_top_p(1.5f);
    bad.push_back({"top_p 1.5", request, "top_p"});
  }
  bad.push_back({"empty text", text_request(""), "text"});
  {
    v1::GenerateRequest request;
    request.mutable_token_ids();
    bad.push_back({"empty token_ids", request, "token_ids"});
    bad.push_back({"no prompt", v1::GenerateRequest(), "prompt"});
  }
  {
    v1::GenerateRequest request;
    for (int i = 0; i < 600; ++i) request.mutable_token_ids()->add_ids(i == 0 ? 1 : 300);
    bad.push_back(
        {"prompt longer than the context", request, "prompt", absl::StatusCode::kOutOfRange});
  }
  {
    v1::GenerateRequest request;
    request.mutable_token_ids()->add_ids(1);
    request.mutable_token_ids()->add_ids(512);
    bad.push_back({"token id 512", request, "[1]"});
    request.mutable_token_ids()->set_ids(1, -1);
    bad.push_back({"token id -1", request, "[1]"});
  }
  return bad;
}

TEST_F(EndToEndTest, BadRequestsAreRefusedNamingTheFieldAndServingGoesOn) {
  for (const ServerProcess* server : {router_, worker_}) {
    for (const BadRequest& bad : BadRequests()) {
      SCOPED_TRACE(absl::StrCat(bad.name, " to ", server->process->name()));
      const Generation generation = Generate(server->address, bad.request);
      EXPECT_EQ(generation.status.code(), bad.code) << generation.status;
      EXPECT_THAT(std::string(generation.status.message()), HasSubstr(bad.field));
      EXPECT_EQ(generation.responses, 0);
    }
    v1::GenerateRequest good;
    good.set_text("Once upon a time");
    good.mutable_sampling()->set_temperature(0.0f);
    good.mutable_stopping()->set_max_tokens(8);
    const Generation generation = Generate(server->address, good);
    ASSERT_TRUE(generation.status.ok()) << generation.status;
    EXPECT_EQ(generation.last.usage().completion_tokens(), 8);
  }
  EXPECT_TRUE(worker_->process->Running());
  EXPECT_TRUE(router_->process->Running());
}

TEST_F(EndToEndTest, MetricsOfWorkerAndRouterNameWhatHappened) {
  v1::GenerateRequest request;
  request.set_text("Lily wanted to");
  request.mutable_stopping()->set_max_tokens(16);
  ASSERT_TRUE(Generate(router_->address, request).status.ok());

  absl::StatusOr<std::string> worker_metrics = HttpGet(worker_->metrics_address, "/metrics");
  ASSERT_TRUE(worker_metrics.ok()) << worker_metrics.status();
  for (const char* name :
       {"strata_requests_total{code=\"OK\"}", "strata_time_to_first_token_seconds_count",
        "strata_request_duration_seconds_count", "strata_inter_token_latency_seconds_count",
        "strata_generation_tokens_total", "strata_prompt_tokens_total", "strata_requests_running",
        "strata_requests_waiting", "strata_kv_cache_blocks", "strata_kv_cache_blocks_free",
        "strata_kv_cache_usage_ratio", "strata_model_loaded"}) {
    EXPECT_TRUE(MetricValue(*worker_metrics, name).has_value()) << name;
  }
  EXPECT_GE(MetricValue(*worker_metrics, "strata_requests_total{code=\"OK\"}").value_or(0), 1);
  EXPECT_GE(MetricValue(*worker_metrics, "strata_generation_tokens_total").value_or(0), 16);
  EXPECT_GE(MetricValue(*worker_metrics, "strata_time_to_first_token_seconds_count").value_or(0),
            1);
  EXPECT_GT(MetricValue(*worker_metrics, "strata_kv_cache_blocks").value_or(0), 0);
  EXPECT_EQ(MetricValue(*worker_metrics, "strata_model_loaded"), 1.0);

  absl::StatusOr<std::string> router_metrics = HttpGet(router_->metrics_address, "/metrics");
  ASSERT_TRUE(router_metrics.ok()) << router_metrics.status();
  for (const char* name :
       {"strata_router_requests_total{code=\"OK\"}",
        "strata_router_time_to_first_token_seconds_count",
        "strata_router_request_duration_seconds_count", "strata_router_requests_in_flight"}) {
    EXPECT_TRUE(MetricValue(*router_metrics, name).has_value()) << name;
  }
  EXPECT_GE(MetricValue(*router_metrics, "strata_router_requests_total{code=\"OK\"}").value_or(0),
            1);
  EXPECT_EQ(MetricValue(*router_metrics, absl::StrCat("strata_router_backend_healthy{backend=\"",
                                                      worker_->address, "\"}")),
            1.0);
}

TEST_F(EndToEndTest, CliGenerateJsonStreamsReferenceIdsWithFinishReasonAndUsage) {
  const ReferenceCase reference = LoadReference()[1];  // "Once upon a time"
  const CommandResult result =
      RunCommand({CliBinary(), "generate", "--server", router_->address, "--max-tokens", "20",
                  "--temperature", "0", "--json", reference.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  std::vector<int32_t> ids;
  std::string text;
  nlohmann::json last;
  const std::vector<std::string> lines = Lines(result.stdout_text);
  ASSERT_GT(lines.size(), 1u);
  for (const std::string& line : lines) {
    last = nlohmann::json::parse(line);
    ASSERT_TRUE(last.contains("text") && last.contains("token_ids")) << line;
    text += last["text"].get<std::string>();
    for (int32_t id : last["token_ids"]) ids.push_back(id);
  }
  const std::vector<int32_t> expected(reference.generated_ids.begin(),
                                      reference.generated_ids.begin() + 20);
  EXPECT_THAT(ids, ElementsAreArray(expected));
  EXPECT_THAT(reference.completion_text, StartsWith(text));
  EXPECT_EQ(last["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(last["usage"]["completion_tokens"], 20);
  EXPECT_EQ(last["usage"]["cached_tokens"], 0);

  // The same through --prompt-ids, as plain text.
  const CommandResult plain =
      RunCommand({CliBinary(), "generate", "--server", router_->address, "--max-tokens", "20",
                  "--temperature", "0", "--prompt-ids", absl::StrJoin(reference.prompt_ids, ",")});
  ASSERT_EQ(plain.exit_code, 0) << plain.stderr_text;
  EXPECT_EQ(plain.stdout_text, text + "\n");
}

TEST_F(EndToEndTest, CliReportsErrorsInOneLineWithTheCodeName) {
  CommandResult result = RunCommand(
      {CliBinary(), "generate", "--server", router_->address, "--max-tokens", "0", "Once"});
  EXPECT_EQ(result.exit_code, 1);
  ASSERT_EQ(Lines(result.stderr_text).size(), 1u) << result.stderr_text;
  EXPECT_THAT(result.stderr_text, StartsWith("strata: INVALID_ARGUMENT: "));
  EXPECT_THAT(result.stderr_text, HasSubstr("max_tokens"));

  result = RunCommand({CliBinary(), "info", "--server", "127.0.0.1:1"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.stderr_text, StartsWith("strata: UNAVAILABLE: "));
  EXPECT_THAT(result.stderr_text, HasSubstr("127.0.0.1:1"));
}

TEST_F(EndToEndTest, CliTokenizeOfflineJsonlMatchesTheReferencePromptIds) {
  std::string input;
  const std::vector<ReferenceCase> references = LoadReference();
  for (const ReferenceCase& reference : references) {
    input += nlohmann::json{{"text", reference.prompt}}.dump() + "\n";
  }
  const CommandResult result =
      RunCommand({CliBinary(), "tokenize", "--tokenizer", STRATA_MODEL_DIR, "--jsonl"}, input);
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  const std::vector<std::string> lines = Lines(result.stdout_text);
  ASSERT_EQ(lines.size(), references.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(nlohmann::json::parse(lines[i]), (nlohmann::json{{"ids", references[i].prompt_ids}}));
  }

  const CommandResult bad_line = RunCommand(
      {CliBinary(), "tokenize", "--tokenizer", STRATA_MODEL_DIR, "--jsonl"}, "{\"txt\": 1}\n");
  EXPECT_EQ(bad_line.exit_code, 1);
  EXPECT_THAT(bad_line.stderr_text, HasSubstr("line 1"));
}

TEST_F(EndToEndTest, CliTokenizeAndInfoAgainstTheServer) {
  const ReferenceCase reference = LoadReference()[1];
  CommandResult result =
      RunCommand({CliBinary(), "tokenize", "--server", router_->address, reference.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_EQ(result.stdout_text, absl::StrJoin(reference.prompt_ids, " ") + "\n");

  result = RunCommand(
      {CliBinary(), "tokenize", "--server", router_->address, "--json", reference.prompt});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  const nlohmann::json json = nlohmann::json::parse(result.stdout_text);
  EXPECT_EQ(json["ids"], reference.prompt_ids);
  EXPECT_EQ(json["tokens"][0], "<s>");

  result = RunCommand({CliBinary(), "info", "--server", router_->address, "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  const nlohmann::json info = nlohmann::json::parse(result.stdout_text);
  EXPECT_EQ(info["model_name"], "stories260k");
  EXPECT_EQ(info["vocab_size"], 512);

  result = RunCommand({CliBinary(), "detokenize", "--server", router_->address,
                       absl::StrJoin(reference.prompt_ids, ",")});
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_EQ(result.stdout_text, reference.prompt + "\n");
}

}  // namespace
}  // namespace strata::testing
