// The router's strata.v1.RouterAdmin: lets an operator (or rollout tooling)
// drain one backend and see every backend's state. It is served on its own
// address (--admin-listen), never on the public port: whoever reaches it can
// take replicas out of service.
//
// DrainBackend marks the backend draining in the pool (no new calls from this
// router at once, see Backend::StartDraining), then calls the backend
// leader's Replica/Drain without blocking a gRPC thread and answers with what
// the leader reports. The router keeps the backend out even when the leader
// cannot be reached, since the operator asked for it to stop getting calls.
//
// Thread-safety: gRPC calls the methods from its threads; the pool is
// thread-safe.
#pragma once

#include <chrono>
#include <string>

#include "grpcpp/grpcpp.h"
#include "router/backend_pool.h"
#include "strata/v1/router_admin.grpc.pb.h"

namespace strata::router {

class RouterAdminService final : public v1::RouterAdmin::CallbackService {
 public:
  struct Options {
    // Sent to leaders as DrainRequest.requested_by, e.g. "router HOST:PORT".
    std::string requested_by = "router";
    // Longest wait for a leader's answer to Replica/Drain (the admin
    // client's own deadline applies when it is sooner).
    std::chrono::milliseconds drain_call_timeout{10000};
  };

  // `pool` outlives the service.
  RouterAdminService(BackendPool& pool, Options options);

  grpc::ServerUnaryReactor* DrainBackend(grpc::CallbackServerContext* context,
                                         const v1::DrainBackendRequest* request,
                                         v1::DrainBackendResponse* response) override;
  grpc::ServerUnaryReactor* ListBackends(grpc::CallbackServerContext* context,
                                         const v1::ListBackendsRequest* request,
                                         v1::ListBackendsResponse* response) override;

 private:
  BackendPool& pool_;
  const Options options_;
};

}  // namespace strata::router
