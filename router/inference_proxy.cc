#include "router/inference_proxy.h"

#include <functional>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics_catalogue.h"
#include "router/routed_generate_call.h"

namespace strata::router {
namespace {

std::string RandomPrefix() {
  std::random_device device;
  return absl::StrFormat("%08x", device());
}

// A unary call forwarded to a backend, and to another one after an
// UNAVAILABLE answer while attempts are left. The backend writes straight
// into the server's response message, which lives until the server call
// finishes. `issue(stub, context, done)` starts the backend call.
class UnaryForward : public std::enable_shared_from_this<UnaryForward> {
 public:
  using Issue = std::function<void(v1::Inference::Stub&, grpc::ClientContext*,
                                   std::function<void(grpc::Status)>)>;

  UnaryForward(grpc::CallbackServerContext* context, RequestRouter& router, Issue issue)
      : server_context_(context),
        reactor_(context->DefaultReactor()),
        router_(router),
        issue_(std::move(issue)) {}

  grpc::ServerUnaryReactor* reactor() { return reactor_; }

  void Attempt() {
    const RequestRouter::Choice choice = router_.Pick(RouteRequest{}, tried_);
    if (choice.backend == nullptr) {
      reactor_->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    absl::StrCat("no backend available: ", choice.known_backends,
                                                 " known, none healthy and accepting calls")));
      return;
    }
    tried_.push_back(choice.backend->address());
    // Earlier contexts stay alive: this may run inside their completion callback.
    contexts_.push_back(std::make_unique<grpc::ClientContext>());
    grpc::ClientContext* context = contexts_.back().get();
    context->set_deadline(server_context_->deadline());
    std::shared_ptr<Backend> backend = choice.backend;
    const bool probe = backend->CallStarted();
    issue_(backend->inference(), context,
           [self = shared_from_this(), backend, probe](grpc::Status status) {
             const bool unavailable = status.error_code() == grpc::StatusCode::UNAVAILABLE;
             const bool cancelled = self->server_context_->IsCancelled();
             backend->CallFinished(unavailable && !cancelled, probe);
             if (unavailable && !cancelled &&
                 static_cast<int32_t>(self->tried_.size()) < self->router_.options().max_attempts) {
               self->Attempt();
               return;
             }
             self->reactor_->Finish(RelayedStatus(*backend, status));
           });
  }

 private:
  grpc::CallbackServerContext* const server_context_;
  grpc::ServerUnaryReactor* const reactor_;
  RequestRouter& router_;
  const Issue issue_;
  std::vector<std::string> tried_;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts_;
};

grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* context, RequestRouter& router,
                                  UnaryForward::Issue issue) {
  auto forward = std::make_shared<UnaryForward>(context, router, std::move(issue));
  forward->Attempt();
  return forward->reactor();
}

}  // namespace

grpc::Status RelayedStatus(const Backend& backend, const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return status;
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      absl::StrCat("backend ", backend.address(), ": ", status.error_message()));
}

InferenceProxy::InferenceProxy(RequestRouter& router)
    : router_(router), request_id_prefix_(RandomPrefix()) {}

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
  std::string session_key;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find(kSessionMetadataKey); it != metadata.end()) {
    session_key.assign(it->second.data(), it->second.size());
  }
  return RoutedGenerateCall::Start(context, *request, RequestIdOf(*context, *request),
                                   std::move(session_key), router_, &generate_calls_in_flight_);
}

grpc::ServerUnaryReactor* InferenceProxy::Tokenize(grpc::CallbackServerContext* context,
                                                   const v1::TokenizeRequest* request,
                                                   v1::TokenizeResponse* response) {
  return Forward(context, router_,
                 [request, response](auto& stub, auto* backend_context, auto done) {
                   response->Clear();
                   stub.async()->Tokenize(backend_context, request, response, std::move(done));
                 });
}

grpc::ServerUnaryReactor* InferenceProxy::Detokenize(grpc::CallbackServerContext* context,
                                                     const v1::DetokenizeRequest* request,
                                                     v1::DetokenizeResponse* response) {
  return Forward(context, router_,
                 [request, response](auto& stub, auto* backend_context, auto done) {
                   response->Clear();
                   stub.async()->Detokenize(backend_context, request, response, std::move(done));
                 });
}

grpc::ServerUnaryReactor* InferenceProxy::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetModelInfoRequest* request,
                                                       v1::ModelInfo* response) {
  return Forward(context, router_,
                 [request, response](auto& stub, auto* backend_context, auto done) {
                   response->Clear();
                   stub.async()->GetModelInfo(backend_context, request, response, std::move(done));
                 });
}

}  // namespace strata::router
