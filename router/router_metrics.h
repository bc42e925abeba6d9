// The router's Prometheus metrics, registered from the catalogue
// (common/metrics_catalogue.h, which docs/metrics.md mirrors), and the calls
// the proxy makes as requests run.
//
// Stages: the router observes router_queue (arrival to the backend call being
// issued) and stream (whatever the backend's own time does not cover:
// network, relaying, the final flush) once per finished call, so that with
// the worker's stages the means add up to strata_router_request_duration_seconds.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/metrics_catalogue.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace strata::router {

// Durations of one finished Generate call at the router, in seconds.
struct RouterRequestTimes {
  double total = 0.0;         // arrival to end
  double router_queue = 0.0;  // arrival to the backend call being issued
  double backend = 0.0;       // the backend's own time, as it reported it (0 if not)
  // The rest: relaying and network. Never negative.
  double stream() const;
};

class RouterMetrics {
 public:
  RouterMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void RequestStarted() { in_flight_.Increment(); }
  void RecordFirstResponse(double seconds) { time_to_first_token_.Observe(seconds); }
  // `code_name` is the gRPC status code's name ("OK", "UNAVAILABLE", ...).
  void RequestFinished(std::string_view code_name, const RouterRequestTimes& times);
  void RecordRetry() { retries_.Increment(); }
  // `reason`: a short fixed word ("no_backend", "overloaded", ...), never request data.
  void RecordRejection(const std::string& reason);

  // Per-backend gauges; the returned references stay valid as long as `this`.
  prometheus::Gauge& BackendHealthy(const std::string& backend);
  prometheus::Gauge& BackendInFlight(const std::string& backend);
  // Drops the backend's series (it left the backend set).
  void RemoveBackend(const std::string& backend);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Histogram& time_to_first_token_;
  prometheus::Histogram& request_duration_;
  prometheus::Gauge& in_flight_;
  prometheus::Family<prometheus::Gauge>& backend_healthy_;
  prometheus::Family<prometheus::Gauge>& backend_in_flight_;
  prometheus::Counter& retries_;
  prometheus::Family<prometheus::Counter>& rejections_;
  prometheus::Histogram& stage_router_queue_;
  prometheus::Histogram& stage_stream_;
};

}  // namespace strata::router
