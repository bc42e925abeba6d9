#include "router/router_metrics.h"

namespace strata::router {

std::vector<double> RouterLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,   0.25,  0.5,  1.0,
          2.5,   5.0,    10.0,  20.0, 30.0,  60.0, 120.0, 300.0, 600.0};
}

RouterMetrics::RouterMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_total_(prometheus::BuildCounter()
                          .Name(kRouterRequestsTotal)
                          .Help("Generate calls finished by the router, by gRPC status code.")
                          .Register(*registry_)),
      time_to_first_token_(prometheus::BuildHistogram()
                               .Name(kRouterTimeToFirstToken)
                               .Help("Seconds from the arrival of a Generate call to the first "
                                     "response relayed from the backend.")
                               .Register(*registry_)
                               .Add({}, RouterLatencyBuckets())),
      request_duration_(prometheus::BuildHistogram()
                            .Name(kRouterRequestDuration)
                            .Help("Seconds from the arrival of a Generate call to its end.")
                            .Register(*registry_)
                            .Add({}, RouterLatencyBuckets())),
      in_flight_(prometheus::BuildGauge()
                     .Name(kRouterRequestsInFlight)
                     .Help("Generate calls being relayed now.")
                     .Register(*registry_)
                     .Add({})),
      backend_healthy_(prometheus::BuildGauge()
                           .Name(kRouterBackendHealthy)
                           .Help("1 while the backend's health check answers SERVING.")
                           .Register(*registry_)),
      backend_in_flight_(prometheus::BuildGauge()
                             .Name(kRouterBackendInFlight)
                             .Help("Generate calls relayed to the backend now.")
                             .Register(*registry_)) {
  for (const char* code : {"OK", "CANCELLED", "INVALID_ARGUMENT", "UNAVAILABLE"}) {
    requests_total_.Add({{"code", code}});
  }
}

void RouterMetrics::RequestFinished(std::string_view code_name, double seconds) {
  in_flight_.Decrement();
  requests_total_.Add({{"code", std::string(code_name)}}).Increment();
  request_duration_.Observe(seconds);
}

prometheus::Gauge& RouterMetrics::BackendHealthy(const std::string& backend) {
  return backend_healthy_.Add({{"backend", backend}});
}

prometheus::Gauge& RouterMetrics::BackendInFlight(const std::string& backend) {
  return backend_in_flight_.Add({{"backend", backend}});
}

}  // namespace strata::router
