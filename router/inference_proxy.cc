#include "router/inference_proxy.h"

#include <functional>
#include <limits>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics_catalogue.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/support/proto_buffer_reader.h"
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

// Sets request->request_id from the serialized GenerateRequest in `bytes` and
// skips every other field without decoding it (a 55k-id prompt is skipped in
// one step): all that routing needs when the policy ignores the prompt.
grpc::Status ReadRequestId(grpc::ByteBuffer* bytes, v1::GenerateRequest* request) {
  grpc::ProtoBufferReader reader(bytes);
  google::protobuf::io::CodedInputStream input(&reader);
  input.SetTotalBytesLimit(std::numeric_limits<int>::max());
  using google::protobuf::internal::WireFormatLite;
  constexpr uint32_t kRequestIdTag =
      (v1::GenerateRequest::kRequestIdFieldNumber << 3) | WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
  while (const uint32_t tag = input.ReadTag()) {
    const bool ok = tag == kRequestIdTag
                        ? WireFormatLite::ReadString(&input, request->mutable_request_id())
                        : WireFormatLite::SkipField(&input, tag);
    if (!ok) break;
  }
  if (!input.ConsumedEntireMessage() || !reader.status().ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "malformed message");
  }
  return grpc::Status::OK;
}

// A Generate call refused before routing: finishes at once.
class FailedGenerate final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit FailedGenerate(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
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

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceProxy::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes) {
  // Readers consume the buffer they read: they read a copy sharing the slices.
  grpc::ByteBuffer readable(*request_bytes);
  auto request = std::make_unique<v1::GenerateRequest>();
  const grpc::Status parsed =
      router_.balancer().reads_prompt()
          ? grpc::SerializationTraits<v1::GenerateRequest>::Deserialize(&readable, request.get())
          : ReadRequestId(&readable, request.get());
  if (!parsed.ok()) {
    return new FailedGenerate(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("the request is not a strata.v1.GenerateRequest: ", parsed.error_message())));
  }
  std::string session_key;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find(kSessionMetadataKey); it != metadata.end()) {
    session_key.assign(it->second.data(), it->second.size());
  }
  std::string request_id = RequestIdOf(*context, *request);
  return RoutedGenerateCall::Start(context, *request_bytes, std::move(*request),
                                   std::move(request_id), std::move(session_key), router_,
                                   &generate_calls_in_flight_);
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
