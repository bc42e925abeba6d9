#include "router/router_metrics.h"

#include <algorithm>
#include <cstdlib>

namespace strata::router {
namespace {

template <typename Builder>
auto& Register(Builder builder, const char* name, prometheus::Registry& registry) {
  const metrics::MetricSpec* spec = metrics::FindMetric(name);
  // Every name used here is a catalogue constant; a miss is a programming error.
  if (spec == nullptr) std::abort();
  return builder.Name(name).Help(std::string(spec->help)).Register(registry);
}

}  // namespace

double RouterRequestTimes::stream() const { return std::max(0.0, total - router_queue - backend); }

RouterMetrics::RouterMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_total_(
          Register(prometheus::BuildCounter(), metrics::kRouterRequestsTotal, *registry_)),
      time_to_first_token_(
          Register(prometheus::BuildHistogram(), metrics::kRouterTimeToFirstToken, *registry_)
              .Add({}, metrics::LatencyBuckets())),
      request_duration_(
          Register(prometheus::BuildHistogram(), metrics::kRouterRequestDuration, *registry_)
              .Add({}, metrics::LatencyBuckets())),
      in_flight_(
          Register(prometheus::BuildGauge(), metrics::kRouterRequestsInFlight, *registry_).Add({})),
      backend_healthy_(
          Register(prometheus::BuildGauge(), metrics::kRouterBackendHealthy, *registry_)),
      backend_in_flight_(
          Register(prometheus::BuildGauge(), metrics::kRouterBackendInFlight, *registry_)),
      retries_(
          Register(prometheus::BuildCounter(), metrics::kRouterRetriesTotal, *registry_).Add({})),
      rejections_(
          Register(prometheus::BuildCounter(), metrics::kRouterRejectionsTotal, *registry_)),
      stage_router_queue_(
          Register(prometheus::BuildHistogram(), metrics::kRequestStageDuration, *registry_)
              .Add({{"stage", metrics::kStageRouterQueue}}, metrics::LatencyBuckets())),
      stage_stream_(
          Register(prometheus::BuildHistogram(), metrics::kRequestStageDuration, *registry_)
              .Add({{"stage", metrics::kStageStream}}, metrics::LatencyBuckets())) {
  for (const char* code : {"OK", "CANCELLED", "INVALID_ARGUMENT", "UNAVAILABLE"}) {
    requests_total_.Add({{"code", code}});
  }
}

void RouterMetrics::RequestFinished(std::string_view code_name, const RouterRequestTimes& times) {
  in_flight_.Decrement();
  requests_total_.Add({{"code", std::string(code_name)}}).Increment();
  request_duration_.Observe(times.total);
  stage_router_queue_.Observe(times.router_queue);
  stage_stream_.Observe(times.stream());
}

void RouterMetrics::RecordRejection(const std::string& reason) {
  rejections_.Add({{"reason", reason}}).Increment();
}

prometheus::Gauge& RouterMetrics::BackendHealthy(const std::string& backend) {
  return backend_healthy_.Add({{"backend", backend}});
}

prometheus::Gauge& RouterMetrics::BackendInFlight(const std::string& backend) {
  return backend_in_flight_.Add({{"backend", backend}});
}

void RouterMetrics::RemoveBackend(const std::string& backend) {
  backend_healthy_.Remove(&backend_healthy_.Add({{"backend", backend}}));
  backend_in_flight_.Remove(&backend_in_flight_.Add({{"backend", backend}}));
}

}  // namespace strata::router
