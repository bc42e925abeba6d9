#include "router/inference_proxy.h"

#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics_catalogue.h"
#include "router/generate_relay.h"

namespace strata::router {
namespace {

// A unary call forwarded to the backend. The backend writes straight into the
// server's response message, which lives until the server call finishes.
// `start` issues the backend call on the given context and calls back once.
template <typename StartCall>
grpc::ServerUnaryReactor* ForwardUnary(grpc::CallbackServerContext* context, Backend& backend,
                                       StartCall start) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto backend_context = std::make_shared<grpc::ClientContext>();
  backend_context->set_deadline(context->deadline());
  start(backend_context.get(), [reactor, backend_context, &backend](grpc::Status status) {
    reactor->Finish(RelayedStatus(backend, status));
  });
  return reactor;
}

std::string RandomPrefix() {
  std::random_device device;
  return absl::StrFormat("%08x", device());
}

}  // namespace

grpc::Status RelayedStatus(const Backend& backend, const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return status;
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      absl::StrCat("backend ", backend.address(), ": ", status.error_message()));
}

InferenceProxy::InferenceProxy(Backend& backend, RouterMetrics* metrics)
    : backend_(backend), metrics_(metrics), request_id_prefix_(RandomPrefix()) {}

std::string InferenceProxy::RequestIdOf(const grpc::CallbackServerContext& context,
                                        const v1::GenerateRequest& request) {
  if (!request.request_id().empty()) return request.request_id();
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find(metrics::kRequestIdMetadataKey); it != metadata.end()) {
    if (!it->second.empty()) return std::string(it->second.data(), it->second.size());
  }
  return absl::StrCat("rtr-", request_id_prefix_, "-", next_request_number_.fetch_add(1));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceProxy::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new GenerateRelay(context, *request, RequestIdOf(*context, *request), backend_, metrics_,
                           generate_calls_in_flight_);
}

grpc::ServerUnaryReactor* InferenceProxy::Tokenize(grpc::CallbackServerContext* context,
                                                   const v1::TokenizeRequest* request,
                                                   v1::TokenizeResponse* response) {
  return ForwardUnary(context, backend_, [&](grpc::ClientContext* backend_context, auto done) {
    backend_.inference().async()->Tokenize(backend_context, request, response, std::move(done));
  });
}

grpc::ServerUnaryReactor* InferenceProxy::Detokenize(grpc::CallbackServerContext* context,
                                                     const v1::DetokenizeRequest* request,
                                                     v1::DetokenizeResponse* response) {
  return ForwardUnary(context, backend_, [&](grpc::ClientContext* backend_context, auto done) {
    backend_.inference().async()->Detokenize(backend_context, request, response, std::move(done));
  });
}

grpc::ServerUnaryReactor* InferenceProxy::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetModelInfoRequest* request,
                                                       v1::ModelInfo* response) {
  return ForwardUnary(context, backend_, [&](grpc::ClientContext* backend_context, auto done) {
    backend_.inference().async()->GetModelInfo(backend_context, request, response, std::move(done));
  });
}

}  // namespace strata::router
