#include "router/admin_service.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace strata::router {
namespace {

// One Replica/Drain call to a leader, alive until its callback runs.
struct LeaderDrainCall {
  std::shared_ptr<Backend> backend;
  grpc::ClientContext context;
  v1::DrainRequest request;
  v1::DrainResponse response;
};

}  // namespace

RouterAdminService::RouterAdminService(BackendPool& pool, Options options)
    : pool_(pool), options_(std::move(options)) {}

grpc::ServerUnaryReactor* RouterAdminService::DrainBackend(grpc::CallbackServerContext* context,
                                                           const v1::DrainBackendRequest* request,
                                                           v1::DrainBackendResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::string& address = request->address();
  if (address.empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "address is required: the backend's HOST:PORT as ListBackends "
                                 "names it"));
    return reactor;
  }
  std::shared_ptr<Backend> backend = pool_.Find(address);
  if (backend == nullptr) {
    const std::vector<std::string> known = pool_.Addresses();
    reactor->Finish(grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("no backend ", address, " at this router (its backends: ",
                     known.empty() ? std::string("none") : absl::StrJoin(known, ", "), ")")));
    return reactor;
  }
  const bool was_draining = backend->StartDraining();
  const std::string reason = request->reason().empty() ? "no reason given" : request->reason();
  spdlog::warn(
      "backend {}: drain{} requested by admin client {} ({}); no new calls from this "
      "router, {} of its calls in flight",
      address, was_draining ? " again" : "", context->peer(), reason, backend->in_flight());

  auto* call = new LeaderDrainCall;
  call->backend = backend;
  call->context.set_deadline(std::min(
      context->deadline(), std::chrono::system_clock::now() + options_.drain_call_timeout));
  call->request.set_reason(request->reason());
  call->request.set_requested_by(
      absl::StrCat(options_.requested_by, " for admin client ", context->peer()));
  backend->replica().async()->Drain(
      &call->context, &call->request, &call->response,
      [call, reactor, response, was_draining](grpc::Status status) {
        const std::unique_ptr<LeaderDrainCall> done(call);
        const std::string& address = call->backend->address();
        if (!status.ok()) {
          const std::string why =
              status.error_message().empty()
                  ? absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()))
                  : status.error_message();
          spdlog::warn("backend {}: the leader did not confirm the drain: {}", address, why);
          reactor->Finish(grpc::Status(
              status.error_code(), absl::StrCat("backend ", address, " did not confirm the drain: ",
                                                why, "; this router sends it no new calls")));
          return;
        }
        response->set_generate_calls_in_flight(call->response.generate_calls_in_flight());
        response->set_router_calls_in_flight(call->backend->in_flight());
        response->set_already_draining(was_draining || call->response.already_draining());
        response->set_drain_timeout_seconds(call->response.drain_timeout_seconds());
        spdlog::info("backend {}: the leader drains {} calls in flight (up to {} s)", address,
                     call->response.generate_calls_in_flight(),
                     call->response.drain_timeout_seconds());
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerUnaryReactor* RouterAdminService::ListBackends(grpc::CallbackServerContext* context,
                                                           const v1::ListBackendsRequest* request,
                                                           v1::ListBackendsResponse* response) {
  (void)request;
  const Backend::Clock::time_point now = Backend::Clock::now();
  for (const std::shared_ptr<Backend>& backend : pool_.Backends()) {
    v1::BackendState& state = *response->add_backends();
    state.set_address(backend->address());
    state.set_serving(backend->healthy());
    state.set_draining(backend->draining());
    state.set_ejected(backend->ejected());
    state.set_available(backend->Available(now));
    state.set_in_flight(backend->in_flight());
    const BackendLoad load = backend->Load();
    state.set_load_reported(load.reported);
    state.set_waiting(load.waiting);
    state.set_running(load.running);
    state.set_kv_usage(static_cast<float>(load.kv_usage));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace strata::router
