// The router's Prometheus metrics: the catalogue of names (docs/metrics.md
// lists the same ones; names are part of the API) and the object the proxy
// updates as calls run.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace strata::router {

// Counter, label "code" (gRPC status code name): Generate calls finished.
inline constexpr char kRouterRequestsTotal[] = "strata_router_requests_total";
// Histogram: seconds from the arrival of a Generate call to the first
// response relayed from the backend.
inline constexpr char kRouterTimeToFirstToken[] = "strata_router_time_to_first_token_seconds";
// Histogram: seconds from the arrival of a Generate call to its end.
inline constexpr char kRouterRequestDuration[] = "strata_router_request_duration_seconds";
// Gauge: Generate calls being relayed now.
inline constexpr char kRouterRequestsInFlight[] = "strata_router_requests_in_flight";
// Gauge, label "backend" (host:port): 1 while the backend's health is SERVING.
inline constexpr char kRouterBackendHealthy[] = "strata_router_backend_healthy";
// Gauge, label "backend": Generate calls relayed to the backend now.
inline constexpr char kRouterBackendInFlight[] = "strata_router_backend_requests_in_flight";

// Bucket bounds in seconds for LLM latencies: 1 ms to 10 minutes.
std::vector<double> RouterLatencyBuckets();

class RouterMetrics {
 public:
  RouterMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void RequestStarted() { in_flight_.Increment(); }
  void RecordFirstResponse(double seconds) { time_to_first_token_.Observe(seconds); }
  // `code_name` is the gRPC status code's name ("OK", "UNAVAILABLE", ...).
  void RequestFinished(std::string_view code_name, double seconds);

  // Per-backend gauges; the returned references stay valid as long as `this`.
  prometheus::Gauge& BackendHealthy(const std::string& backend);
  prometheus::Gauge& BackendInFlight(const std::string& backend);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Histogram& time_to_first_token_;
  prometheus::Histogram& request_duration_;
  prometheus::Gauge& in_flight_;
  prometheus::Family<prometheus::Gauge>& backend_healthy_;
  prometheus::Family<prometheus::Gauge>& backend_in_flight_;
};

}  // namespace strata::router
