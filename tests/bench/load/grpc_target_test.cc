// GrpcTarget against a small fake strata.v1.Inference server on port 0: the
// request it sends, token counting from the streamed ids, usage, and errors
// by gRPC code.
#include "bench/load/grpc_target.h"

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "bench/load/load_runner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata::bench {
namespace {

// Streams max_tokens responses of one id each (text only on odd ones), then
// usage; refuses prompts starting with id 4 as UNAVAILABLE.
class FakeInference final : public v1::Inference::Service {
 public:
  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                            v1::ModelInfo* info) override {
    info->set_model_name("fake");
    info->set_vocab_size(100);
    info->set_max_context_length(1024);
    return grpc::Status::OK;
  }

  grpc::Status Generate(grpc::ServerContext*, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      last_request_ = *request;
    }
    if (request->token_ids().ids(0) == 4) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no replica");
    }
    const int32_t count = request->stopping().max_tokens();
    for (int32_t i = 0; i < count; ++i) {
      v1::GenerateResponse response;
      response.add_token_ids(10 + i);
      if (i % 2 == 1) response.set_text("x");
      if (i == count - 1) {
        response.set_finish_reason(v1::FINISH_REASON_LENGTH);
        response.mutable_usage()->set_prompt_tokens(request->token_ids().ids_size());
        response.mutable_usage()->set_completion_tokens(count);
        response.mutable_usage()->set_cached_tokens(2);
      }
      writer->Write(response);
    }
    return grpc::Status::OK;
  }

  v1::GenerateRequest last_request() {
    absl::MutexLock lock(&mu_);
    return last_request_;
  }

 private:
  absl::Mutex mu_;
  v1::GenerateRequest last_request_ ABSL_GUARDED_BY(mu_);
};

class GrpcTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override { server_->Shutdown(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  FakeInference service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(GrpcTargetTest, SendsTokenIdsWithIgnoreEosAndCountsStreamedTokens) {
  absl::StatusOr<std::unique_ptr<GrpcTarget>> target =
      GrpcTarget::Connect(address(), std::chrono::seconds(5));
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ((*target)->model_info().vocab_size(), 100);
  BenchRequest request;
  request.prompt_ids = {7, 8, 9};
  request.max_tokens = 5;
  const RequestResult result = (*target)->Run(request);
  EXPECT_EQ(result.code, absl::StatusCode::kOk) << result.error_message;
  EXPECT_EQ(result.output_tokens, 5);
  EXPECT_EQ(result.itl_ms.size(), 4u);
  EXPECT_GE(result.ttft_ms, 0.0);
  EXPECT_EQ(result.prompt_tokens, 3);
  EXPECT_EQ(result.cached_tokens, 2);
  const v1::GenerateRequest sent = service_.last_request();
  EXPECT_THAT(sent.token_ids().ids(), ::testing::ElementsAre(7, 8, 9));
  EXPECT_TRUE(sent.stopping().ignore_eos());
  EXPECT_EQ(sent.stopping().max_tokens(), 5);
  EXPECT_TRUE(sent.options().return_token_ids());
  EXPECT_EQ(sent.sampling().temperature(), 0.0f);
}

TEST_F(GrpcTargetTest, ErrorsCarryTheirGrpcCode) {
  absl::StatusOr<std::unique_ptr<GrpcTarget>> target =
      GrpcTarget::Connect(address(), std::chrono::seconds(5));
  ASSERT_TRUE(target.ok()) << target.status();
  BenchRequest request;
  request.prompt_ids = {4, 5};
  request.max_tokens = 3;
  const RequestResult result = (*target)->Run(request);
  EXPECT_EQ(result.code, absl::StatusCode::kUnavailable);
  EXPECT_EQ(result.error_message, "no replica");
  EXPECT_EQ(result.output_tokens, 0);
}

TEST_F(GrpcTargetTest, ASweepRunAgainstTheServerCountsEveryRequest) {
  absl::StatusOr<std::unique_ptr<GrpcTarget>> target =
      GrpcTarget::Connect(address(), std::chrono::seconds(5));
  ASSERT_TRUE(target.ok()) << target.status();
  absl::StatusOr<Workload> workload = Workload::Create({.prompt_tokens = 6, .max_tokens = 4}, 100);
  ASSERT_TRUE(workload.ok());
  RunSpec spec;
  spec.concurrency = 8;
  spec.max_requests = 50;
  spec.show_progress = false;
  const RunSummary summary = RunLoad(**target, *workload, spec);
  int64_t unavailable = summary.errors.count("UNAVAILABLE") ? summary.errors.at("UNAVAILABLE") : 0;
  EXPECT_EQ(summary.requests_ok + unavailable, 50);
  EXPECT_EQ(summary.output_tokens, summary.requests_ok * 4);
}

TEST(GrpcTargetConnectTest, AnAddressWithNoServerIsUnavailable) {
  absl::StatusOr<std::unique_ptr<GrpcTarget>> target =
      GrpcTarget::Connect("127.0.0.1:1", std::chrono::milliseconds(200));
  EXPECT_EQ(target.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(target.status().message()), ::testing::HasSubstr("127.0.0.1:1"));
}

}  // namespace
}  // namespace strata::bench
