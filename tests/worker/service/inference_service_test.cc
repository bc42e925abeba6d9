// The worker's gRPC adapter, served in-process over a real gRPC server on
// 127.0.0.1 with a scripted engine.
#include "worker/service/inference_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "strata/v1/inference.grpc.pb.h"
#include "tests/worker/service/fake_engine.h"
#include "worker/service/worker_metrics.h"

namespace strata::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct StreamResult {
  std::vector<v1::GenerateResponse> responses;
  grpc::Status status;

  std::string Text() const {
    std::string text;
    for (const auto& response : responses) text += response.text();
    return text;
  }
  std::vector<int32_t> TokenIds() const {
    std::vector<int32_t> ids;
    for (const auto& response : responses) {
      ids.insert(ids.end(), response.token_ids().begin(), response.token_ids().end());
    }
    return ids;
  }
};

// Polls `condition` for up to 5 s.
template <typename Condition>
bool Eventually(Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

class InferenceServiceTest : public ::testing::Test {
 protected:
  void StartServer(std::chrono::milliseconds step_interval = std::chrono::milliseconds(1),
                   bool attach = true) {
    engine_ = std::make_unique<testing::FakeEngine>(step_interval);
    service_ = std::make_unique<InferenceService>(&metrics_);
    if (attach) Attach();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::Inference::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  void Attach() {
    service_->AttachEngine(engine_.get(), ModelDescription{"fake-model", "F32", 1234, 1, 1});
    metrics_.SetEngine(engine_.get());
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    if (engine_) engine_->Shutdown();
    metrics_.SetEngine(nullptr);
  }

  StreamResult Generate(const v1::GenerateRequest& request,
                        std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
    grpc::ClientContext context;
    if (timeout) context.set_deadline(std::chrono::system_clock::now() + *timeout);
    StreamResult result;
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
        stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) result.responses.push_back(response);
    result.status = reader->Finish();
    return result;
  }

  std::string ScrapeMetrics() {
    std::vector<prometheus::MetricFamily> families = metrics_.registry()->Collect();
    for (auto& family : metrics_.engine_collector()->Collect()) families.push_back(family);
    return prometheus::TextSerializer().Serialize(families);
  }

  static v1::GenerateRequest TextRequest(const std::string& text, int32_t max_tokens) {
    v1::GenerateRequest request;
    request.set_text(text);
    request.mutable_stopping()->set_max_tokens(max_tokens);
    request.mutable_options()->set_return_token_ids(true);
    return request;
  }

  WorkerMetrics metrics_;
  std::unique_ptr<testing::FakeEngine> engine_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(InferenceServiceTest, StreamsEngineOutputsAndEndsWithFinishReasonAndUsage) {
  StartServer();
  StreamResult result = Generate(TextRequest("hi", 5));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_FALSE(result.responses.empty());
  EXPECT_EQ(result.Text(), "abcde");
  EXPECT_THAT(result.TokenIds(), ElementsAre('a', 'b', 'c', 'd', 'e'));
  const v1::GenerateResponse& last = result.responses.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 3);  // BOS + 2 bytes
  EXPECT_EQ(last.usage().completion_tokens(), 5);
  for (size_t i = 0; i + 1 < result.responses.size(); ++i) {
    EXPECT_EQ(result.responses[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_FALSE(result.responses[i].has_usage());
  }
  for (const auto& response : result.responses) {
    EXPECT_THAT(response.request_id(), StartsWith("req-"));
    EXPECT_EQ(response.request_id(), result.responses[0].request_id());
  }
}

TEST_F(InferenceServiceTest, EchoesTheClientsRequestId) {
  StartServer();
  v1::GenerateRequest request = TextRequest("hi", 2);
  request.set_request_id("my-request-7");
  StreamResult result = Generate(request);
  ASSERT_TRUE(result.status.ok());
  for (const auto& response : result.responses) EXPECT_EQ(response.request_id(), "my-request-7");
  EXPECT_EQ(engine_->submitted().back().request_id, "my-request-7");
}

TEST_F(InferenceServiceTest, OmitsTokenIdsUnlessAskedFor) {
  StartServer();
  v1::GenerateRequest request = TextRequest("hi", 3);
  request.mutable_options()->set_return_token_ids(false);
  StreamResult result = Generate(request);
  ASSERT_TRUE(result.status.ok());
  EXPECT_EQ(result.Text(), "abc");
  EXPECT_TRUE(result.TokenIds().empty());
}

TEST_F(InferenceServiceTest, ReturnsLogprobsWithTokenStrings) {
  StartServer();
  v1::GenerateRequest request = TextRequest("hi", 2);
  request.mutable_options()->set_top_logprobs(2);
  StreamResult result = Generate(request);
  ASSERT_TRUE(result.status.ok());
  std::vector<v1::Logprobs> logprobs;
  for (const auto& response : result.responses) {
    logprobs.insert(logprobs.end(), response.logprobs().begin(), response.logprobs().end());
  }
  ASSERT_EQ(logprobs.size(), 2u);
  EXPECT_EQ(logprobs[0].chosen().token(), "a");
  EXPECT_FLOAT_EQ(logprobs[0].chosen().logprob(), -0.5f);
  ASSERT_EQ(logprobs[1].top_size(), 2);
  EXPECT_EQ(logprobs[1].top(1).token(), "c");
}

TEST_F(InferenceServiceTest, AnswersUnavailableWhileTheModelLoads) {
  StartServer(std::chrono::milliseconds(1), /*attach=*/false);
  StreamResult result = Generate(TextRequest("hi", 3));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(result.status.error_message(), "model is still loading");

  grpc::ClientContext tokenize_context;
  v1::TokenizeRequest tokenize;
  v1::TokenizeResponse tokenized;
  EXPECT_EQ(stub_->Tokenize(&tokenize_context, tokenize, &tokenized).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext detokenize_context;
  v1::DetokenizeResponse detokenized;
  EXPECT_EQ(stub_->Detokenize(&detokenize_context, {}, &detokenized).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext info_context;
  v1::ModelInfo info;
  EXPECT_EQ(stub_->GetModelInfo(&info_context, {}, &info).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  Attach();
  result = Generate(TextRequest("hi", 3));
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.Text(), "abc");
}

TEST_F(InferenceServiceTest, PassesEngineRejectionsThroughWithCodeAndMessage) {
  StartServer();
  StreamResult result = Generate(TextRequest("hi", 0));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("max_tokens"));
  EXPECT_TRUE(result.responses.empty());
  // The server keeps serving.
  EXPECT_TRUE(Generate(TextRequest("hi", 1)).status.ok());
}

TEST_F(InferenceServiceTest, RejectsRequestsWithoutAPromptNamingTheField) {
  StartServer();
  v1::GenerateRequest no_prompt;
  StreamResult result = Generate(no_prompt);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("prompt"));

  v1::GenerateRequest empty_text;
  empty_text.set_text("");
  result = Generate(empty_text);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("text"));

  v1::GenerateRequest empty_ids;
  empty_ids.mutable_token_ids();
  result = Generate(empty_ids);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("token_ids"));
  EXPECT_TRUE(engine_->submitted().empty());
}

TEST_F(InferenceServiceTest, ClientCancelCancelsTheEngineRequest) {
  StartServer(std::chrono::milliseconds(20));
  v1::GenerateRequest request = TextRequest("hi", 100000);
  request.set_request_id("to-cancel");
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return engine_->Stats().running == 0; }));
  EXPECT_THAT(engine_->cancelled(), ElementsAre("to-cancel"));
  EXPECT_TRUE(Eventually([&] {
    return ScrapeMetrics().find("strata_requests_total{code=\"CANCELLED\"} 1") != std::string::npos;
  })) << ScrapeMetrics();
}

