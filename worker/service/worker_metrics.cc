#include "worker/service/worker_metrics.h"

#include "prometheus/metric_family.h"

namespace strata::service {
namespace {

prometheus::MetricFamily GaugeFamily(const char* name, const char* help, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = prometheus::MetricType::Gauge;
  prometheus::ClientMetric metric;
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,   0.25,  0.5,  1.0,
          2.5,   5.0,    10.0,  20.0, 30.0,  60.0, 120.0, 300.0, 600.0};
}

std::vector<prometheus::MetricFamily> EngineStatsCollector::Collect() const {
  const engine::Engine* engine = engine_.load();
  engine::EngineStats stats;
  if (engine != nullptr) stats = engine->Stats();
  const double usage = stats.kv_blocks_total > 0
                           ? 1.0 - static_cast<double>(stats.kv_blocks_free) / stats.kv_blocks_total
                           : 0.0;
  return {
      GaugeFamily(kRequestsRunning, "Requests in the engine's running batch.", stats.running),
      GaugeFamily(kRequestsWaiting, "Requests accepted by the engine, not yet scheduled.",
                  stats.waiting),
      GaugeFamily(kKvBlocksTotal, "KV cache blocks of the engine.", stats.kv_blocks_total),
      GaugeFamily(kKvBlocksFree, "KV cache blocks not held by any request.", stats.kv_blocks_free),
      GaugeFamily(kKvCacheUsage, "Fraction of KV cache blocks in use (0..1).", usage),
      GaugeFamily(kModelLoaded, "1 once the model is loaded and the worker serves.",
                  engine != nullptr ? 1.0 : 0.0),
  };
}

WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_total_(prometheus::BuildCounter()
                          .Name(kRequestsTotal)
                          .Help("Generate calls finished, by gRPC status code.")
                          .Register(*registry_)),
      time_to_first_token_(
          prometheus::BuildHistogram()
              .Name(kTimeToFirstToken)
              .Help("Seconds from the arrival of a Generate call to its first generated token.")
              .Register(*registry_)
              .Add({}, LatencyBuckets())),
      inter_token_latency_(prometheus::BuildHistogram()
                               .Name(kInterTokenLatency)
                               .Help("Seconds per generated token after the first one.")
                               .Register(*registry_)
                               .Add({}, LatencyBuckets())),
      request_duration_(prometheus::BuildHistogram()
                            .Name(kRequestDuration)
                            .Help("Seconds from the arrival of a Generate call to its end.")
                            .Register(*registry_)
                            .Add({}, LatencyBuckets())),
      generation_tokens_(prometheus::BuildCounter()
                             .Name(kGenerationTokens)
                             .Help("Tokens generated and streamed to clients.")
                             .Register(*registry_)
                             .Add({})),
      prompt_tokens_(prometheus::BuildCounter()
                         .Name(kPromptTokens)
                         .Help("Prompt tokens of finished Generate calls.")
                         .Register(*registry_)
                         .Add({})),
      engine_collector_(std::make_shared<EngineStatsCollector>()) {
  // Pre-create the common codes so dashboards see zeros before the first request.
  for (const char* code : {"OK", "CANCELLED", "INVALID_ARGUMENT", "OUT_OF_RANGE"}) {
    requests_total_.Add({{"code", code}});
  }
}

void WorkerMetrics::RecordRequestFinished(std::string_view code_name, double seconds) {
  requests_total_.Add({{"code", std::string(code_name)}}).Increment();
  request_duration_.Observe(seconds);
}

}  // namespace strata::service
