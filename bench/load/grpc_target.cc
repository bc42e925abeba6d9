#include "bench/load/grpc_target.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_stream_reader.h"

namespace strata::bench {

GrpcTarget::GrpcTarget(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)), stub_(v1::Inference::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<GrpcTarget>> GrpcTarget::Connect(
    const std::string& address, std::chrono::milliseconds connect_timeout) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + connect_timeout)) {
    return absl::UnavailableError(
        absl::StrCat("could not connect to ", address, " within ", connect_timeout.count(), " ms"));
  }
  std::unique_ptr<GrpcTarget> target(new GrpcTarget(std::move(channel)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + connect_timeout);
  const grpc::Status status =
      target->stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &target->model_info_);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("GetModelInfo on ", address, ": ", status.error_message()));
  }
  return target;
}

RequestResult GrpcTarget::Run(const BenchRequest& request) {
  v1::GenerateRequest proto;
  proto.mutable_token_ids()->mutable_ids()->Add(request.prompt_ids.begin(),
                                                request.prompt_ids.end());
  proto.mutable_sampling()->set_temperature(temperature_);
  proto.mutable_stopping()->set_max_tokens(request.max_tokens);
  proto.mutable_stopping()->set_ignore_eos(true);
  proto.mutable_options()->set_return_token_ids(true);

  RequestResult result;
  result.prompt_tokens = static_cast<int32_t>(request.prompt_ids.size());
  grpc::ClientContext context;
  if (request_timeout_.has_value()) {
    context.set_deadline(std::chrono::system_clock::now() + *request_timeout_);
  }
  RequestTimer timer;
  // Read with the callback API: this thread only waits, so the clients'
  // threads do not all compete to poll gRPC's connections.
  const grpc::Status status = ReadServerStream<v1::GenerateResponse>(
      [&](grpc::ClientReadReactor<v1::GenerateResponse>* reactor) {
        stub_->async()->Generate(&context, &proto, reactor);
      },
      [&](const v1::GenerateResponse& response) {
        timer.OnTokens(response.token_ids_size(), result);
        if (response.has_usage()) {
          result.cached_tokens = response.usage().cached_tokens();
          if (response.usage().prompt_tokens() > 0) {
            result.prompt_tokens = response.usage().prompt_tokens();
          }
        }
      });
  timer.OnEnd(result);
  if (!status.ok()) {
    result.code = static_cast<absl::StatusCode>(status.error_code());
    result.error_message = status.error_message();
  }
  return result;
}

}  // namespace strata::bench
