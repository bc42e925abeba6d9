#include "cli/inference_client.h"

#include "absl/strings/str_cat.h"

namespace strata::cli {

InferenceClient::InferenceClient(const std::string& address,
                                 std::optional<std::chrono::milliseconds> timeout)
    : address_(address),
      timeout_(timeout),
      channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
      inference_(v1::Inference::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void InferenceClient::PrepareContext(grpc::ClientContext& context) const {
  if (timeout_) context.set_deadline(std::chrono::system_clock::now() + *timeout_);
}

absl::Status InferenceClient::ToStatus(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
      message.find(address_) == std::string::npos) {
    message = absl::StrCat("server ", address_, ": ", message);
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

absl::Status InferenceClient::Generate(
    const v1::GenerateRequest& request,
    const std::function<void(const v1::GenerateResponse&)>& on_response) {
  grpc::ClientContext context;
  PrepareContext(context);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      inference_->Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) on_response(response);
  return ToStatus(reader->Finish());
}

absl::StatusOr<v1::TokenizeResponse> InferenceClient::Tokenize(const v1::TokenizeRequest& request) {
  grpc::ClientContext context;
  PrepareContext(context);
  v1::TokenizeResponse response;
  if (grpc::Status status = inference_->Tokenize(&context, request, &response); !status.ok()) {
    return ToStatus(status);
  }
  return response;
}

absl::StatusOr<v1::DetokenizeResponse> InferenceClient::Detokenize(
    const v1::DetokenizeRequest& request) {
  grpc::ClientContext context;
  PrepareContext(context);
  v1::DetokenizeResponse response;
  if (grpc::Status status = inference_->Detokenize(&context, request, &response); !status.ok()) {
    return ToStatus(status);
  }
  return response;
}

absl::StatusOr<v1::ModelInfo> InferenceClient::GetModelInfo() {
  grpc::ClientContext context;
  PrepareContext(context);
  v1::ModelInfo response;
  if (grpc::Status status = inference_->GetModelInfo(&context, {}, &response); !status.ok()) {
    return ToStatus(status);
  }
  return response;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> InferenceClient::CheckHealth(
    const std::string& service) {
  grpc::ClientContext context;
  PrepareContext(context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  if (grpc::Status status = health_->Check(&context, request, &response); !status.ok()) {
    return ToStatus(status);
  }
  return response.status();
}

}  // namespace strata::cli
