// What every routed call shares: the backend set, the balancing policy,
// admission control, metrics, and the retry rules. RequestRouter::Pick
// chooses a backend for one attempt of a call.
//
// Retry rules (RoutingOptions): a Generate call whose backend fails with
// UNAVAILABLE before the first response (unreachable, shutting down,
// draining, still loading) is sent again to another available backend, up to
// max_attempts attempts in all, after a jittered backoff (retry_backoff,
// doubling, at most max_retry_backoff), always within the client's deadline.
// When no backend is available at all, a call waits (polling every 50 ms) up
// to no_backend_wait for one to become available before it fails UNAVAILABLE.
//
// Thread-safety: Pick may be called from any thread; the members are
// thread-safe themselves.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "router/admission_controller.h"
#include "router/backend_pool.h"
#include "router/balancer.h"
#include "router/client_rate_limiter.h"
#include "router/router_metrics.h"

namespace strata::router {

struct RoutingOptions {
  int32_t max_attempts = 3;
  std::chrono::milliseconds retry_backoff{10};
  std::chrono::milliseconds max_retry_backoff{200};
  std::chrono::milliseconds no_backend_wait{3000};
  // The hint RESOURCE_EXHAUSTED answers carry (message and the
  // grpc-retry-pushback-ms trailer).
  std::chrono::milliseconds overload_retry_hint{200};
  double affinity_margin = 8.0;  // session affinity (see balancer.h)
  // Per-client rate limit (client_rate > 0): calls carrying the metadata key
  // `client_key` may start client_rate calls/s per key value, bursts of
  // client_burst. Calls without the key are not limited.
  double client_rate = 0.0;
  double client_burst = 10.0;
  std::string client_key = "x-client-id";
};

// gRPC metadata key of the session-affinity key.
inline constexpr char kSessionMetadataKey[] = "x-session-id";

class RequestRouter {
 public:
  // Every reference (and `metrics`, which may be null) outlives the router.
  RequestRouter(BackendPool& pool, Balancer& balancer, AdmissionController& admission,
                RouterMetrics* metrics, RoutingOptions options);

  BackendPool& pool() { return pool_; }
  Balancer& balancer() { return balancer_; }
  AdmissionController& admission() { return admission_; }
  RouterMetrics* metrics() { return metrics_; }
  const RoutingOptions& options() const { return options_; }

  struct Choice {
    std::shared_ptr<Backend> backend;  // null: no backend is available
    PickReason reason = PickReason::kLeastLoad;
    size_t known_backends = 0;  // in the set, available or not
  };
  // An available backend for the next attempt, preferring ones not in
  // `tried` (addresses of earlier attempts of the same call).
  Choice Pick(const RouteRequest& request, const std::vector<std::string>& tried);

  // The backoff before retry number `retry` (1 for the first), jittered.
  std::chrono::milliseconds RetryBackoff(int32_t retry) const;

  // null when calls are not rate-limited per client.
  ClientRateLimiter* rate_limiter() { return rate_limiter_.get(); }

 private:
  BackendPool& pool_;
  Balancer& balancer_;
  AdmissionController& admission_;
  RouterMetrics* const metrics_;
  const RoutingOptions options_;
  const std::unique_ptr<ClientRateLimiter> rate_limiter_;
};

}  // namespace strata::router
