// The worker's Prometheus metrics: the catalogue of names (docs/metrics.md
// lists the same ones; names are part of the API) and the objects the gRPC
// service updates as requests run.
//
// Request metrics live in a prometheus::Registry. Engine gauges (running and
// waiting requests, KV blocks) are read from Engine::Stats() at scrape time by
// EngineStatsCollector, so they are never stale.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/engine/engine.h"

namespace strata::service {

// Counter, label "code" (gRPC status code name, e.g. OK, INVALID_ARGUMENT):
// Generate calls finished.
inline constexpr char kRequestsTotal[] = "strata_requests_total";
// Histogram: seconds from the arrival of a Generate call to its first token.
inline constexpr char kTimeToFirstToken[] = "strata_time_to_first_token_seconds";
// Histogram: seconds between consecutive streamed outputs of one request,
// divided by the tokens they carry.
inline constexpr char kInterTokenLatency[] = "strata_inter_token_latency_seconds";
// Histogram: seconds from the arrival of a Generate call to its end.
inline constexpr char kRequestDuration[] = "strata_request_duration_seconds";
// Counter: tokens generated (streamed to clients).
inline constexpr char kGenerationTokens[] = "strata_generation_tokens_total";
// Counter: prompt tokens of finished requests.
inline constexpr char kPromptTokens[] = "strata_prompt_tokens_total";
// Gauges read from Engine::Stats() at scrape time.
inline constexpr char kRequestsRunning[] = "strata_requests_running";
inline constexpr char kRequestsWaiting[] = "strata_requests_waiting";
inline constexpr char kKvBlocksTotal[] = "strata_kv_cache_blocks_total";
inline constexpr char kKvBlocksFree[] = "strata_kv_cache_blocks_free";
inline constexpr char kKvCacheUsage[] = "strata_kv_cache_usage_ratio";
// Gauge: 1 once the model is loaded and the worker serves, 0 before.
inline constexpr char kModelLoaded[] = "strata_model_loaded";

// Bucket bounds in seconds for LLM latencies: 1 ms to 10 minutes.
std::vector<double> LatencyBuckets();

// Reports the engine gauges from Engine::Stats() at each scrape; zeros (and
// strata_model_loaded 0) while no engine is set.
class EngineStatsCollector final : public prometheus::Collectable {
 public:
  // REQUIRES: `engine` outlives every later Collect(), or is nullptr.
  void SetEngine(const engine::Engine* engine) { engine_.store(engine); }
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::atomic<const engine::Engine*> engine_{nullptr};
};

class WorkerMetrics {
 public:
  WorkerMetrics();

  // What an Exposer registers: the request metrics and the engine gauges.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  std::shared_ptr<prometheus::Collectable> engine_collector() const { return engine_collector_; }

  // Makes the engine gauges report `engine`'s stats.
  // REQUIRES: `engine` outlives every scrape (unregister the exposer first), or nullptr.
  void SetEngine(const engine::Engine* engine) { engine_collector_->SetEngine(engine); }

  void RecordFirstToken(double seconds) { time_to_first_token_.Observe(seconds); }
  void RecordInterTokenLatency(double seconds_per_token) {
    inter_token_latency_.Observe(seconds_per_token);
  }
  void AddGeneratedTokens(size_t count) {
    generation_tokens_.Increment(static_cast<double>(count));
  }
  void AddPromptTokens(size_t count) { prompt_tokens_.Increment(static_cast<double>(count)); }
  // `code_name` is the gRPC status code's name ("OK", "CANCELLED", ...).
  void RecordRequestFinished(std::string_view code_name, double seconds);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Histogram& time_to_first_token_;
  prometheus::Histogram& inter_token_latency_;
  prometheus::Histogram& request_duration_;
  prometheus::Counter& generation_tokens_;
  prometheus::Counter& prompt_tokens_;
  std::shared_ptr<EngineStatsCollector> engine_collector_;
};

}  // namespace strata::service
