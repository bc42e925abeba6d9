#include "worker/service/request_conversion.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/service/fake_engine.h"

namespace strata::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RequestConversionTest, UnsetFieldsKeepTheDocumentedDefaults) {
  v1::GenerateRequest request;
  request.set_text("hello");
  absl::StatusOr<engine::GenerationRequest> converted = ToEngineRequest(request);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->prompt_text, "hello");
  EXPECT_TRUE(converted->prompt_ids.empty());
  EXPECT_TRUE(converted->add_special_tokens);
  EXPECT_FLOAT_EQ(converted->sampling.temperature, 1.0f);
  EXPECT_EQ(converted->sampling.top_k, 0);
  EXPECT_FLOAT_EQ(converted->sampling.top_p, 1.0f);
  EXPECT_FLOAT_EQ(converted->sampling.min_p, 0.0f);
  EXPECT_FLOAT_EQ(converted->sampling.repetition_penalty, 1.0f);
  EXPECT_FALSE(converted->sampling.seed.has_value());
  EXPECT_FALSE(converted->stopping.max_tokens.has_value());
  EXPECT_FALSE(converted->stopping.ignore_eos);
  EXPECT_EQ(converted->top_logprobs, 0);
}

TEST(RequestConversionTest, SetFieldsOverrideDefaultsEvenWhenZero) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(1);
  request.mutable_token_ids()->add_ids(42);
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(0.0f);
  sampling->set_top_k(1);
  sampling->set_top_p(0.5f);
  sampling->set_min_p(0.1f);
  sampling->set_repetition_penalty(1.3f);
  sampling->set_presence_penalty(0.2f);
  sampling->set_frequency_penalty(0.3f);
  sampling->set_seed(0);
  v1::StoppingCriteria* stopping = request.mutable_stopping();
  stopping->set_max_tokens(0);
  stopping->add_stop("\n\n");
  stopping->add_stop_token_ids(7);
  stopping->set_ignore_eos(true);
  request.mutable_options()->set_top_logprobs(3);
  request.mutable_options()->set_add_special_tokens(false);

  absl::StatusOr<engine::GenerationRequest> converted = ToEngineRequest(request);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_THAT(converted->prompt_ids, ElementsAre(1, 42));
  EXPECT_FLOAT_EQ(converted->sampling.temperature, 0.0f);
  EXPECT_EQ(converted->sampling.top_k, 1);
  EXPECT_FLOAT_EQ(converted->sampling.top_p, 0.5f);
  EXPECT_FLOAT_EQ(converted->sampling.min_p, 0.1f);
  EXPECT_FLOAT_EQ(converted->sampling.repetition_penalty, 1.3f);
  EXPECT_FLOAT_EQ(converted->sampling.presence_penalty, 0.2f);
  EXPECT_FLOAT_EQ(converted->sampling.frequency_penalty, 0.3f);
  EXPECT_EQ(converted->sampling.seed, std::optional<uint64_t>(0));
  // Zero is passed on, for the engine to refuse: "unset" and "0" differ.
  EXPECT_EQ(converted->stopping.max_tokens, std::optional<int32_t>(0));
  EXPECT_THAT(converted->stopping.stop, ElementsAre("\n\n"));
  EXPECT_THAT(converted->stopping.stop_token_ids, ElementsAre(7));
  EXPECT_TRUE(converted->stopping.ignore_eos);
  EXPECT_EQ(converted->top_logprobs, 3);
  EXPECT_FALSE(converted->add_special_tokens);
}

TEST(RequestConversionTest, RefusesAMissingOrEmptyPromptNamingTheField) {
  v1::GenerateRequest request;
  EXPECT_THAT(ToEngineRequest(request).status().message(), HasSubstr("prompt"));
  request.set_text("");
  EXPECT_EQ(ToEngineRequest(request).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ToEngineRequest(request).status().message(), HasSubstr("text"));
  request.mutable_token_ids();
  EXPECT_EQ(ToEngineRequest(request).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ToEngineRequest(request).status().message(), HasSubstr("token_ids"));
}

TEST(RequestConversionTest, FinishReasonsMapOneToOne) {
  EXPECT_EQ(ToProto(engine::FinishReason::kNone), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_EQ(ToProto(engine::FinishReason::kLength), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ToProto(engine::FinishReason::kStop), v1::FINISH_REASON_STOP);
  EXPECT_EQ(ToProto(engine::FinishReason::kEos), v1::FINISH_REASON_EOS);
  EXPECT_EQ(ToProto(engine::FinishReason::kCancelled), v1::FINISH_REASON_CANCELLED);
}

TEST(RequestConversionTest, AppendOutputAccumulatesAndMarksTheLastResponse) {
  testing::ByteTokenizer tokenizer;
  v1::GenerateResponse response;
  engine::GenerationOutput first;
  first.text = "a";
  first.token_ids = {'a'};
  AppendOutput(first, /*return_token_ids=*/true, tokenizer, response);
  engine::GenerationOutput last;
  last.text = "b";
  last.token_ids = {'b'};
  last.finished = true;
  last.finish_reason = engine::FinishReason::kEos;
  last.usage = {4, 2, 1};
  AppendOutput(last, /*return_token_ids=*/true, tokenizer, response);
  EXPECT_EQ(response.text(), "ab");
  EXPECT_THAT(response.token_ids(), ElementsAre('a', 'b'));
  EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_EQ(response.usage().prompt_tokens(), 4);
  EXPECT_EQ(response.usage().completion_tokens(), 2);
  EXPECT_EQ(response.usage().cached_tokens(), 1);
}

TEST(RequestConversionTest, StatusKeepsCodeAndMessage) {
  grpc::Status status = ToGrpcStatus(absl::OutOfRangeError("prompt: 600 tokens, context 512"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(status.error_message(), "prompt: 600 tokens, context 512");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace strata::service