TEST_F(InferenceServiceTest, DeadlineCancelsTheEngineRequest) {
  StartServer(std::chrono::milliseconds(20));
  v1::GenerateRequest request = TextRequest("hi", 100000);
  request.set_request_id("too-slow");
  StreamResult result = Generate(request, std::chrono::milliseconds(300));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_FALSE(result.responses.empty());
  EXPECT_TRUE(Eventually([&] { return engine_->Stats().running == 0; }));
  EXPECT_THAT(engine_->cancelled(), ElementsAre("too-slow"));
}

TEST_F(InferenceServiceTest, AnErrorAfterAcceptanceEndsTheStreamWithThatStatus) {
  StartServer();
  engine_->FailAfterTokensForTest(2, absl::InternalError("backend fault in layer 3"));
  StreamResult result = Generate(TextRequest("hi", 10));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(result.status.error_message(), "backend fault in layer 3");
  EXPECT_EQ(result.Text(), "ab");
}

TEST_F(InferenceServiceTest, ServesManyConcurrentStreams) {
  StartServer();
  constexpr int kStreams = 24;
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] { results[i] = Generate(TextRequest("x", 1 + i % 7)); });
  }
  for (auto& client : clients) client.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_EQ(results[i].Text(), std::string("abcdefg").substr(0, 1 + i % 7));
    EXPECT_EQ(results[i].responses.back().usage().completion_tokens(), 1 + i % 7);
  }
  EXPECT_EQ(engine_->Stats().running, 0);
}

TEST_F(InferenceServiceTest, TokenizesAndDetokenizes) {
  StartServer();
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_text("ab");
  v1::TokenizeResponse response;
  ASSERT_TRUE(stub_->Tokenize(&context, request, &response).ok());
  EXPECT_THAT(response.ids(), ElementsAre(testing::ByteTokenizer::kBos, 'a', 'b'));
  EXPECT_THAT(response.tokens(), ElementsAre("<s>", "a", "b"));

  grpc::ClientContext no_special_context;
  request.set_add_special_tokens(false);
  ASSERT_TRUE(stub_->Tokenize(&no_special_context, request, &response).ok());
  EXPECT_THAT(response.ids(), ElementsAre('a', 'b'));

  grpc::ClientContext detokenize_context;
  v1::DetokenizeRequest detokenize;
  for (int32_t id : {testing::ByteTokenizer::kBos, int32_t{'o'}, int32_t{'k'}}) {
    detokenize.add_ids(id);
  }
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub_->Detokenize(&detokenize_context, detokenize, &text).ok());
  EXPECT_EQ(text.text(), "ok");

  grpc::ClientContext keep_special_context;
  detokenize.set_skip_special_tokens(false);
  ASSERT_TRUE(stub_->Detokenize(&keep_special_context, detokenize, &text).ok());
  EXPECT_EQ(text.text(), "<s>ok");
}

TEST_F(InferenceServiceTest, DetokenizeRejectsIdsOutsideTheVocabularyNamingTheIndex) {
  StartServer();
  grpc::ClientContext context;
  v1::DetokenizeRequest request;
  request.add_ids('a');
  request.add_ids(257);
  v1::DetokenizeResponse response;
  grpc::Status status = stub_->Detokenize(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("ids[1]"));
  EXPECT_THAT(status.error_message(), HasSubstr("257"));
}

TEST_F(InferenceServiceTest, ReportsModelInfo) {
  StartServer();
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_name(), "fake-model");
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info.max_context_length(), 64);
  EXPECT_EQ(info.vocab_size(), 257);
  EXPECT_EQ(info.bos_token_id(), testing::ByteTokenizer::kBos);
  EXPECT_EQ(info.dtype(), "F32");
  EXPECT_EQ(info.parameter_count(), 1234);
  EXPECT_EQ(info.tensor_parallel_size(), 1);
  EXPECT_FALSE(info.build_version().empty());
}

TEST_F(InferenceServiceTest, MetricsCountRequestsTokensAndLatencies) {
  StartServer();
  ASSERT_TRUE(Generate(TextRequest("hi", 4)).status.ok());
  ASSERT_FALSE(Generate(TextRequest("hi", -1)).status.ok());
  const std::string text = ScrapeMetrics();
  EXPECT_THAT(text, HasSubstr("strata_requests_total{code=\"OK\"} 1"));
  EXPECT_THAT(text, HasSubstr("strata_requests_total{code=\"INVALID_ARGUMENT\"} 1"));
  EXPECT_THAT(text, HasSubstr("strata_generation_tokens_total 4"));
  EXPECT_THAT(text, HasSubstr("strata_prompt_tokens_total 3"));
  EXPECT_THAT(text, HasSubstr("strata_time_to_first_token_seconds_count 1"));
  EXPECT_THAT(text, HasSubstr("strata_inter_token_latency_seconds_count 3"));
  EXPECT_THAT(text, HasSubstr("strata_request_duration_seconds_count 2"));
  EXPECT_THAT(text, HasSubstr("strata_requests_running 0"));
  EXPECT_THAT(text, HasSubstr("strata_kv_cache_blocks 64"));
  EXPECT_THAT(text, HasSubstr("strata_model_loaded 1"));
}

TEST_F(InferenceServiceTest, RunningGaugeFollowsTheEngine) {
  StartServer(std::chrono::milliseconds(20));
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, TextRequest("hi", 100000));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_THAT(ScrapeMetrics(), HasSubstr("strata_requests_running 1"));
  EXPECT_THAT(ScrapeMetrics(), HasSubstr("strata_kv_cache_blocks_free 62"));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  reader->Finish();
  EXPECT_TRUE(Eventually(
      [&] { return ScrapeMetrics().find("strata_requests_running 0") != std::string::npos; }));
}

}  // namespace
}  // namespace strata::service
